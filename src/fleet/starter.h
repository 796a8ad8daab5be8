// ByNameStarter: creates the migration of one inventory database by name —
// the spec from the registry, a target port no live migration uses, and the
// link migration → database, written with the migration (store/state_store.h
// MigrationLink). The API's
// POST /v1/databases/{name}/migrations and the fleet runner both start
// migrations through it, so both keep "one live migration per database".
// Authorization is the caller's job. Thread-safe: creates are serialized.
#pragma once

#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>

#include "common/status.h"
#include "inventory/inventory.h"
#include "store/state_store.h"
#include "workflow/service.h"

namespace pgshift::fleet {

class Starter {
 public:
  virtual ~Starter() = default;
  // The created migration (the service's JSON). AlreadyExists when the
  // database has a live migration. `key` is an idempotency key ("" for
  // none), recorded in the commit that creates the migration: a start with
  // a key used before creates nothing and returns the migration made with
  // it, whatever its phase.
  virtual Result<nlohmann::json> Start(const std::string& database, const nlohmann::json& options,
                                       const std::string& key) = 0;
  // The id of the migration started with `key`, "" when none was (a fleet
  // run taken over asks about a start its dead driver may have made).
  virtual Result<std::string> StartedWith(const std::string& key) = 0;
};

class ByNameStarter : public Starter {
 public:
  // Every argument must outlive the starter.
  ByNameStarter(MigrationService& svc, const inventory::Inventory& inventory, AuditStore& audit)
      : svc_(svc), inventory_(inventory), audit_(audit) {}
  Result<nlohmann::json> Start(const std::string& database, const nlohmann::json& options,
                               const std::string& key) override;
  Result<std::string> StartedWith(const std::string& key) override;

 private:
  // The live migrations (the service's JSON) and the links to databases.
  struct LiveView {
    nlohmann::json live = nlohmann::json::array();
    std::map<std::string, std::string> links;
  };
  Result<LiveView> Live();
  MigrationService& svc_;
  const inventory::Inventory& inventory_;
  AuditStore& audit_;
  std::mutex mu_;
};

}  // namespace pgshift::fleet
