// ApiServer: pgshiftd's REST API, serving a MigrationService over HTTP/JSON.
//
// Routes (every response is application/json):
//   GET  /healthz                          200 {"ok":true}
//   GET  /v1/phases                        200 [{"name","order","branch","in_hold","terminal"}]
//                                              (the phase table, model/phase.h)
//   POST /v1/migrations                    201 migration       (body: the spec)
//   GET  /v1/migrations                    200 {"migrations":[...]}
//   GET  /v1/migrations/{id}               200 migration
//   GET  /v1/migrations/{id}/events        200 {"events":[...]}
//   POST /v1/migrations/{id}/cutover       202 migration       (work starts in the background)
//   POST /v1/migrations/{id}/rollback      202 migration
//   POST /v1/migrations/{id}/finalize      202 migration
//   POST /v1/migrations/{id}/override      200 migration       (takes effect at once)
// Action bodies are JSON objects and may be empty ({}).
//
// Errors are {"error":"<message>","code":"<CodeName>"} with the HTTP status
// mapped from the Status code (see workflow/service.h); request problems the
// server itself detects: invalid JSON / non-object body → 400
// (invalid_argument), unknown path → 404 (not_found), wrong method → 405
// (invalid_argument, with an Allow header), body over 1 MiB → 413
// (invalid_argument).
//
// Thread-safety: Start/Stop/port are called from one owner thread; requests
// are served concurrently on httplib's worker pool, so the MigrationService
// must be thread-safe (its contract says it is).
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "common/status.h"
#include "workflow/service.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace pgshift::api {

// Largest request body accepted; bigger ones get 413.
inline constexpr size_t kMaxRequestBodyBytes = 1 << 20;

class ApiServer {
 public:
  // `svc` must outlive the server. `port` 0 picks a free port (see port()).
  ApiServer(MigrationService& svc, std::string host, int port);
  ~ApiServer();  // Stops the server.
  ApiServer(const ApiServer&) = delete;
  ApiServer& operator=(const ApiServer&) = delete;

  // Binds host:port and serves on a background thread. Unavailable when the
  // address cannot be bound; FailedPrecondition when already started.
  Status Start();
  // The bound port (valid after a successful Start).
  int port() const { return port_; }
  // Stops accepting, finishes in-flight requests, joins the thread. Idempotent.
  void Stop();

 private:
  void Handle(const httplib::Request& req, httplib::Response& res);
  void HandleMigrations(const httplib::Request& req, httplib::Response& res,
                        const std::string& rest);

  MigrationService& svc_;
  std::string host_;
  int port_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
};

}  // namespace pgshift::api
