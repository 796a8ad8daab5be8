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

Result<std::string> ByNameStarter::StartedWith(const std::string& key) {
  return audit_.MigrationWithKey(key);
}

Result<json> ByNameStarter::Start(const std::string& database, const json& options,
                                  const std::string& key) {
  PGSHIFT_ASSIGN_OR_RETURN(std::string made, StartedWith(key));
  if (!made.empty()) return svc_.Get(made);
  PGSHIFT_ASSIGN_OR_RETURN(auto db, inventory_.Find(database, nullptr));
  std::lock_guard<std::mutex> lock(mu_);
  // One live migration per database (the store checks it again in the
  // create's commit, for every pgshiftd), and no two targets on one port.
  PGSHIFT_ASSIGN_OR_RETURN(LiveView v, Live());
  std::set<int> ports;
  for (const auto& m : v.live) {
    const std::string id = m.value("id", "");
    if (auto it = v.links.find(id); it != v.links.end() && it->second == database) {
      return AlreadyMigrating(database, id, m.value("phase", ""), m.value("state", ""));
    }
    const json spec = m.value("spec", json::object());
    if (spec.contains("target") && spec["target"].is_object()) {
      ports.insert(spec["target"].value("port", 0));
    }
  }
  PGSHIFT_ASSIGN_OR_RETURN(json spec, inventory_.BuildSpec(db, options, ports));
  auto created = svc_.CreateLinked(spec, {.database = database, .key = key});
  if (created.status().code() == Code::kAlreadyExists && !key.empty()) {
    // Made with this key meanwhile (by a driver thought dead): that one.
    PGSHIFT_ASSIGN_OR_RETURN(made, StartedWith(key));
    if (!made.empty()) return svc_.Get(made);
  }
  return created;
}

}  // namespace pgshift::fleet
