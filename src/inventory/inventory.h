// Inventory: the databases the data access layer serves — the routes the
// registered routers serve now (pgshift-proxy's admin GET /routes,
// PgBouncer's SHOW DATABASES) joined with the registry's entries — and the
// migration spec pgshiftd builds to migrate one of them by name.
//
// A database is named by its registry key; a route no entry claims appears
// under its database name with no team (operators only, and it cannot be
// migrated by name until the registry describes it). Routers are read on
// every call (no cache: the route table is the truth and changes at every
// cutover); one that cannot be read is reported as a warning, never an error.
// A proxy router of several instances is read on each of them at once; one
// instance answering is enough to list its routes, and each route says what
// every instance made of it (its upstream, or why it could not be read).
// Thread-safe: the registry is immutable and RouteSource implementations are
// thread-safe.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/status.h"
#include "inventory/registry.h"

namespace pgshift::inventory {

// Bound on each router read while listing.
inline constexpr int64_t kRouterReadTimeoutMs = 2000;

// One instance's view of a route, for routers of several instances.
struct InstanceRoute {
  std::string admin_url;
  bool reachable = false;
  std::string error;  // why it could not be read, when not reachable
  std::string host;   // where its route points; "" when it has no such route
  int port = 0;

  nlohmann::json ToJson() const;
};

struct RouteInfo {
  std::string router;    // the RouterDef's name
  std::string type;      // proxy | pgbouncer
  std::string route;     // the proxy's route name / PgBouncer's [databases] entry
  std::string database;  // the database it serves
  std::string host;      // where it points now (the first instance that answered)
  int port = 0;
  std::vector<InstanceRoute> instances;  // every instance, when the router has several
};

class RouteSource {
 public:
  virtual ~RouteSource() = default;
  // The routes of one router instance: `router` has at most one admin URL
  // (the Inventory reads a router of several instances one by one).
  virtual Result<std::vector<RouteInfo>> Routes(const RouterDef& router) = 0;
};

// Reads the real routers, each call bounded by kRouterReadTimeoutMs.
class LiveRouteSource : public RouteSource {
 public:
  explicit LiveRouteSource(const Secrets& secrets) : secrets_(secrets) {}
  Result<std::vector<RouteInfo>> Routes(const RouterDef& router) override;

 private:
  const Secrets& secrets_;
};

struct DatabaseView {
  std::string name;
  std::optional<DatabaseEntry> entry;  // absent: a route the registry does not describe
  std::optional<RouteInfo> route;      // absent: no registered router serves it now
  std::string router_name;             // the RouterDef that serves it, or ""

  // The owner team, "" when none.
  std::string team() const { return entry ? entry->team : ""; }
  // {"name","team","tags","window","provider","source":{"host","port","dbname"},
  //  "router":{"type","name","route","upstream"}} — never a credential. A
  // router of several instances adds "instances":[{"admin_url","reachable",
  // "upstream","error"}].
  nlohmann::json ToJson() const;
};

class Inventory {
 public:
  // `routes` must outlive the inventory.
  Inventory(Registry registry, Secrets secrets, RouteSource& routes);

  // Every database, sorted by name. Routers that could not be read are
  // described in `warnings` (may be null).
  std::vector<DatabaseView> List(std::vector<std::string>* warnings) const;
  // NotFound naming the known databases.
  Result<DatabaseView> Find(const std::string& name, std::vector<std::string>* warnings) const;

  // The spec to migrate `db`: the source's admin conninfo with its secret,
  // the router serving it, a target under placement.data_root on a free port
  // of placement.ports (skipping `ports_in_use`), and the entry's options
  // overlaid with `options`. FailedPrecondition (naming the registry field
  // to fix) when the entry cannot be migrated by name.
  Result<nlohmann::json> BuildSpec(const DatabaseView& db, const nlohmann::json& options,
                                   const std::set<int>& ports_in_use) const;

  // The source's admin conninfo, with its secret (FailedPrecondition when
  // the credential is missing).
  Result<std::string> SourceConninfo(const DatabaseEntry& e) const;

  const Registry& registry() const { return registry_; }
  const Secrets& secrets() const { return secrets_; }

 private:
  // Every route of `def`; a router of several instances is read on each
  // at once, and fails only when none answers.
  Result<std::vector<RouteInfo>> ReadRouter(const RouterDef& def,
                                            std::vector<std::string>* warnings) const;
  Result<nlohmann::json> RouterSpec(const DatabaseView& db) const;
  Result<int> PickPort(const DatabaseEntry& e, const std::set<int>& in_use) const;

  Registry registry_;
  Secrets secrets_;
  RouteSource& routes_;
};

}  // namespace pgshift::inventory
