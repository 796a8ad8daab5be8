#include "inventory/inventory.h"

#include <httplib.h>

#include <algorithm>
#include <future>
#include <map>
#include <random>

#include "common/os.h"
#include "pg/conn.h"
#include "router/pgbouncer_admin.h"

namespace pgshift::inventory {
namespace {

using nlohmann::json;

// Random hex, so two migrations of one database never share a directory.
std::string NewSuffix() {
  static thread_local std::mt19937_64 rng(std::random_device{}());
  static const char* kHex = "0123456789abcdef";
  std::string s;
  uint64_t v = rng();
  for (int i = 0; i < 8; ++i) s += kHex[(v >> (i * 4)) & 0xf];
  return s;
}

Result<std::vector<RouteInfo>> ProxyRoutes(const RouterDef& r) {
  if (r.admin_urls.size() != 1) {
    return Internal("router '" + r.name + "': read one instance at a time");
  }
  const std::string& admin_url = r.admin_urls.front();
  httplib::Client http(admin_url);
  if (!http.is_valid()) return InvalidArgument("router '" + r.name + "': bad admin_url");
  const time_t sec = kRouterReadTimeoutMs / 1000;
  http.set_connection_timeout(sec);
  http.set_read_timeout(sec);
  auto res = http.Get("/routes");
  if (!res) {
    return Unavailable("router '" + r.name + "' (proxy at " + admin_url +
                       ") did not answer: " + httplib::to_string(res.error()));
  }
  json body = json::parse(res->body, nullptr, false);
  if (res->status != 200 || !body.is_array()) {
    return Unavailable("router '" + r.name + "' (proxy at " + admin_url +
                       ") answered GET /routes with HTTP " + std::to_string(res->status));
  }
  std::vector<RouteInfo> out;
  for (const auto& route : body) {
    if (!route.is_object()) continue;
    const json up = route.value("upstream", json::object());
    out.push_back({.router = r.name,
                   .type = r.type,
                   .route = route.value("name", ""),
                   .database = route.value("database", ""),
                   .host = up.value("host", ""),
                   .port = up.value("port", 0)});
  }
  return out;
}

Result<std::vector<RouteInfo>> PgBouncerRoutes(const RouterDef& r, const Secrets& secrets) {
  std::string conninfo = r.admin_conninfo;
  if (auto pw = secrets.Get(r.credential); !r.credential.empty() && pw) {
    PGSHIFT_ASSIGN_OR_RETURN(conninfo, WithConninfo(conninfo, {{"password", *pw}}));
  }
  const auto deadline = pgbouncer::DeadlineIn(kRouterReadTimeoutMs);
  auto conn = pgbouncer::AdminConnection::Connect(conninfo, deadline);
  if (!conn.ok()) return conn.status().Wrap("router '" + r.name + "' (pgbouncer)");
  auto rows = (*conn)->Run("SHOW DATABASES", deadline);
  if (!rows.ok()) return rows.status().Wrap("router '" + r.name + "' (pgbouncer)");
  std::vector<RouteInfo> out;
  for (size_t i = 0; i < rows->size(); ++i) {
    const std::string name = rows->Str(i, "name");
    if (name == "pgbouncer") continue;  // the admin console itself
    out.push_back({.router = r.name,
                   .type = r.type,
                   .route = name,
                   .database = rows->Str(i, "database", name),
                   .host = rows->Str(i, "host"),
                   .port = static_cast<int>(rows->Int(i, "port"))});
  }
  return out;
}

// The route named `route` in `routes`, or null.
const RouteInfo* FindRoute(const std::vector<RouteInfo>& routes, const std::string& route) {
  for (const auto& r : routes) {
    if (r.route == route) return &r;
  }
  return nullptr;
}

// Refuses a database whose route (on any instance that answered) no longer
// points at the registry's source: the registry is stale, or an instance
// was left behind.
Status CheckRouteAtSource(const DatabaseView& db, const std::string& where) {
  const SourceEndpoint& src = db.entry->source;
  const std::string fix =
      " (" + where + "); update databases." + db.name + ".source to where the database lives now";
  const std::string registry_source = ", but the registry's source of '" + db.name + "' is " +
                                      src.host + ":" + std::to_string(src.port);
  const RouteInfo& r = *db.route;
  if (r.host != src.host || r.port != src.port) {
    return FailedPrecondition("route '" + r.route + "' of router '" + r.router + "' points at " +
                              r.host + ":" + std::to_string(r.port) + registry_source + fix);
  }
  for (const auto& i : r.instances) {
    if (!i.reachable || (i.host == src.host && i.port == src.port)) continue;
    if (i.host.empty()) {
      return FailedPrecondition("instance " + i.admin_url + " of router '" + r.router +
                                "' has no route '" + r.route +
                                "' (the other instances serve it); "
                                "add the route there before migrating '" +
                                db.name + "'");
    }
    return FailedPrecondition("route '" + r.route + "' on instance " + i.admin_url +
                              " of router '" + r.router + "' points at " + i.host + ":" +
                              std::to_string(i.port) + registry_source + fix);
  }
  return Status::OK();
}

}  // namespace

json InstanceRoute::ToJson() const {
  return {{"admin_url", admin_url},
          {"reachable", reachable},
          {"upstream", host.empty() ? json(nullptr) : json{{"host", host}, {"port", port}}},
          {"error", error.empty() ? json(nullptr) : json(error)}};
}

Result<std::vector<RouteInfo>> LiveRouteSource::Routes(const RouterDef& router) {
  if (router.type == "proxy") return ProxyRoutes(router);
  return PgBouncerRoutes(router, secrets_);
}

json DatabaseView::ToJson() const {
  json source = json::object();
  json tags = json::array();
  json window = nullptr;
  std::string provider;
  if (entry) {
    source = {{"host", entry->source.host},
              {"port", entry->source.port},
              {"dbname", entry->source.dbname}};
    tags = entry->tags;
    if (entry->window) window = entry->window->ToJson();
    provider = entry->provider;
  } else if (route) {
    source = {{"host", route->host}, {"port", route->port}, {"dbname", route->database}};
  }
  json router = {{"type", "none"}, {"name", nullptr}, {"route", nullptr}, {"upstream", nullptr}};
  if (route) {
    router = {{"type", route->type},
              {"name", route->router},
              {"route", route->route},
              {"upstream", {{"host", route->host}, {"port", route->port}}}};
    if (!route->instances.empty()) {
      json instances = json::array();
      for (const auto& i : route->instances) instances.push_back(i.ToJson());
      router["instances"] = instances;
    }
  } else if (entry && !entry->router.empty()) {
    router["name"] = entry->router;
    router["route"] = entry->route.empty() ? entry->name : entry->route;
  }
  return {{"name", name},
          {"team", entry ? json(entry->team) : json(nullptr)},
          {"tags", tags},
          {"window", window},
          {"provider", provider.empty() ? json(nullptr) : json(provider)},
          {"source", source},
          {"router", router}};
}

Inventory::Inventory(Registry registry, Secrets secrets, RouteSource& routes)
    : registry_(std::move(registry)), secrets_(std::move(secrets)), routes_(routes) {}

Result<std::vector<RouteInfo>> Inventory::ReadRouter(const RouterDef& def,
                                                     std::vector<std::string>* warnings) const {
  const std::vector<RouterDef> instances = def.Instances();
  if (instances.size() == 1) return routes_.Routes(def);
  std::vector<std::future<Result<std::vector<RouteInfo>>>> reads;
  for (const auto& one : instances) {
    reads.push_back(std::async(std::launch::async, [this, &one] { return routes_.Routes(one); }));
  }
  std::vector<Result<std::vector<RouteInfo>>> answers;
  std::vector<InstanceRoute> states;
  std::string failures;
  for (size_t i = 0; i < reads.size(); ++i) {
    answers.push_back(reads[i].get());
    InstanceRoute state{.admin_url = def.admin_urls[i], .reachable = answers.back().ok()};
    if (!state.reachable) {
      state.error = answers.back().status().message();
      failures += (failures.empty() ? "" : "; ") + state.error;
    }
    states.push_back(std::move(state));
  }
  std::vector<RouteInfo> merged;  // each route once, as the first instance to list it has it
  for (const auto& answer : answers) {
    if (!answer.ok()) continue;
    for (const auto& r : *answer) {
      if (!FindRoute(merged, r.route)) merged.push_back(r);
    }
  }
  if (std::none_of(states.begin(), states.end(), [](const auto& s) { return s.reachable; })) {
    return Unavailable("router '" + def.name + "': no instance answered: " + failures);
  }
  for (auto& route : merged) {
    route.instances = states;
    for (size_t i = 0; i < answers.size(); ++i) {
      if (!answers[i].ok()) continue;
      if (const RouteInfo* own = FindRoute(*answers[i], route.route)) {
        route.instances[i].host = own->host;
        route.instances[i].port = own->port;
      }
    }
  }
  if (warnings) {
    for (const auto& s : states) {
      if (!s.reachable) warnings->push_back(s.error + "; listed from the other instances");
    }
  }
  return merged;
}

std::vector<DatabaseView> Inventory::List(std::vector<std::string>* warnings) const {
  std::vector<RouteInfo> all;
  for (const auto& r : registry_.routers) {
    auto routes = ReadRouter(r, warnings);
    if (!routes.ok()) {
      if (warnings) warnings->push_back(routes.status().message());
      continue;
    }
    all.insert(all.end(), routes->begin(), routes->end());
  }
  std::map<std::string, DatabaseView> by_name;
  std::vector<bool> claimed(all.size(), false);
  for (const auto& [name, e] : registry_.databases) {
    DatabaseView v{.name = name, .entry = e, .router_name = e.router};
    // The entry's router and route when it names them; else the route
    // serving its database.
    for (size_t i = 0; i < all.size(); ++i) {
      const RouteInfo& ri = all[i];
      const bool match =
          e.router.empty()
              ? (e.route.empty() ? ri.database == e.source.dbname : ri.route == e.route)
              : ri.router == e.router && ri.route == (e.route.empty() ? name : e.route);
      if (match && !v.route) {
        v.route = ri;
        v.router_name = ri.router;
        claimed[i] = true;
      }
    }
    by_name.emplace(name, std::move(v));
  }
  for (size_t i = 0; i < all.size(); ++i) {
    if (claimed[i]) continue;
    const std::string name = all[i].database.empty() ? all[i].route : all[i].database;
    if (by_name.count(name)) continue;
    by_name.emplace(name,
                    DatabaseView{.name = name, .route = all[i], .router_name = all[i].router});
  }
  std::vector<DatabaseView> out;
  for (auto& [n, v] : by_name) out.push_back(std::move(v));
  return out;
}

Result<DatabaseView> Inventory::Find(const std::string& name,
                                     std::vector<std::string>* warnings) const {
  auto all = List(warnings);
  std::string known;
  for (auto& v : all) {
    if (v.name == name) return std::move(v);
    known += (known.empty() ? "" : ", ") + v.name;
  }
  return NotFound("no database named '" + name +
                  "' in the inventory; known databases: " + (known.empty() ? "(none)" : known));
}

Result<json> Inventory::RouterSpec(const DatabaseView& db) const {
  if (db.router_name.empty()) return json{{"type", "none"}};
  const RouterDef* def = registry_.FindRouter(db.router_name);
  if (!def) return Internal("router '" + db.router_name + "' is not in the registry");
  const std::string route =
      db.route ? db.route->route : (db.entry->route.empty() ? db.name : db.entry->route);
  if (def->type == "proxy" && def->admin_urls.size() == 1) {
    return json{{"type", "proxy"}, {"admin_url", def->admin_urls.front()}, {"route", route}};
  }
  if (def->type == "proxy") {
    // Every instance of the deployment: the migration holds and switches them all.
    json instances = json::array();
    for (const auto& url : def->admin_urls) instances.push_back({{"admin_url", url}});
    return json{{"type", "proxy"}, {"route", route}, {"instances", instances}};
  }
  std::string admin = def->admin_conninfo;
  if (auto pw = secrets_.Get(def->credential); !def->credential.empty() && pw) {
    PGSHIFT_ASSIGN_OR_RETURN(admin, WithConninfo(admin, {{"password", *pw}}));
  }
  return json{{"type", "pgbouncer"},
              {"admin_conninfo", admin},
              {"config_file", def->config_file},
              {"route", route}};
}

Result<int> Inventory::PickPort(const DatabaseEntry& e, const std::set<int>& in_use) const {
  for (int p = e.placement.port_min; p <= e.placement.port_max; ++p) {
    if (in_use.count(p) || PortOpen("127.0.0.1", p)) continue;
    return p;
  }
  return FailedPrecondition(
      "no free port in placement.ports " + std::to_string(e.placement.port_min) + "-" +
      std::to_string(e.placement.port_max) + " of database '" + e.name + "' (" + registry_.path +
      ":" + std::to_string(e.line) + "); widen the range");
}

Result<std::string> Inventory::SourceConninfo(const DatabaseEntry& e) const {
  std::map<std::string, std::string> kv = {{"host", e.source.host},
                                           {"port", std::to_string(e.source.port)},
                                           {"user", e.source.user},
                                           {"dbname", e.source.admin_dbname}};
  if (!e.source.credential.empty()) {
    auto pw = secrets_.Get(e.source.credential);
    if (!pw) {
      return FailedPrecondition("credential '" + e.source.credential + "' of database '" + e.name +
                                "' is not in the secrets file");
    }
    kv["password"] = *pw;
  }
  return BuildConninfo(kv);
}

Result<json> Inventory::BuildSpec(const DatabaseView& db, const json& options,
                                  const std::set<int>& ports_in_use) const {
  if (!db.entry) {
    return FailedPrecondition("database '" + db.name + "' is served by router '" + db.router_name +
                              "' but " + registry_.path +
                              " does not describe it; add an entry (team, source, placement) "
                              "to migrate it by name");
  }
  const DatabaseEntry& e = *db.entry;
  const std::string where = registry_.path + ":" + std::to_string(e.line);
  if (e.placement.data_root.empty()) {
    return FailedPrecondition("database '" + db.name + "' has no placement (" + where +
                              ", field databases." + db.name +
                              ".placement: data_root and ports) for its new cluster");
  }
  if (db.route) PGSHIFT_RETURN_IF_ERROR(CheckRouteAtSource(db, where));
  PGSHIFT_ASSIGN_OR_RETURN(std::string source, SourceConninfo(e));
  PGSHIFT_ASSIGN_OR_RETURN(json router, RouterSpec(db));
  PGSHIFT_ASSIGN_OR_RETURN(int port, PickPort(e, ports_in_use));
  json target = {{"provider", e.provider},
                 {"data_dir", e.placement.data_root + "/" + db.name + "-" + NewSuffix()},
                 {"port", port}};
  if (!e.placement.os_user.empty()) target["os_user"] = e.placement.os_user;
  if (!e.placement.bin_dir.empty()) target["bin_dir"] = e.placement.bin_dir;
  if (!e.placement.settings.empty()) target["settings"] = e.placement.settings;
  json opts = e.options;
  for (const auto& [k, v] : options.items()) opts[k] = v;
  return json{{"name", db.name},
              {"source", {{"conninfo", source}}},
              {"target", target},
              {"router", router},
              {"options", opts}};
}

}  // namespace pgshift::inventory
