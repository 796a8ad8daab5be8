#include "cli/spec_builder.h"

#include <algorithm>
#include <cmath>

#include "common/os.h"
#include "pg/conn.h"
#include "router/proxy_router.h"

namespace pgshift::cli {
namespace {

using nlohmann::json;

Status CheckConninfo(const std::string& flag, const std::string& conninfo) {
  auto parsed = ParseConninfo(conninfo);
  if (!parsed.ok()) {
    return InvalidArgument(flag + ": " + parsed.status().message());
  }
  return Status::OK();
}

// Seconds as an integer when whole, so servers reading integers accept them.
json Seconds(double s) {
  if (std::floor(s) == s && std::abs(s) < 1e15) return static_cast<int64_t>(s);
  return s;
}

Status NotAProxyUrl(const std::string& got) {
  return InvalidArgument(
      "--router-type proxy needs --router-admin URL of the proxy's admin API "
      "(e.g. http://127.0.0.1:7433; repeat it, or give a comma list, for every instance "
      "serving the route), got '" +
      got + "'");
}

// Every proxy admin URL given: each --router-admin may be a comma list.
Result<std::vector<std::string>> ProxyAdminUrls(const std::vector<std::string>& flags) {
  if (flags.empty()) return NotAProxyUrl("");
  std::vector<std::string> urls;
  for (const auto& flag : flags) {
    size_t start = 0;
    while (start <= flag.size()) {
      const size_t comma = std::min(flag.find(',', start), flag.size());
      std::string url = flag.substr(start, comma - start);
      url.erase(0, url.find_first_not_of(" \t"));
      url.erase(url.find_last_not_of(" \t") + 1);
      if (!IsProxyAdminUrl(url)) return NotAProxyUrl(url);
      if (std::find(urls.begin(), urls.end(), url) != urls.end()) {
        return InvalidArgument("--router-admin lists " + url + " twice (each instance once)");
      }
      urls.push_back(std::move(url));
      start = comma + 1;
    }
  }
  return urls;
}

Result<json> BuildRouter(const CreateFlags& f) {
  if (f.router_type.empty()) {
    if (!f.router_admins.empty() || !f.router_config.empty() || !f.route.empty()) {
      return InvalidArgument(
          "--router-admin, --router-config and --route need --router-type "
          "(pgbouncer, proxy or none)");
    }
    return json(nullptr);
  }
  if (f.router_type == "none") {
    if (!f.router_admins.empty() || !f.router_config.empty() || !f.route.empty()) {
      return InvalidArgument(
          "--router-type none takes no --router-admin, --router-config or --route");
    }
    return json{{"type", "none"}};
  }
  if (f.router_type == "pgbouncer") {
    if (f.router_admins.empty()) {
      return InvalidArgument(
          "--router-type pgbouncer needs --router-admin CONNINFO for PgBouncer's "
          "admin console (e.g. 'host=127.0.0.1 port=6432 dbname=pgbouncer user=pgbouncer')");
    }
    if (f.router_admins.size() > 1) {
      return InvalidArgument(
          "--router-type pgbouncer takes one --router-admin (PgBouncer's admin console); "
          "several are for proxy instances");
    }
    const std::string& admin = f.router_admins.front();
    PGSHIFT_RETURN_IF_ERROR(CheckConninfo("--router-admin", admin));
    json r = {{"type", "pgbouncer"}, {"admin_conninfo", admin}};
    if (!f.router_config.empty()) {
      if (f.router_config.front() != '/') {
        return InvalidArgument("--router-config '" + f.router_config +
                               "' must be an absolute path");
      }
      r["config_file"] = f.router_config;
    }
    if (!f.route.empty()) r["route"] = f.route;
    return r;
  }
  if (f.router_type == "proxy") {
    PGSHIFT_ASSIGN_OR_RETURN(std::vector<std::string> urls, ProxyAdminUrls(f.router_admins));
    if (!f.router_config.empty()) {
      return InvalidArgument(
          "--router-config is for --router-type pgbouncer; the proxy is "
          "configured through its admin API");
    }
    json r = {{"type", "proxy"}};
    if (urls.size() == 1) {
      r["admin_url"] = urls.front();
    } else {
      json instances = json::array();
      for (const auto& url : urls) instances.push_back({{"admin_url", url}});
      r["instances"] = instances;
    }
    if (!f.route.empty()) r["route"] = f.route;
    return r;
  }
  return InvalidArgument("--router-type '" + f.router_type +
                         "' is not one of pgbouncer, proxy, none");
}

}  // namespace

Result<json> BuildSpec(const CreateFlags& f) {
  std::vector<std::string> missing;
  if (f.name.empty()) missing.push_back("--name");
  if (f.source_conninfo.empty()) missing.push_back("--source");
  if (f.target_dir.empty()) missing.push_back("--target-dir");
  if (!f.target_port) missing.push_back("--target-port");
  if (!missing.empty()) {
    std::string list;
    for (const auto& m : missing) list += (list.empty() ? "" : ", ") + m;
    return InvalidArgument("missing " + list + " (or give a whole spec with --spec FILE.json)");
  }
  PGSHIFT_RETURN_IF_ERROR(CheckConninfo("--source", f.source_conninfo));
  if (!f.replication_conninfo.empty()) {
    PGSHIFT_RETURN_IF_ERROR(CheckConninfo("--source-replication", f.replication_conninfo));
  }
  if (f.target_dir.front() != '/') {
    return InvalidArgument("--target-dir '" + f.target_dir +
                           "' must be an absolute path (pgshiftd may run in another directory)");
  }
  if (*f.target_port < 1 || *f.target_port > 65535) {
    return InvalidArgument("--target-port " + std::to_string(*f.target_port) +
                           " is not a TCP port (1-65535)");
  }

  json target = {{"provider", "local"}, {"data_dir", f.target_dir}, {"port", *f.target_port}};
  if (!f.target_bin_dir.empty()) target["bin_dir"] = f.target_bin_dir;
  if (!f.target_settings.empty()) {
    json settings = json::object();
    for (const auto& kv : f.target_settings) {
      auto eq = kv.find('=');
      std::string key = eq == std::string::npos ? "" : kv.substr(0, eq);
      if (eq == std::string::npos || key.empty() || key.find_first_of(" \t") != std::string::npos) {
        return InvalidArgument("--target-setting '" + kv +
                               "' is not key=value (e.g. max_connections=200)");
      }
      settings[key] = kv.substr(eq + 1);
    }
    target["settings"] = settings;
  }

  json spec = {{"name", f.name}, {"source", {{"conninfo", f.source_conninfo}}}, {"target", target}};
  if (!f.replication_conninfo.empty()) {
    spec["source"]["replication_conninfo"] = f.replication_conninfo;
  }
  PGSHIFT_ASSIGN_OR_RETURN(json router, BuildRouter(f));
  if (!router.is_null()) spec["router"] = router;

  json options = json::object();
  if (f.lag_threshold_bytes) {
    if (*f.lag_threshold_bytes < 0) return InvalidArgument("--lag-threshold-bytes must be >= 0");
    options["lag_threshold_bytes"] = *f.lag_threshold_bytes;
  }
  if (f.sustain_seconds) {
    if (*f.sustain_seconds < 0) return InvalidArgument("--sustain-seconds must be >= 0");
    options["sustain_seconds"] = Seconds(*f.sustain_seconds);
  }
  if (f.auto_cutover) options["auto_cutover"] = true;
  if (f.auto_finalize) options["auto_finalize"] = true;
  if (f.verify_seconds) {
    if (*f.verify_seconds < 0) return InvalidArgument("--verify-seconds must be >= 0");
    options["verify_seconds"] = Seconds(*f.verify_seconds);
  }
  if (f.hold_timeout_ms) {
    if (*f.hold_timeout_ms <= 0) return InvalidArgument("--hold-timeout-ms must be > 0");
    options["hold_timeout_ms"] = *f.hold_timeout_ms;
  }
  if (!options.empty()) spec["options"] = options;
  return spec;
}

Result<json> LoadSpecFile(const std::string& path) {
  auto text = ReadFile(path);
  if (!text.ok())
    return InvalidArgument("--spec: cannot read " + path + ": " + text.status().message());
  json spec;
  try {
    spec = json::parse(*text);
  } catch (const json::parse_error& e) {
    std::string detail = e.what();
    if (auto pos = detail.find("] "); pos != std::string::npos) detail = detail.substr(pos + 2);
    return InvalidArgument("--spec " + path + " is not valid JSON: " + detail);
  }
  if (!spec.is_object()) {
    return InvalidArgument("--spec " + path +
                           " must hold a JSON object (the migration spec), not " +
                           std::string(spec.type_name()));
  }
  if (spec.contains("source") && spec["source"].is_object() &&
      spec["source"].contains("conninfo") && spec["source"]["conninfo"].is_string()) {
    PGSHIFT_RETURN_IF_ERROR(CheckConninfo(path + ": source.conninfo", spec["source"]["conninfo"]));
  }
  if (spec.contains("router") && spec["router"].is_object() &&
      spec["router"].contains("admin_conninfo") && spec["router"]["admin_conninfo"].is_string()) {
    PGSHIFT_RETURN_IF_ERROR(
        CheckConninfo(path + ": router.admin_conninfo", spec["router"]["admin_conninfo"]));
  }
  return spec;
}

}  // namespace pgshift::cli
