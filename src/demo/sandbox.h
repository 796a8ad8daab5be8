// Sandbox: a whole local pgshift installation in one temporary directory —
// a source cluster with an application database, a role `app` and data
// (pgbench tables + the ledger table), a router in front of it, and a
// pgshiftd process with its own state file. `pgshift demo` and the
// end-to-end tests run migrations in it. The destructor stops every process
// it started (pgshiftd, router, source and target clusters) and removes the
// directory unless `keep`.
// Not thread-safe, except Api() which may be called from any thread.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"
#include "load/cdc_consumer.h"
#include "provider/local/local_cluster.h"
#include "router/pgbouncer_process.h"

namespace pgshift::demo {

struct SandboxOptions {
  std::string router = "proxy";  // proxy | pgbouncer | none
  std::string pgshiftd_path;     // "" = next to this binary, or $PGSHIFTD
  std::string proxy_path;        // "" = next to this binary, or $PGSHIFT_PROXY
  int pgbench_scale = 1;
  // proxy router: clients use mutual TLS (the default) or, when false, plain
  // text on a route that allows it (to compare with a plain-text PgBouncer).
  bool client_tls = true;
  // proxy router: the database the route "app" serves and the roles the
  // client certificate may use on it. A suite that runs in a database of its
  // own as many roles (PostgreSQL's regression suite) is routed with
  // {"regression", {"*"}}; the migration then moves that database's traffic.
  std::string route_database = "app";
  std::vector<std::string> route_roles = {"app"};
  // proxy router: the route's "uncarriable" ("end" | "wait"; proxy/config.h).
  std::string route_uncarriable = "end";
  bool keep = false;
  std::string os_user = "postgres";
  // Self-service: pgshiftd gets an inventory (--registry) describing database
  // "app" (team kSandboxTeam, its router, the source's admin endpoint with a
  // password from a 0600 secrets file, placement in dir() on target_port()),
  // so it is migrated by name: Api("POST", "/v1/databases/app/migrations").
  bool inventory = false;
  std::vector<std::string> pgshiftd_args;  // more pgshiftd flags (e.g. --tokens)
  std::string state_path;                  // pgshiftd's --state; "" = dir()/state.db
  // Start pgshiftd with the sandbox; false: the test starts it (StartPgshiftd)
  // or drives this sandbox's migrations from another sandbox's pgshiftd.
  bool start_pgshiftd = true;
  std::string api_token;  // Api() sends it as a bearer token
};

inline constexpr const char* kSandboxTeam = "sandbox";

class Sandbox {
 public:
  static Result<std::unique_ptr<Sandbox>> Start(SandboxOptions opts);
  ~Sandbox();

  const std::string& dir() const { return dir_; }
  // The application's connection: through the router when there is one.
  std::string AppConninfo() const;
  std::string SourceConninfo(const std::string& db = "app", const std::string& user = "app") const;
  std::string TargetConninfo(const std::string& db = "app", const std::string& user = "app") const;
  int target_port() const { return target_port_; }
  // proxy router: where clients connect, and the dev certificates (ca.crt,
  // app-client.crt/.key) they present with mutual TLS.
  int proxy_port() const { return proxy_port_; }
  std::string CertDir() const { return dir_ + "/certs"; }
  std::string target_dir() const { return dir_ + "/target"; }
  LocalCluster& source() { return *source_; }
  std::string ApiUrl() const { return "http://127.0.0.1:" + std::to_string(api_port_); }

  // A migration spec for this sandbox; `options` is merged into spec.options.
  nlohmann::json MigrationSpec(const nlohmann::json& options) const;
  nlohmann::json RouterConfig() const;

  // REST call to pgshiftd: {"status":N,"body":json}.
  Result<nlohmann::json> Api(const std::string& method, const std::string& path,
                             const std::string& body = "") const;
  // Polls GET /v1/migrations/{id} until `pred` holds; Timeout after timeout_ms.
  Result<nlohmann::json> WaitFor(const std::string& id,
                                 const std::function<bool(const nlohmann::json&)>& pred,
                                 int64_t timeout_ms) const;

  // The source superuser's password (inventory only): in the secrets file,
  // never in an API answer or pgshiftd's log.
  const std::string& admin_secret() const { return admin_secret_; }
  // The role `app` authenticates with SCRAM when the proxy fronts the source:
  // the proxy holds the password and applications present only a certificate.
  const std::string& app_password() const { return app_password_; }
  const std::string& router() const { return opts_.router; }

  // CDC: gives role app the REPLICATION attribute and creates logical slot
  // `slot` with `plugin` in database app on the source (unless it exists).
  Status CreateCdcSlot(const std::string& slot, load::CdcPlugin plugin);
  // A consumer of `slot` (not started) connecting as role app through the
  // router, or straight to the source (as a consumer that bypasses the
  // router would); its output is dir()/cdc-<slot>.out.
  std::unique_ptr<load::CdcConsumer> CdcConsumerFor(const std::string& slot, load::CdcPlugin plugin,
                                                    bool through_router = true) const;

  Status StartPgshiftd();
  Status KillPgshiftd(int sig);  // e.g. SIGKILL; waits for the process to end
  // False once pgshiftd exited on its own (e.g. a test fault crashed it).
  bool PgshiftdRunning();
  pid_t pgshiftd_pid() const { return pgshiftd_pid_; }
  std::string PgshiftdLog() const { return dir_ + "/pgshiftd.log"; }
  std::string StatePath() const;
  // The proxy router, for fault tests: stops it with `sig` (e.g. SIGKILL),
  // and starts it again on the same ports from its config file as it left
  // it (the routes it saved). Its log goes on in dir()/proxy.log.
  Status KillProxy(int sig);
  Status RestartProxy();

 private:
  Sandbox() = default;
  SandboxOptions opts_;
  std::string dir_;
  std::unique_ptr<LocalCluster> source_;
  std::unique_ptr<PgBouncerProcess> pgbouncer_;
  Status StartProxy(int source_port);
  // Spawns pgshift-proxy with dir()/proxy.json; returns once both ports answer.
  Status SpawnProxy();
  // registry.json + secrets.json for `inventory` (once); the pgshiftd flags to read them.
  Result<std::vector<std::string>> WriteInventory();
  // Stops one of our child processes and forgets its pid.
  Status Stop(pid_t& pid, int sig);
  pid_t proxy_pid_ = -1;
  int proxy_port_ = 0;
  int proxy_admin_port_ = 0;
  std::string app_password_;
  std::string admin_secret_;
  int target_port_ = 0;
  int api_port_ = 0;
  pid_t pgshiftd_pid_ = -1;
};

// A sibling binary: $`env`, else next to /proc/self/exe in the install or
// build-tree layout (`build_rel`, e.g. "daemon/pgshiftd"), else `name` on PATH.
std::string FindBinary(const std::string& name, const std::string& env,
                       const std::string& build_rel);

}  // namespace pgshift::demo
