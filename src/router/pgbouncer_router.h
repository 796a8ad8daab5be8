// PgBouncerRouter: the Router for teams that already run PgBouncer. It drives
// one [databases] entry (the route) through the admin console:
//   Hold    → PAUSE <route>   (sent asynchronously; RESUME from a second
//                              connection when it does not drain in time)
//   Repoint → rewrite the route's line in pgbouncer.ini (host/port only,
//             atomically), RELOAD, check SHOW DATABASES
//   Release → RESUME <route>
// Current/Stats read SHOW DATABASES / SHOW POOLS / SHOW STATS, so PgBouncer
// stays the source of truth. Every admin round trip is bounded by a deadline.
// PgBouncer (1.18) does not carry replication connections: the replication
// calls keep Router's defaults (none listed, none asked or paused).
// Thread-compatible: one thread at a time per instance (Router's rule).
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "common/status.h"
#include "router/router.h"

namespace pgshift {

struct PgBouncerRouterConfig {
  std::string admin_conninfo;  // libpq conninfo with dbname=pgbouncer
  std::string config_file;     // the pgbouncer.ini that PgBouncer loaded
  std::string route;           // the [databases] entry to control
  // Bound for admin round trips other than Hold's wait (connect, RELOAD, SHOW ...).
  int64_t admin_timeout_ms = 10000;
};

class PgBouncerRouter : public Router {
 public:
  explicit PgBouncerRouter(PgBouncerRouterConfig config) : config_(std::move(config)) {}

  // {"type":"pgbouncer","admin_conninfo":..,"config_file":..,"route":..}; unknown or
  // missing fields are InvalidArgument naming the field.
  static Result<std::unique_ptr<PgBouncerRouter>> FromJson(const nlohmann::json& config);

  std::string Kind() const override { return "pgbouncer"; }
  // On timeout the RESUME is sent from a fresh admin connection, which is bounded by
  // admin_timeout_ms; Hold returns at most that long after timeout_ms.
  Status Hold(int64_t timeout_ms) override;
  Status Release() override;
  Status Repoint(const Endpoint& to) override;
  Result<Endpoint> Current() override;
  Result<RouteStats> Stats() override;

  const PgBouncerRouterConfig& config() const { return config_; }

 private:
  Status Reload(const Endpoint& expected);
  PgBouncerRouterConfig config_;
};

// Pure text transformation of a pgbouncer.ini: the line of `route` in the
// [databases] section gets host and port replaced (added when absent); its
// other key=value pairs, spacing, and every other byte of the file are kept.
// NotFound when the route has no line; FailedPrecondition when it has several.
Result<std::string> RewriteRouteInIni(const std::string& ini, const std::string& route,
                                      const Endpoint& to);

}  // namespace pgshift
