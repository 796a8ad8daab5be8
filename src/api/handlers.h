// Handlers: the API's route handlers (one method per route) and the route
// table that maps METHOD + path pattern to them. Internal to src/api; the
// served routes are public through ServedRoutes() (api/http_server.h).
//
// Every handler runs after authentication with the Caller; authorization by
// team is its own first step (see auth/authenticator.h). Thread-safe: the
// dependencies are thread-safe, and the by-name create is serialized.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "api/http_server.h"
#include "auth/authenticator.h"
#include "fleet/starter.h"

namespace pgshift::api {

// One request as a handler sees it.
struct Call {
  const httplib::Request& req;
  httplib::Response& res;
  std::vector<std::string> params;  // the pattern's {placeholders}, in order
  auth::Caller caller;

  void Reply(int http_status, const nlohmann::json& body);
  void Fail(const Status& st);
};

// Who may call a route before its handler decides more.
enum class Access {
  kPublic,   // no credentials needed (health checks, the phase table)
  kCaller,   // any authenticated identity (whoami)
  kMember,   // an identity with a role; the handler checks the team
  kMetrics,  // public in development mode, else operators
};

class Handlers;
struct Route {
  const char* method;
  const char* pattern;  // "/v1/migrations/{id}"
  Access access;
  void (Handlers::*handle)(Call&);
};

const std::vector<Route>& RouteTable();

class Handlers {
 public:
  Handlers(MigrationService& svc, const ApiOptions& options);

  void Healthz(Call& c);
  void Phases(Call& c);
  void WhoAmI(Call& c);
  void Metrics(Call& c);
  void Audit(Call& c);
  void ListDatabases(Call& c);
  void GetDatabase(Call& c);
  void MigrateDatabase(Call& c);
  void CreateMigration(Call& c);
  void ListMigrations(Call& c);
  void GetMigration(Call& c);
  void MigrationEvents(Call& c);
  void Act(Call& c);
  void FleetPlan(Call& c);
  void FleetCreate(Call& c);
  void FleetList(Call& c);
  void FleetGet(Call& c);
  void FleetPause(Call& c);
  void FleetResume(Call& c);

 private:
  struct Owner {
    std::string database;  // "" for the expert form
    std::string team;      // "" when no team owns it
  };
  // migration id → database (by-name migrations only).
  std::map<std::string, std::string> Links() const;
  std::string TeamOf(const std::string& database) const;
  Owner OwnerOf(const std::string& migration_id,
                const std::map<std::string, std::string>& links) const;
  // The caller's view of a migration JSON.
  nlohmann::json View(const nlohmann::json& m, const Call& c,
                      const std::map<std::string, std::string>& links) const;
  // The migrations the caller may see, as views (every one for operators).
  Result<nlohmann::json> VisibleMigrations(const Call& c) const;
  // PermissionDenied unless the caller may act on migration `id`; NotFound if absent.
  Result<nlohmann::json> AuthorizedMigration(Call& c, const std::string& id,
                                             const std::string& what);
  void Record(const Call& c, const std::string& action, const std::string& database,
              const std::string& migration, const std::string& detail) const;
  nlohmann::json DatabaseJson(const nlohmann::json& view, const Call& c,
                              const nlohmann::json& migrations,
                              const std::map<std::string, std::string>& links) const;

  // The fleet runner, or a Status to answer with (not an operator, or no runner).
  Result<fleet::FleetRunner*> FleetFor(const Call& c, const std::string& what) const;

  MigrationService& svc_;
  const ApiOptions& opts_;
  std::unique_ptr<fleet::ByNameStarter> own_starter_;  // when ApiOptions::starter is null
  fleet::Starter* starter_ = nullptr;                  // null without inventory or audit
};

}  // namespace pgshift::api
