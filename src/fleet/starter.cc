#include "fleet/starter.h"

#include <set>

#include "model/phase.h"

namespace pgshift::fleet {

using nlohmann::json;

namespace {

bool IsLiveMigration(const json& m) {
  auto p = ParsePhase(m.value("phase", ""));
  return p && !IsTerminal(*p);
}

}  // namespace

Result<ByNameStarter::LiveView> ByNameStarter::Live() {
  PGSHIFT_ASSIGN_OR_RETURN(json list, svc_.ListLive());
  if (list.is_object()) list = list.value("migrations", json::array());
  LiveView v;
  PGSHIFT_ASSIGN_OR_RETURN(v.links, audit_.MigrationDatabases());
  for (auto& m : list) {
    if (IsLiveMigration(m)) v.live.push_back(std::move(m));
  }
  return v;
}

Result<std::string> ByNameStarter::LiveMigrationOf(const std::string& database) {
  PGSHIFT_ASSIGN_OR_RETURN(LiveView v, Live());
  for (const auto& m : v.live) {
    const std::string id = m.value("id", "");
    if (auto it = v.links.find(id); it != v.links.end() && it->second == database) return id;
  }
  return std::string();
}

Result<json> ByNameStarter::Start(const std::string& database, const json& options) {
  PGSHIFT_ASSIGN_OR_RETURN(auto db, inventory_.Find(database, nullptr));
  // One live migration per database, and no two targets on one port.
  std::lock_guard<std::mutex> lock(mu_);
  PGSHIFT_ASSIGN_OR_RETURN(LiveView v, Live());
  std::set<int> ports;
  for (const auto& m : v.live) {
    const std::string id = m.value("id", "");
    if (auto it = v.links.find(id); it != v.links.end() && it->second == database) {
      return AlreadyExists("database " + database + " is already being migrated by " + id +
                           " (phase " + m.value("phase", "") + ", state " + m.value("state", "") +
                           "); finalize or roll it back before starting another");
    }
    const json spec = m.value("spec", json::object());
    if (spec.contains("target") && spec["target"].is_object()) {
      ports.insert(spec["target"].value("port", 0));
    }
  }
  PGSHIFT_ASSIGN_OR_RETURN(json spec, inventory_.BuildSpec(db, options, ports));
  PGSHIFT_ASSIGN_OR_RETURN(json created, svc_.Create(spec));
  const std::string id = created.value("id", "");
  Status linked = audit_.LinkDatabase(id, database);
  if (!linked.ok()) return linked.Wrap("migration " + id + " was created but not linked");
  return created;
}

}  // namespace pgshift::fleet
