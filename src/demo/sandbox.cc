#include "demo/sandbox.h"

#include <httplib.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <thread>

#include "common/clock.h"
#include "common/dev_certs.h"
#include "common/os.h"
#include "common/process.h"
#include "load/ledger.h"
#include "load/pgbench_load.h"
#include "pg/conn.h"

namespace pgshift::demo {

using json = nlohmann::json;

std::string FindBinary(const std::string& name, const std::string& env,
                       const std::string& build_rel) {
  if (const char* v = std::getenv(env.c_str()); v && *v) return v;
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    for (const std::string& rel : {name, "../" + build_rel, "../../src/" + build_rel}) {
      auto p = self.parent_path() / rel;
      if (std::filesystem::exists(p, ec)) return std::filesystem::canonical(p, ec).string();
    }
  }
  return name;
}

Result<std::unique_ptr<Sandbox>> Sandbox::Start(SandboxOptions opts) {
  std::unique_ptr<Sandbox> sb(new Sandbox());
  sb->opts_ = opts;
  PGSHIFT_ASSIGN_OR_RETURN(sb->dir_, MakeTempDir("pgshift-sandbox"));
  PGSHIFT_RETURN_IF_ERROR(MakeDirOwnedBy(sb->dir_, opts.os_user, 0755));
  PGSHIFT_ASSIGN_OR_RETURN(int source_port, FreePort());
  PGSHIFT_ASSIGN_OR_RETURN(sb->target_port_, FreePort());
  sb->source_ = std::make_unique<LocalCluster>(
      ClusterSpec{.data_dir = sb->dir_ + "/source", .port = source_port, .os_user = opts.os_user});
  PGSHIFT_RETURN_IF_ERROR(sb->source_->InitDb());
  PGSHIFT_RETURN_IF_ERROR(sb->source_->Start());
  PGSHIFT_RETURN_IF_ERROR(sb->source_->Psql("create role app login").status());
  PGSHIFT_RETURN_IF_ERROR(sb->source_->Psql("create database app owner app").status());
  PGSHIFT_RETURN_IF_ERROR(load::InitPgbench(sb->SourceConninfo(), opts.pgbench_scale));
  PGSHIFT_RETURN_IF_ERROR(load::CreateLedgerTable(sb->SourceConninfo()));

  if (opts.router == "proxy") {
    // Applications will not know this password: only the proxy holds it.
    sb->app_password_ = "app-secret";
    PGSHIFT_RETURN_IF_ERROR(
        sb->source_
            ->Psql("set password_encryption = 'scram-sha-256'; alter role app password '" +
                   sb->app_password_ + "'")
            .status());
    const std::string hba = sb->dir_ + "/source/pg_hba.conf";
    PGSHIFT_ASSIGN_OR_RETURN(std::string text, ReadFile(hba));
    PGSHIFT_RETURN_IF_ERROR(
        WriteFileAtomic(hba, "host all app 127.0.0.1/32 scram-sha-256\n" + text));
    PGSHIFT_RETURN_IF_ERROR(sb->source_->Psql("select pg_reload_conf()").status());
    PGSHIFT_RETURN_IF_ERROR(sb->StartProxy(source_port));
  } else if (opts.router == "pgbouncer") {
    PgBouncerProcess::Options po;
    po.dir = sb->dir_ + "/pgbouncer";
    po.databases = {{"app", Endpoint{"127.0.0.1", source_port}, "app", ""}};
    po.users = {{"postgres", ""}, {"app", ""}};
    po.os_user = opts.os_user;
    PGSHIFT_ASSIGN_OR_RETURN(sb->pgbouncer_, PgBouncerProcess::Start(po));
  } else if (opts.router != "none") {
    return InvalidArgument("unknown sandbox router '" + opts.router +
                           "' (proxy, pgbouncer or none)");
  }
  if (opts.start_pgshiftd) PGSHIFT_RETURN_IF_ERROR(sb->StartPgshiftd());
  return sb;
}

Sandbox::~Sandbox() {
  (void)KillPgshiftd(SIGTERM);
  if (pgbouncer_) (void)pgbouncer_->Stop();
  (void)Stop(proxy_pid_, SIGTERM);
  // The expert form's target, and those migrate-by-name placed at dir/app-<suffix>.
  std::vector<std::string> targets = {target_dir()};
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir_, ec)) {
    if (e.path().filename().string().rfind("app-", 0) == 0) targets.push_back(e.path().string());
  }
  for (const auto& t : targets) {
    LocalCluster target(ClusterSpec{.data_dir = t, .port = target_port_, .os_user = opts_.os_user});
    if (target.Exists()) (void)target.Stop("immediate");
  }
  if (source_) (void)source_->Stop("immediate");
  if (!opts_.keep && !dir_.empty()) (void)RemoveTree(dir_);
}

std::string Sandbox::AppConninfo() const {
  if (pgbouncer_) return pgbouncer_->ClientConninfo("app", "app");
  if (proxy_pid_ > 0) {
    const std::string c = CertDir() + "/";
    if (!opts_.client_tls) {
      return "host=127.0.0.1 port=" + std::to_string(proxy_port_) +
             " dbname=app user=app sslmode=disable";
    }
    return "host=127.0.0.1 port=" + std::to_string(proxy_port_) +
           " dbname=app user=app sslmode=verify-full sslrootcert=" + c + "ca.crt sslcert=" + c +
           "app-client.crt sslkey=" + c + "app-client.key";
  }
  return SourceConninfo();
}

std::string Sandbox::SourceConninfo(const std::string& db, const std::string& user) const {
  return source_->Conninfo(db, user) +
         (user == "app" && !app_password_.empty() ? " password=" + app_password_ : "");
}

std::string Sandbox::TargetConninfo(const std::string& db, const std::string& user) const {
  return "host=127.0.0.1 port=" + std::to_string(target_port_) + " dbname=" + db + " user=" + user +
         (user == "app" && !app_password_.empty() ? " password=" + app_password_ : "");
}

Status Sandbox::StartProxy(int source_port) {
  const std::string certs = CertDir();
  PGSHIFT_RETURN_IF_ERROR(MakeDirOwnedBy(certs, "", 0700));
  PGSHIFT_RETURN_IF_ERROR(MakeDevCerts(certs));
  PGSHIFT_ASSIGN_OR_RETURN(proxy_port_, FreePort());
  PGSHIFT_ASSIGN_OR_RETURN(proxy_admin_port_, FreePort());
  json cfg = {
      {"listen", "127.0.0.1:" + std::to_string(proxy_port_)},
      {"admin_listen", "127.0.0.1:" + std::to_string(proxy_admin_port_)},
      {"threads", 2},
      {"tls",
       {{"cert", certs + "/server.crt"},
        {"key", certs + "/server.key"},
        {"client_ca", certs + "/ca.crt"}}},
      {"routes",
       {{{"name", "app"},
         {"database", opts_.route_database},
         {"upstream", {{"host", "127.0.0.1"}, {"port", source_port}}},
         {"hold_timeout_ms", 10000},
         {"uncarriable", opts_.route_uncarriable},
         {"allow_plaintext", !opts_.client_tls}}}},
      {"policy",
       {{{"identity", "app-client"},
         {"databases", {opts_.route_database}},
         {"roles", opts_.route_roles}}}},
      {"credentials", {{{"role", "app"}, {"password", app_password_}}}},
  };
  PGSHIFT_RETURN_IF_ERROR(WriteFileAtomic(dir_ + "/proxy.json", cfg.dump(2)));
  return SpawnProxy();
}

Status Sandbox::KillProxy(int sig) { return Stop(proxy_pid_, sig); }

Status Sandbox::RestartProxy() {
  if (proxy_pid_ > 0) return FailedPrecondition("pgshift-proxy is still running");
  return SpawnProxy();
}

Status Sandbox::SpawnProxy() {
  const std::string path = dir_ + "/proxy.json";
  const std::string bin = opts_.proxy_path.empty()
                              ? FindBinary("pgshift-proxy", "PGSHIFT_PROXY", "proxy/pgshift-proxy")
                              : opts_.proxy_path;
  PGSHIFT_ASSIGN_OR_RETURN(proxy_pid_, DefaultRunner().Spawn({.argv = {bin, "--config", path},
                                                              .output_file = dir_ + "/proxy.log"}));
  const int64_t deadline = MonotonicMs() + 15000;
  while (!PortOpen("127.0.0.1", proxy_admin_port_) || !PortOpen("127.0.0.1", proxy_port_)) {
    if (ChildExited(proxy_pid_)) {
      proxy_pid_ = -1;
      return Unavailable("pgshift-proxy (" + bin + ") exited at start; see " + dir_ + "/proxy.log");
    }
    if (MonotonicMs() > deadline) return Timeout("pgshift-proxy did not start within 15 s");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return Status::OK();
}

Result<std::vector<std::string>> Sandbox::WriteInventory() {
  const std::vector<std::string> flags = {"--registry", dir_ + "/registry.json"};
  if (!admin_secret_.empty()) return flags;  // written at the first start
  admin_secret_ = "sandbox-admin-" + std::to_string(MonotonicUs());
  PGSHIFT_RETURN_IF_ERROR(
      source_->Psql("alter role postgres password '" + admin_secret_ + "'").status());
  json routers = json::array();
  json router = RouterConfig();
  if (router["type"] != "none") {
    router.erase("route");
    router["name"] = "sandbox-" + router["type"].get<std::string>();
    routers.push_back(router);
  }
  const json placement = {
      {"data_root", dir_},
      {"ports", std::to_string(target_port_) + "-" + std::to_string(target_port_)},
      {"os_user", opts_.os_user}};
  const json source = {{"host", "127.0.0.1"},
                       {"port", source_->spec().port},
                       {"user", "postgres"},
                       {"credential", "source-admin"}};
  const json registry = {{"secrets", "secrets.json"},
                         {"routers", routers},
                         {"databases",
                          {{"app",
                            {{"team", kSandboxTeam},
                             {"source", source},
                             {"placement", placement},
                             {"tags", {"sandbox"}}}}}}};
  const std::string secrets = dir_ + "/secrets.json";
  PGSHIFT_RETURN_IF_ERROR(WriteFileAtomic(secrets, json{{"source-admin", admin_secret_}}.dump()));
  if (chmod(secrets.c_str(), 0600) != 0) return Internal("cannot chmod 600 " + secrets);
  PGSHIFT_RETURN_IF_ERROR(WriteFileAtomic(dir_ + "/registry.json", registry.dump(2)));
  return flags;
}

json Sandbox::MigrationSpec(const json& options) const {
  json spec = {
      {"name", "sandbox-app"},
      {"source", {{"conninfo", SourceConninfo("postgres", "postgres")}}},
      {"target", {{"data_dir", target_dir()}, {"port", target_port_}, {"os_user", opts_.os_user}}},
      {"router", RouterConfig()},
      {"options", json::object()}};
  for (const auto& [k, v] : options.items()) spec["options"][k] = v;
  return spec;
}

json Sandbox::RouterConfig() const {
  if (pgbouncer_) return pgbouncer_->RouterConfig("app");
  if (proxy_pid_ > 0) {
    return {{"type", "proxy"},
            {"admin_url", "http://127.0.0.1:" + std::to_string(proxy_admin_port_)},
            {"route", "app"}};
  }
  return {{"type", "none"}};
}

Status Sandbox::StartPgshiftd() {
  if (pgshiftd_pid_ > 0) return Status::OK();
  PGSHIFT_ASSIGN_OR_RETURN(api_port_, FreePort());
  const std::string bin = opts_.pgshiftd_path.empty()
                              ? FindBinary("pgshiftd", "PGSHIFTD", "daemon/pgshiftd")
                              : opts_.pgshiftd_path;
  std::vector<std::string> argv = {bin, "--state", StatePath(), "--listen",
                                   "127.0.0.1:" + std::to_string(api_port_)};
  if (opts_.inventory) {
    PGSHIFT_ASSIGN_OR_RETURN(auto flags, WriteInventory());
    argv.insert(argv.end(), flags.begin(), flags.end());
  }
  argv.insert(argv.end(), opts_.pgshiftd_args.begin(), opts_.pgshiftd_args.end());
  PGSHIFT_ASSIGN_OR_RETURN(pgshiftd_pid_,
                           DefaultRunner().Spawn({.argv = argv, .output_file = PgshiftdLog()}));
  const int64_t deadline = MonotonicMs() + 15000;
  while (MonotonicMs() < deadline) {
    auto r = Api("GET", "/healthz");
    if (r.ok() && (*r)["status"] == 200) return Status::OK();
    if (ChildExited(pgshiftd_pid_)) {
      pgshiftd_pid_ = -1;
      return Unavailable("pgshiftd (" + bin + ") exited at start; see " + PgshiftdLog());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return Timeout("pgshiftd did not answer on " + ApiUrl() + " within 15 s; see " + PgshiftdLog());
}

std::string Sandbox::StatePath() const {
  return opts_.state_path.empty() ? dir_ + "/state.db" : opts_.state_path;
}

Status Sandbox::KillPgshiftd(int sig) { return Stop(pgshiftd_pid_, sig); }

bool Sandbox::PgshiftdRunning() {
  if (pgshiftd_pid_ > 0 && ChildExited(pgshiftd_pid_)) pgshiftd_pid_ = -1;  // reaped
  return pgshiftd_pid_ > 0;
}

Status Sandbox::CreateCdcSlot(const std::string& slot, load::CdcPlugin plugin) {
  PGSHIFT_RETURN_IF_ERROR(source_->Psql("alter role app replication").status());
  return source_
      ->Psql("select pg_create_logical_replication_slot(" + QuoteLiteral(slot) + ", " +
                 QuoteLiteral(load::CdcPluginName(plugin)) +
                 ") where not exists (select from pg_replication_slots where slot_name = " +
                 QuoteLiteral(slot) + ")",
             "app")
      .status();
}

std::unique_ptr<load::CdcConsumer> Sandbox::CdcConsumerFor(const std::string& slot,
                                                           load::CdcPlugin plugin,
                                                           bool through_router) const {
  return std::make_unique<load::CdcConsumer>(
      load::CdcConsumerOptions{.conninfo = through_router ? AppConninfo() : SourceConninfo(),
                               .slot = slot,
                               .plugin = plugin,
                               .output_file = dir_ + "/cdc-" + slot + ".out"});
}

Status Sandbox::Stop(pid_t& pid, int sig) {
  if (pid <= 0) return Status::OK();
  (void)StopChild(pid, sig, 10000);
  pid = -1;
  return Status::OK();
}

Result<json> Sandbox::Api(const std::string& method, const std::string& path,
                          const std::string& body) const {
  httplib::Client cli("127.0.0.1", api_port_);
  cli.set_connection_timeout(2);
  cli.set_read_timeout(30);
  httplib::Headers headers;
  if (!opts_.api_token.empty()) headers.emplace("Authorization", "Bearer " + opts_.api_token);
  httplib::Result res = method == "GET" ? cli.Get(path.c_str(), headers)
                                        : cli.Post(path.c_str(), headers, body, "application/json");
  if (!res) {
    return Unavailable("pgshiftd at " + ApiUrl() + " did not answer " + method + " " + path);
  }
  json parsed = json::parse(res->body, nullptr, false);
  return json{{"status", res->status}, {"body", parsed.is_discarded() ? json(res->body) : parsed}};
}

Result<json> Sandbox::WaitFor(const std::string& id, const std::function<bool(const json&)>& pred,
                              int64_t timeout_ms) const {
  const int64_t deadline = MonotonicMs() + timeout_ms;
  json last;
  while (MonotonicMs() < deadline) {
    auto r = Api("GET", "/v1/migrations/" + id);
    if (r.ok() && (*r)["status"] == 200) {
      last = (*r)["body"];
      if (pred(last)) return last;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return Timeout("migration " + id + " did not reach the expected state within " +
                 std::to_string(timeout_ms) + " ms; last: phase=" + last.value("phase", "?") +
                 " state=" + last.value("state", "?") + " error=" + last.value("error", ""));
}

}  // namespace pgshift::demo
