#include "fleet/starter.h"

#include <set>

#include "model/phase.h"

namespace pgshift::fleet {

using nlohmann::json;

namespace {

bool Live(const json& m) {
  auto p = ParsePhase(m.value("phase", ""));
  return p && !IsTerminal(*p);
}

}  // namespace

Result<json> ByNameStarter::Start(const std::string& database, const json& options) {
  PGSHIFT_ASSIGN_OR_RETURN(auto db, inventory_.Find(database, nullptr));
  // One live migration per database, and no two targets on one port.
  std::lock_guard<std::mutex> lock(mu_);
  PGSHIFT_ASSIGN_OR_RETURN(json list, svc_.ListLive());
  if (list.is_object()) list = list.value("migrations", json::array());
  PGSHIFT_ASSIGN_OR_RETURN(auto links, audit_.MigrationDatabases());
  std::set<int> ports;
  for (const auto& m : list) {
    if (!Live(m)) continue;
    const std::string id = m.value("id", "");
    if (auto it = links.find(id); it != links.end() && it->second == database) {
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
