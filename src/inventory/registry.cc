#include "inventory/registry.h"

#include <filesystem>
#include <regex>
#include <set>

#include "auth/config_doc.h"
#include "common/os.h"
#include "router/proxy_router.h"

namespace pgshift::inventory {
namespace {

using auth::ConfigDoc;
using auth::PointerToken;
using nlohmann::json;

// Typed field access on one object of a ConfigDoc; errors name file:line:field.
class Fields {
 public:
  Fields(const ConfigDoc& doc, std::string pointer, const json& obj)
      : doc_(doc), ptr_(std::move(pointer)), obj_(obj) {}

  Status IsObject(const std::string& what) const {
    if (obj_.is_object()) return Status::OK();
    return doc_.Error(ptr_, "must be a mapping (" + what + ")");
  }
  Status OnlyKnown(const std::set<std::string>& allowed) const {
    for (const auto& [k, v] : obj_.items()) {
      if (allowed.count(k)) continue;
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      return doc_.Error(At(k), "unknown field (allowed: " + list + ")");
    }
    return Status::OK();
  }
  Status Str(const std::string& key, std::string* out, bool required) const {
    if (!obj_.contains(key)) {
      return required ? doc_.Error(At(key), "is required") : Status::OK();
    }
    const json& v = obj_.at(key);
    if (!v.is_string() || v.get<std::string>().empty()) {
      return doc_.Error(At(key), "must be a non-empty string");
    }
    *out = v.get<std::string>();
    return Status::OK();
  }
  Status Port(const std::string& key, int* out) const {
    if (!obj_.contains(key)) return Status::OK();
    const json& v = obj_.at(key);
    if (!v.is_number_integer() || v.get<int64_t>() < 1 || v.get<int64_t>() > 65535) {
      return doc_.Error(At(key), "must be a TCP port (1-65535)");
    }
    *out = v.get<int>();
    return Status::OK();
  }
  Status StrList(const std::string& key, std::vector<std::string>* out) const {
    if (!obj_.contains(key)) return Status::OK();
    const json& v = obj_.at(key);
    if (!v.is_array()) return doc_.Error(At(key), "must be a list of strings");
    for (size_t i = 0; i < v.size(); ++i) {
      if (!v[i].is_string()) {
        return doc_.Error(At(key) + "/" + std::to_string(i), "must be a string");
      }
      out->push_back(v[i].get<std::string>());
    }
    return Status::OK();
  }
  Fields Child(const std::string& key) const { return Fields(doc_, At(key), obj_.at(key)); }
  Fields Item(size_t i) const { return Fields(doc_, ptr_ + "/" + std::to_string(i), obj_.at(i)); }
  bool Has(const std::string& key) const { return obj_.contains(key); }
  const json& Get(const std::string& key) const { return obj_.at(key); }
  std::string At(const std::string& key) const { return ptr_ + "/" + PointerToken(key); }
  Status Error(const std::string& key, const std::string& message) const {
    return doc_.Error(At(key), message);
  }

 private:
  const ConfigDoc& doc_;
  std::string ptr_;
  const json& obj_;
};

Status ParsePorts(const Fields& f, Placement* p) {
  if (!f.Has("ports")) return f.Error("ports", "is required: a range like 5500-5599");
  const json& v = f.Get("ports");
  static const std::regex kRange(R"(\s*([0-9]{1,5})\s*-\s*([0-9]{1,5})\s*)");
  std::smatch m;
  std::string text = v.is_string() ? v.get<std::string>() : "";
  if (v.is_number_integer())
    text = std::to_string(v.get<int>()) + "-" + std::to_string(v.get<int>());
  if (!std::regex_match(text, m, kRange)) return f.Error("ports", "must be a range like 5500-5599");
  p->port_min = std::stoi(m[1]);
  p->port_max = std::stoi(m[2]);
  if (p->port_min < 1 || p->port_max > 65535 || p->port_min > p->port_max) {
    return f.Error("ports", "must be a range of TCP ports, low-high, within 1-65535");
  }
  return Status::OK();
}

Status ParsePlacement(const Fields& f, Placement* p) {
  PGSHIFT_RETURN_IF_ERROR(f.IsObject("data_root, ports, os_user, bin_dir, settings"));
  PGSHIFT_RETURN_IF_ERROR(f.OnlyKnown({"data_root", "ports", "os_user", "bin_dir", "settings"}));
  PGSHIFT_RETURN_IF_ERROR(f.Str("data_root", &p->data_root, true));
  if (p->data_root[0] != '/') return f.Error("data_root", "must be an absolute path");
  PGSHIFT_RETURN_IF_ERROR(ParsePorts(f, p));
  PGSHIFT_RETURN_IF_ERROR(f.Str("os_user", &p->os_user, false));
  PGSHIFT_RETURN_IF_ERROR(f.Str("bin_dir", &p->bin_dir, false));
  if (f.Has("settings")) {
    const json& s = f.Get("settings");
    if (!s.is_object()) return f.Error("settings", "must map setting names to values");
    for (const auto& [k, v] : s.items()) {
      if (v.is_string()) {
        p->settings[k] = v.get<std::string>();
      } else if (v.is_number() || v.is_boolean()) {
        p->settings[k] = v.dump();
      } else {
        return f.Child("settings").Error(k, "must be a string or a number");
      }
    }
  }
  return Status::OK();
}

Status ParseWindow(const Fields& f, Window* w) {
  static const std::set<std::string> kDays = {"mon", "tue", "wed", "thu", "fri", "sat", "sun"};
  static const std::regex kTime(R"(([01][0-9]|2[0-3]):[0-5][0-9])");
  PGSHIFT_RETURN_IF_ERROR(f.IsObject("days, start, end, timezone"));
  PGSHIFT_RETURN_IF_ERROR(f.OnlyKnown({"days", "start", "end", "timezone"}));
  PGSHIFT_RETURN_IF_ERROR(f.StrList("days", &w->days));
  for (size_t i = 0; i < w->days.size(); ++i) {
    if (!kDays.count(w->days[i])) {
      return f.Error("days", "'" + w->days[i] + "' is not a day (mon, tue, ... sun)");
    }
  }
  PGSHIFT_RETURN_IF_ERROR(f.Str("start", &w->start, true));
  PGSHIFT_RETURN_IF_ERROR(f.Str("end", &w->end, true));
  if (!std::regex_match(w->start, kTime)) return f.Error("start", "must be HH:MM (24 h)");
  if (!std::regex_match(w->end, kTime)) return f.Error("end", "must be HH:MM (24 h)");
  return f.Str("timezone", &w->timezone, false);
}

Status ParseSource(const Fields& f, const std::string& db, SourceEndpoint* s) {
  PGSHIFT_RETURN_IF_ERROR(f.IsObject("host, port, dbname, user, admin_dbname, credential"));
  PGSHIFT_RETURN_IF_ERROR(
      f.OnlyKnown({"host", "port", "dbname", "user", "admin_dbname", "credential"}));
  PGSHIFT_RETURN_IF_ERROR(f.Str("host", &s->host, true));
  PGSHIFT_RETURN_IF_ERROR(f.Port("port", &s->port));
  s->dbname = db;
  PGSHIFT_RETURN_IF_ERROR(f.Str("dbname", &s->dbname, false));
  PGSHIFT_RETURN_IF_ERROR(f.Str("user", &s->user, false));
  PGSHIFT_RETURN_IF_ERROR(f.Str("admin_dbname", &s->admin_dbname, false));
  return f.Str("credential", &s->credential, false);
}

Status CheckCredential(const Fields& f, const std::string& name, const Secrets* secrets) {
  if (name.empty() || !secrets || secrets->Has(name)) return Status::OK();
  if (secrets->path().empty()) {
    return f.Error("credential", "names '" + name +
                                     "', but no secrets file is configured (the registry's "
                                     "'secrets' field or pgshiftd --secrets)");
  }
  return f.Error("credential",
                 "names '" + name + "', which is not in the secrets file " + secrets->path());
}

// instances: [{admin_url: ...}, ...], each URL once.
Status ParseInstances(const Fields& f, std::vector<std::string>* urls) {
  const json& list = f.Get("instances");
  if (!list.is_array() || list.empty()) {
    return f.Error("instances", "must be a non-empty list of {admin_url: http://...}");
  }
  std::set<std::string> seen;
  for (size_t i = 0; i < list.size(); ++i) {
    Fields inst = f.Child("instances").Item(i);
    PGSHIFT_RETURN_IF_ERROR(inst.IsObject("admin_url"));
    PGSHIFT_RETURN_IF_ERROR(inst.OnlyKnown({"admin_url"}));
    std::string url;
    PGSHIFT_RETURN_IF_ERROR(inst.Str("admin_url", &url, true));
    if (!IsProxyAdminUrl(url))
      return inst.Error("admin_url", "must start with http:// or https://");
    if (!seen.insert(url).second) {
      return inst.Error("admin_url", "lists " + url + " again (each instance once)");
    }
    urls->push_back(std::move(url));
  }
  return Status::OK();
}

Result<RouterDef> ParseRouter(const Fields& f, const Secrets* secrets) {
  RouterDef r;
  PGSHIFT_RETURN_IF_ERROR(
      f.IsObject("name, type, admin_url | instances | admin_conninfo, config_file"));
  PGSHIFT_RETURN_IF_ERROR(f.OnlyKnown(
      {"name", "type", "admin_url", "instances", "admin_conninfo", "config_file", "credential"}));
  PGSHIFT_RETURN_IF_ERROR(f.Str("name", &r.name, true));
  PGSHIFT_RETURN_IF_ERROR(f.Str("type", &r.type, true));
  if (r.type == "proxy") {
    if (f.Has("admin_conninfo") || f.Has("config_file") || f.Has("credential")) {
      return f.Error("type", "a proxy router takes admin_url or instances only");
    }
    if (f.Has("instances")) {
      if (f.Has("admin_url")) {
        return f.Error("instances", "and admin_url both given: list every instance in instances");
      }
      PGSHIFT_RETURN_IF_ERROR(ParseInstances(f, &r.admin_urls));
    } else {
      if (!f.Has("admin_url")) {
        return f.Error("admin_url", "is required (or instances, for several proxies)");
      }
      std::string url;
      PGSHIFT_RETURN_IF_ERROR(f.Str("admin_url", &url, true));
      if (!IsProxyAdminUrl(url)) return f.Error("admin_url", "must start with http:// or https://");
      r.admin_urls.push_back(std::move(url));
    }
  } else if (r.type == "pgbouncer") {
    PGSHIFT_RETURN_IF_ERROR(f.Str("admin_conninfo", &r.admin_conninfo, true));
    PGSHIFT_RETURN_IF_ERROR(f.Str("config_file", &r.config_file, true));
    PGSHIFT_RETURN_IF_ERROR(f.Str("credential", &r.credential, false));
    PGSHIFT_RETURN_IF_ERROR(CheckCredential(f, r.credential, secrets));
    if (f.Has("admin_url")) return f.Error("admin_url", "is for proxy routers");
    if (f.Has("instances")) return f.Error("instances", "is for proxy routers");
  } else {
    return f.Error("type", "must be proxy or pgbouncer");
  }
  return r;
}

Result<DatabaseEntry> ParseDatabase(const Fields& f, const std::string& name,
                                    const std::set<std::string>& routers, const Secrets* secrets) {
  DatabaseEntry e;
  e.name = name;
  PGSHIFT_RETURN_IF_ERROR(f.IsObject("team, source, placement, ..."));
  PGSHIFT_RETURN_IF_ERROR(f.OnlyKnown(
      {"team", "source", "provider", "placement", "router", "route", "window", "tags", "options"}));
  PGSHIFT_RETURN_IF_ERROR(f.Str("team", &e.team, true));
  if (!f.Has("source")) return f.Error("source", "is required (host, port, credential, ...)");
  PGSHIFT_RETURN_IF_ERROR(ParseSource(f.Child("source"), name, &e.source));
  PGSHIFT_RETURN_IF_ERROR(CheckCredential(f.Child("source"), e.source.credential, secrets));
  PGSHIFT_RETURN_IF_ERROR(f.Str("provider", &e.provider, false));
  if (e.provider != "local") {
    return f.Error("provider", "'" + e.provider + "' is not available in this build (local)");
  }
  if (f.Has("placement"))
    PGSHIFT_RETURN_IF_ERROR(ParsePlacement(f.Child("placement"), &e.placement));
  PGSHIFT_RETURN_IF_ERROR(f.Str("router", &e.router, false));
  if (!e.router.empty() && !routers.count(e.router)) {
    return f.Error("router", "names '" + e.router + "', which is not in 'routers'");
  }
  PGSHIFT_RETURN_IF_ERROR(f.Str("route", &e.route, false));
  if (f.Has("window")) {
    e.window.emplace();
    PGSHIFT_RETURN_IF_ERROR(ParseWindow(f.Child("window"), &*e.window));
  }
  PGSHIFT_RETURN_IF_ERROR(f.StrList("tags", &e.tags));
  if (f.Has("options")) {
    if (!f.Get("options").is_object()) return f.Error("options", "must be a mapping");
    e.options = f.Get("options");
  }
  return e;
}

}  // namespace

json Window::ToJson() const {
  return {{"days", days}, {"start", start}, {"end", end}, {"timezone", timezone}};
}

Result<Secrets> Secrets::Parse(const std::string& text, const std::string& path) {
  PGSHIFT_ASSIGN_OR_RETURN(ConfigDoc doc, auth::ParseConfigDoc(text, path));
  Secrets s;
  s.path_ = path;
  if (doc.root.is_null()) return s;
  if (!doc.root.is_object()) return doc.Error("", "must map credential names to passwords");
  for (const auto& [k, v] : doc.root.items()) {
    // Never the value in a message.
    if (!v.is_string()) return doc.Error("/" + PointerToken(k), "must be a string (the password)");
    s.values_[k] = v.get<std::string>();
  }
  return s;
}

Result<Secrets> Secrets::Load(const std::string& path) {
  PGSHIFT_RETURN_IF_ERROR(auth::CheckPrivateFile(path, "the secrets file"));
  PGSHIFT_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return Parse(text, path);
}

std::optional<std::string> Secrets::Get(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) return std::nullopt;
  return it->second;
}

std::vector<std::string> Secrets::Values() const {
  std::vector<std::string> out;
  for (const auto& [k, v] : values_) out.push_back(v);
  return out;
}

Result<Registry> Registry::Parse(const std::string& text, const std::string& path,
                                 const Secrets* secrets) {
  PGSHIFT_ASSIGN_OR_RETURN(ConfigDoc doc, auth::ParseConfigDoc(text, path));
  Registry reg;
  reg.path = path;
  if (!doc.root.is_object()) return doc.Error("", "must be a mapping with 'databases'");
  Fields top(doc, "", doc.root);
  PGSHIFT_RETURN_IF_ERROR(top.OnlyKnown({"secrets", "routers", "databases"}));
  std::string secrets_file;
  PGSHIFT_RETURN_IF_ERROR(top.Str("secrets", &secrets_file, false));
  if (!secrets_file.empty()) {
    std::filesystem::path p(secrets_file);
    reg.secrets_path =
        p.is_absolute()
            ? secrets_file
            : (std::filesystem::path(path).parent_path() / p).lexically_normal().string();
  }
  std::set<std::string> router_names;
  if (top.Has("routers")) {
    const json& rs = top.Get("routers");
    if (!rs.is_array()) return top.Error("routers", "must be a list of routers");
    for (size_t i = 0; i < rs.size(); ++i) {
      Fields f(doc, "/routers/" + std::to_string(i), rs[i]);
      PGSHIFT_ASSIGN_OR_RETURN(RouterDef r, ParseRouter(f, secrets));
      if (!router_names.insert(r.name).second) {
        return f.Error("name", "router '" + r.name + "' is defined twice");
      }
      reg.routers.push_back(std::move(r));
    }
  }
  if (!top.Has("databases")) return top.Error("databases", "is required");
  const json& dbs = top.Get("databases");
  if (!dbs.is_object()) return top.Error("databases", "must map database names to entries");
  for (const auto& [name, body] : dbs.items()) {
    Fields f(doc, "/databases/" + PointerToken(name), body);
    PGSHIFT_ASSIGN_OR_RETURN(DatabaseEntry e, ParseDatabase(f, name, router_names, secrets));
    e.line = doc.LineOf("/databases/" + PointerToken(name));
    reg.databases.emplace(name, std::move(e));
  }
  return reg;
}

Result<std::pair<Registry, Secrets>> Registry::Load(const std::string& path,
                                                    const std::string& secrets_override) {
  PGSHIFT_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  // A first pass finds the secrets file's name; the second checks credentials against it.
  PGSHIFT_ASSIGN_OR_RETURN(Registry first, Parse(text, path, nullptr));
  const std::string secrets_path = secrets_override.empty() ? first.secrets_path : secrets_override;
  Secrets secrets;
  if (!secrets_path.empty()) {
    PGSHIFT_ASSIGN_OR_RETURN(secrets, Secrets::Load(secrets_path));
  }
  PGSHIFT_ASSIGN_OR_RETURN(Registry reg, Parse(text, path, &secrets));
  reg.secrets_path = secrets_path;
  return std::make_pair(std::move(reg), std::move(secrets));
}

std::vector<RouterDef> RouterDef::Instances() const {
  if (admin_urls.size() <= 1) return {*this};
  std::vector<RouterDef> out;
  for (const auto& url : admin_urls) {
    RouterDef one = *this;
    one.admin_urls = {url};
    out.push_back(std::move(one));
  }
  return out;
}

const RouterDef* Registry::FindRouter(const std::string& name) const {
  for (const auto& r : routers) {
    if (r.name == name) return &r;
  }
  return nullptr;
}

}  // namespace pgshift::inventory
