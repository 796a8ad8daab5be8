// Test seams shared by the API's tests: the fake migration service with the
// two actions it does not model (retry, drop_slot: answered with the
// migration as it is), and a route source that serves one fixed route.
// Thread-safe as FakeMigrationService is.
#pragma once

#include <vector>

#include "inventory/inventory.h"
#include "testing/fake_migration_service.h"

namespace pgshift::api {

class ActingFakeService : public FakeMigrationService {
 public:
  Result<nlohmann::json> Act(const std::string& id, const std::string& action,
                             const nlohmann::json& body) override {
    if (action == "retry" || action == "drop_slot") return Get(id);
    return FakeMigrationService::Act(id, action, body);
  }
};

// Serves route "app" (database app) to 127.0.0.1:5432 for every router.
class OneRouteSource : public inventory::RouteSource {
 public:
  Result<std::vector<inventory::RouteInfo>> Routes(const inventory::RouterDef& r) override {
    return std::vector<inventory::RouteInfo>{{r.name, r.type, "app", "app", "127.0.0.1", 5432}};
  }
};

}  // namespace pgshift::api
