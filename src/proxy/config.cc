#include "proxy/config.h"

#include <set>

#include "common/os.h"

namespace pgshift::proxy {
namespace {

Status CheckKeys(const nlohmann::json& j, const std::string& where,
                 const std::set<std::string>& allowed) {
  if (!j.is_object()) return InvalidArgument(where + " must be a JSON object");
  for (const auto& [k, v] : j.items())
    if (!allowed.count(k))
      return InvalidArgument("unknown key \"" + k + "\" in " + where + " of the proxy config");
  return Status::OK();
}

template <typename T>
Status Get(const nlohmann::json& j, const std::string& key, const std::string& where, T* out,
           bool required) {
  if (!j.contains(key)) {
    if (required) return InvalidArgument(where + " needs \"" + key + "\"");
    return Status::OK();
  }
  try {
    *out = j.at(key).get<T>();
  } catch (const std::exception& e) {
    return InvalidArgument(where + "." + key + " has the wrong type: " + e.what());
  }
  return Status::OK();
}

std::string Resolve(const std::string& base, const std::string& p) {
  if (p.empty() || p[0] == '/' || base.empty()) return p;
  return base + "/" + p;
}

}  // namespace

Status ParseHostPort(const std::string& s, const std::string& what, std::string* host, int* port) {
  size_t colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0)
    return InvalidArgument(what + " must be host:port, got \"" + s + "\"");
  *host = s.substr(0, colon);
  try {
    *port = std::stoi(s.substr(colon + 1));
  } catch (...) {
    return InvalidArgument(what + " has a port that is not a number: \"" + s + "\"");
  }
  if (*port < 0 || *port > 65535) return InvalidArgument(what + " has a port out of range");
  return Status::OK();
}

const Credential* ProxyConfig::FindCredential(const std::string& role) const {
  for (const auto& c : credentials)
    if (c.role == role) return &c;
  return nullptr;
}

// An optional top-level integer from 0 to `max`; `unit` words the error.
Status GetBounded(const nlohmann::json& j, const char* key, int max, const std::string& unit,
                  int* out) {
  if (!j.contains(key)) return Status::OK();
  const auto& v = j[key];
  if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > max)
    return InvalidArgument(std::string(key) + " must be an integer number of " + unit + " to " +
                           std::to_string(max) + ", got " + v.dump());
  *out = v.get<int>();
  return Status::OK();
}

Result<UpstreamConfig> ParseUpstream(const nlohmann::json& j, const std::string& where) {
  PGSHIFT_RETURN_IF_ERROR(CheckKeys(j, where, {"host", "port", "tls", "ca"}));
  UpstreamConfig u;
  PGSHIFT_RETURN_IF_ERROR(Get(j, "host", where, &u.host, true));
  PGSHIFT_RETURN_IF_ERROR(Get(j, "port", where, &u.port, true));
  PGSHIFT_RETURN_IF_ERROR(Get(j, "tls", where, &u.tls, false));
  PGSHIFT_RETURN_IF_ERROR(Get(j, "ca", where, &u.ca, false));
  if (u.host.empty()) return InvalidArgument(where + ".host is empty");
  if (u.port <= 0 || u.port > 65535) return InvalidArgument(where + ".port is out of range");
  return u;
}

Result<ProxyConfig> ParseProxyConfig(const nlohmann::json& j, const std::string& base_dir) {
  PGSHIFT_RETURN_IF_ERROR(CheckKeys(
      j, "the top level",
      {"listen", "admin_listen", "threads", "busy_poll_us", "kernel_splice", "retire_delay_ms",
       "retire_interval_ms", "ktls", "upstream_pool", "tls", "routes", "policy", "credentials"}));
  ProxyConfig c;
  std::string listen = "127.0.0.1:6432", admin = "127.0.0.1:6433";
  PGSHIFT_RETURN_IF_ERROR(Get(j, "listen", "config", &listen, false));
  PGSHIFT_RETURN_IF_ERROR(Get(j, "admin_listen", "config", &admin, false));
  PGSHIFT_RETURN_IF_ERROR(ParseHostPort(listen, "listen", &c.listen_host, &c.listen_port));
  PGSHIFT_RETURN_IF_ERROR(ParseHostPort(admin, "admin_listen", &c.admin_host, &c.admin_port));
  PGSHIFT_RETURN_IF_ERROR(Get(j, "threads", "config", &c.threads, false));
  if (c.threads < 1 || c.threads > 64) return InvalidArgument("threads must be between 1 and 64");
  PGSHIFT_RETURN_IF_ERROR(
      GetBounded(j, "busy_poll_us", kMaxBusyPollUs, "microseconds from 0 (off)", &c.busy_poll_us));
  PGSHIFT_RETURN_IF_ERROR(Get(j, "kernel_splice", "config", &c.kernel_splice, false));
  PGSHIFT_RETURN_IF_ERROR(GetBounded(j, "retire_delay_ms", kMaxRetireDelayMs,
                                     "milliseconds from 0 (close at once)", &c.retire_delay_ms));
  PGSHIFT_RETURN_IF_ERROR(GetBounded(j, "retire_interval_ms", kMaxRetireIntervalMs,
                                     "milliseconds from 0 (no spacing)", &c.retire_interval_ms));
  std::string ktls = "auto";
  PGSHIFT_RETURN_IF_ERROR(Get(j, "ktls", "config", &ktls, false));
  if (ktls != "auto" && ktls != "off")
    return InvalidArgument("ktls must be \"auto\" or \"off\", got \"" + ktls + "\"");
  c.ktls = ktls == "auto" ? KtlsMode::kAuto : KtlsMode::kOff;
  if (j.contains("upstream_pool")) {
    const auto& u = j["upstream_pool"];
    PGSHIFT_RETURN_IF_ERROR(
        CheckKeys(u, "upstream_pool", {"max_idle", "max_idle_per_key", "idle_timeout_ms"}));
    PGSHIFT_RETURN_IF_ERROR(GetBounded(u, "max_idle", kMaxPoolIdle, "backends from 0 (off)",
                                       &c.upstream_pool.max_idle));
    PGSHIFT_RETURN_IF_ERROR(GetBounded(u, "max_idle_per_key", kMaxPoolIdle, "backends from 0 (off)",
                                       &c.upstream_pool.max_idle_per_key));
    PGSHIFT_RETURN_IF_ERROR(GetBounded(u, "idle_timeout_ms", kMaxPoolIdleTimeoutMs,
                                       "milliseconds from 0 (no timeout)",
                                       &c.upstream_pool.idle_timeout_ms));
  }
  if (j.contains("tls")) {
    const auto& t = j["tls"];
    PGSHIFT_RETURN_IF_ERROR(CheckKeys(t, "tls", {"cert", "key", "client_ca"}));
    PGSHIFT_RETURN_IF_ERROR(Get(t, "cert", "tls", &c.tls.cert, true));
    PGSHIFT_RETURN_IF_ERROR(Get(t, "key", "tls", &c.tls.key, true));
    PGSHIFT_RETURN_IF_ERROR(Get(t, "client_ca", "tls", &c.tls.client_ca, true));
    c.tls.cert_path = Resolve(base_dir, c.tls.cert);
    c.tls.key_path = Resolve(base_dir, c.tls.key);
    c.tls.client_ca_path = Resolve(base_dir, c.tls.client_ca);
    c.has_tls = true;
  }
  std::set<std::string> names, databases;
  if (j.contains("routes")) {
    if (!j["routes"].is_array()) return InvalidArgument("routes must be an array");
    for (size_t i = 0; i < j["routes"].size(); i++) {
      const auto& r = j["routes"][i];
      std::string where = "routes[" + std::to_string(i) + "]";
      PGSHIFT_RETURN_IF_ERROR(CheckKeys(
          r, where,
          {"name", "database", "upstream", "allow_plaintext", "hold_timeout_ms", "uncarriable"}));
      RouteConfig rc;
      PGSHIFT_RETURN_IF_ERROR(Get(r, "name", where, &rc.name, true));
      PGSHIFT_RETURN_IF_ERROR(Get(r, "database", where, &rc.database, true));
      PGSHIFT_RETURN_IF_ERROR(Get(r, "allow_plaintext", where, &rc.allow_plaintext, false));
      PGSHIFT_RETURN_IF_ERROR(Get(r, "hold_timeout_ms", where, &rc.hold_timeout_ms, false));
      if (r.contains("uncarriable")) {
        PGSHIFT_ASSIGN_OR_RETURN(rc.uncarriable,
                                 ParseUncarriableMode(r["uncarriable"], where + ".uncarriable"));
      }
      if (!r.contains("upstream")) return InvalidArgument(where + " needs \"upstream\"");
      PGSHIFT_ASSIGN_OR_RETURN(rc.upstream, ParseUpstream(r["upstream"], where + ".upstream"));
      if (rc.name.empty() || rc.database.empty())
        return InvalidArgument(where + " needs a non-empty name and database");
      if (!names.insert(rc.name).second)
        return InvalidArgument("route name \"" + rc.name + "\" appears twice");
      if (!databases.insert(rc.database).second)
        return InvalidArgument("database \"" + rc.database + "\" is served by two routes");
      if (rc.hold_timeout_ms <= 0) return InvalidArgument(where + ".hold_timeout_ms must be > 0");
      c.routes.push_back(std::move(rc));
    }
  }
  if (j.contains("policy")) {
    if (!j["policy"].is_array()) return InvalidArgument("policy must be an array");
    for (size_t i = 0; i < j["policy"].size(); i++) {
      const auto& p = j["policy"][i];
      std::string where = "policy[" + std::to_string(i) + "]";
      PGSHIFT_RETURN_IF_ERROR(CheckKeys(p, where, {"identity", "databases", "roles"}));
      PolicyRule rule;
      PGSHIFT_RETURN_IF_ERROR(Get(p, "identity", where, &rule.identity, true));
      PGSHIFT_RETURN_IF_ERROR(Get(p, "databases", where, &rule.databases, true));
      PGSHIFT_RETURN_IF_ERROR(Get(p, "roles", where, &rule.roles, true));
      c.policy.push_back(std::move(rule));
    }
  }
  if (j.contains("credentials")) {
    if (!j["credentials"].is_array()) return InvalidArgument("credentials must be an array");
    for (size_t i = 0; i < j["credentials"].size(); i++) {
      const auto& cr = j["credentials"][i];
      std::string where = "credentials[" + std::to_string(i) + "]";
      PGSHIFT_RETURN_IF_ERROR(CheckKeys(cr, where, {"role", "password"}));
      Credential cred;
      PGSHIFT_RETURN_IF_ERROR(Get(cr, "role", where, &cred.role, true));
      PGSHIFT_RETURN_IF_ERROR(Get(cr, "password", where, &cred.password, false));
      c.credentials.push_back(std::move(cred));
    }
  }
  return c;
}

Result<ProxyConfig> LoadProxyConfig(const std::string& path) {
  PGSHIFT_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    return InvalidArgument("proxy config " + path + " is not valid JSON: " + e.what());
  }
  std::string dir = ".";
  size_t slash = path.rfind('/');
  if (slash != std::string::npos) dir = path.substr(0, slash == 0 ? 1 : slash);
  auto c = ParseProxyConfig(j, dir);
  if (!c.ok()) return c.status().Wrap("proxy config " + path);
  c->path = path;
  return c;
}

nlohmann::json ToJson(const UpstreamConfig& u) {
  nlohmann::json j = {{"host", u.host}, {"port", u.port}, {"tls", u.tls}};
  if (!u.ca.empty()) j["ca"] = u.ca;
  return j;
}

nlohmann::json ToJson(const ProxyConfig& c) {
  nlohmann::json j;
  j["listen"] = c.listen_host + ":" + std::to_string(c.listen_port);
  j["admin_listen"] = c.admin_host + ":" + std::to_string(c.admin_port);
  j["threads"] = c.threads;
  j["busy_poll_us"] = c.busy_poll_us;
  j["kernel_splice"] = c.kernel_splice;
  j["retire_delay_ms"] = c.retire_delay_ms;
  j["retire_interval_ms"] = c.retire_interval_ms;
  j["ktls"] = c.ktls == KtlsMode::kAuto ? "auto" : "off";
  j["upstream_pool"] = {{"max_idle", c.upstream_pool.max_idle},
                        {"max_idle_per_key", c.upstream_pool.max_idle_per_key},
                        {"idle_timeout_ms", c.upstream_pool.idle_timeout_ms}};
  if (c.has_tls)
    j["tls"] = {{"cert", c.tls.cert}, {"key", c.tls.key}, {"client_ca", c.tls.client_ca}};
  j["routes"] = nlohmann::json::array();
  for (const auto& r : c.routes)
    j["routes"].push_back({{"name", r.name},
                           {"database", r.database},
                           {"upstream", ToJson(r.upstream)},
                           {"allow_plaintext", r.allow_plaintext},
                           {"hold_timeout_ms", r.hold_timeout_ms},
                           {"uncarriable", UncarriableModeName(r.uncarriable)}});
  j["policy"] = nlohmann::json::array();
  for (const auto& p : c.policy)
    j["policy"].push_back(
        {{"identity", p.identity}, {"databases", p.databases}, {"roles", p.roles}});
  j["credentials"] = nlohmann::json::array();
  for (const auto& cr : c.credentials)
    j["credentials"].push_back({{"role", cr.role}, {"password", cr.password}});
  return j;
}

const char* UncarriableModeName(UncarriableMode m) {
  return m == UncarriableMode::kWait ? "wait" : "end";
}

Result<UncarriableMode> ParseUncarriableMode(const nlohmann::json& v, const std::string& where) {
  if (v == "end") return UncarriableMode::kEnd;
  if (v == "wait") return UncarriableMode::kWait;
  return InvalidArgument(where + " must be \"end\" or \"wait\", got " + v.dump());
}

Status SaveProxyConfig(const ProxyConfig& c) {
  if (c.path.empty()) return Status::OK();
  return WriteFileAtomic(c.path, ToJson(c).dump(2) + "\n");
}

}  // namespace pgshift::proxy
