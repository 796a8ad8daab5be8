// ApiServer: pgshiftd's REST API, serving a MigrationService, the inventory
// and the audit log over HTTP(S)/JSON. docs/openapi.yaml describes every
// route (a test checks it against ServedRoutes() and live answers):
//   GET  /healthz                          200 {"ok":true}                 (no credentials)
//   GET  /metrics                          200 Prometheus text              (api/metrics.h)
//   GET  /v1/phases                        200 [{"name","order","branch","in_hold","terminal"}]
//                                              (the phase table, model/phase.h; no credentials)
//   GET  /v1/whoami                        200 {"identity","team","operator","dev_mode"}
//   GET  /v1/databases                     200 {"databases":[...],"warnings":[...]}
//   GET  /v1/databases/{name}              200 database
//   POST /v1/databases/{name}/migrations   201 migration   (body {} or {"options":{...}})
//   GET  /v1/audit                         200 {"entries":[...]}
//   POST /v1/migrations                    201 migration   (the expert form, operators only)
//   GET  /v1/migrations                    200 {"migrations":[...]}
//   GET  /v1/migrations/{id}               200 migration
//   GET  /v1/migrations/{id}/events        200 {"events":[...]}
//   POST /v1/migrations/{id}/{cutover|rollback|finalize|retry|drop_slot}  202 migration
//   POST /v1/migrations/{id}/override      200 migration   (takes effect at once)
//   POST /v1/fleet/plan                    200 plan        (a dry run; operators only)
//   POST /v1/fleet/runs                    201 fleet run   (operators only, as every fleet route)
//   GET  /v1/fleet/runs                    200 {"runs":[...]}
//   GET  /v1/fleet/runs/{id}               200 fleet run with its report (fleet/report.h)
//   POST /v1/fleet/runs/{id}/{pause|resume}  200 fleet run
// Action bodies are JSON objects and may be empty ({}).
// A migration is the engine's JSON (workflow/service.h) plus "database" and
// "actions" (api/migration_view.h), passwords masked.
//
// Authentication (auth/authenticator.h): a bearer token or, over HTTPS with
// --client-ca, a client certificate; no credentials → 401 "unauthenticated",
// a known identity acting outside its team → 403 "forbidden". Operators act
// on everything; a team reads every database but acts only on its own (and
// their migrations), sees only their migrations and audit entries, and may
// not use the expert form. Without an Authenticator (development mode),
// every caller is an operator.
//
// Errors are {"error":"<message>","code":"<CodeName>"} with the HTTP status
// of the Status code (common/status.h); request problems the server detects
// itself: invalid JSON / non-object body → 400, unknown path → 404, wrong
// method → 405 (with an Allow header), body over 1 MiB → 413.
//
// Thread-safety: Start/Stop/port are called from one owner thread; requests
// are served concurrently on httplib's worker pool, so every dependency must
// be thread-safe (they are).
#pragma once

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "workflow/service.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace pgshift {
class AuditStore;
namespace auth {
class Authenticator;
}
namespace inventory {
class Inventory;
}
namespace fleet {
class FleetRunner;
class Starter;
}  // namespace fleet
}  // namespace pgshift

namespace pgshift::api {

// Largest request body accepted; bigger ones get 413.
inline constexpr size_t kMaxRequestBodyBytes = 1 << 20;
// Most audit entries GET /v1/audit returns (the newest).
inline constexpr int64_t kMaxAuditEntries = 1000;

struct TlsOptions {
  std::string cert, key;  // both set: HTTPS
  std::string client_ca;  // set: client certificates signed by it authenticate
  bool enabled() const { return !cert.empty(); }
};

struct ApiOptions {
  // Null: development mode (every caller is an operator). Must outlive the server.
  const auth::Authenticator* auth = nullptr;
  // Null: no inventory (GET /v1/databases is empty, migrate by name is refused).
  const inventory::Inventory* inventory = nullptr;
  // Null: no audit log and no by-name links.
  AuditStore* audit = nullptr;
  // Null: the fleet routes answer 409 (no fleet runner).
  fleet::FleetRunner* fleet = nullptr;
  // Starts by-name migrations (shared with the fleet runner so both keep one
  // live migration per database). Null: the server makes its own from
  // `inventory` and `audit`.
  fleet::Starter* starter = nullptr;
  TlsOptions tls;
  // Serves what no route matches (the web page at / and /ui/); true when it answered.
  std::function<bool(const httplib::Request&, httplib::Response&)> fallback;
};

// METHOD and path pattern of every route the server serves.
struct ServedRoute {
  std::string method;
  std::string pattern;
};
std::vector<ServedRoute> ServedRoutes();

class ApiServer {
 public:
  // `svc` must outlive the server. `port` 0 picks a free port (see port()).
  ApiServer(MigrationService& svc, std::string host, int port, ApiOptions options = {});
  ~ApiServer();  // Stops the server.
  ApiServer(const ApiServer&) = delete;
  ApiServer& operator=(const ApiServer&) = delete;

  // Binds host:port and serves on a background thread. Unavailable when the
  // address cannot be bound; FailedPrecondition when already started;
  // InvalidArgument when the TLS files cannot be loaded.
  Status Start();
  // The bound port (valid after a successful Start).
  int port() const { return port_; }
  // Stops accepting, finishes in-flight requests, joins the thread. Idempotent.
  void Stop();

 private:
  void Handle(const httplib::Request& req, httplib::Response& res);
  Result<std::unique_ptr<httplib::Server>> MakeServer() const;

  MigrationService& svc_;
  std::string host_;
  int port_;
  ApiOptions options_;
  std::unique_ptr<class Handlers> handlers_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
};

}  // namespace pgshift::api
