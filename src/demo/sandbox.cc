#include "demo/sandbox.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <thread>

#include <httplib.h>

#include "common/clock.h"
#include "common/os.h"
#include "load/ledger.h"
#include "load/pgbench_load.h"

namespace pgshift::demo {

using json = nlohmann::json;

std::string FindPgshiftd() {
  if (const char* env = std::getenv("PGSHIFTD"); env && *env) return env;
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    for (const char* rel : {"pgshiftd", "../daemon/pgshiftd", "../src/daemon/pgshiftd"}) {
      auto p = self.parent_path() / rel;
      if (std::filesystem::exists(p, ec)) return std::filesystem::canonical(p, ec).string();
    }
  }
  return "pgshiftd";
}

Result<std::unique_ptr<Sandbox>> Sandbox::Start(SandboxOptions opts) {
  std::unique_ptr<Sandbox> sb(new Sandbox());
  sb->opts_ = opts;
  PGSHIFT_ASSIGN_OR_RETURN(sb->dir_, MakeTempDir("pgshift-sandbox"));
  PGSHIFT_RETURN_IF_ERROR(MakeDirOwnedBy(sb->dir_, opts.os_user, 0755));
  PGSHIFT_ASSIGN_OR_RETURN(int source_port, FreePort());
  PGSHIFT_ASSIGN_OR_RETURN(sb->target_port_, FreePort());
  sb->source_ = std::make_unique<LocalCluster>(ClusterSpec{
      .data_dir = sb->dir_ + "/source", .port = source_port, .os_user = opts.os_user});
  PGSHIFT_RETURN_IF_ERROR(sb->source_->InitDb());
  PGSHIFT_RETURN_IF_ERROR(sb->source_->Start());
  PGSHIFT_RETURN_IF_ERROR(sb->source_->Psql("create role app login").status());
  PGSHIFT_RETURN_IF_ERROR(sb->source_->Psql("create database app owner app").status());
  PGSHIFT_RETURN_IF_ERROR(load::InitPgbench(sb->SourceConninfo(), opts.pgbench_scale));
  PGSHIFT_RETURN_IF_ERROR(load::CreateLedgerTable(sb->SourceConninfo()));

  if (opts.router == "pgbouncer") {
    PgBouncerProcess::Options po;
    po.dir = sb->dir_ + "/pgbouncer";
    po.databases = {{"app", Endpoint{"127.0.0.1", source_port}, "app", ""}};
    po.users = {{"postgres", ""}, {"app", ""}};
    po.os_user = opts.os_user;
    PGSHIFT_ASSIGN_OR_RETURN(sb->pgbouncer_, PgBouncerProcess::Start(po));
  } else if (opts.router != "none") {
    return InvalidArgument("unknown sandbox router '" + opts.router + "' (pgbouncer or none)");
  }
  PGSHIFT_RETURN_IF_ERROR(sb->StartPgshiftd());
  return sb;
}

Sandbox::~Sandbox() {
  (void)KillPgshiftd(SIGTERM);
  if (pgbouncer_) (void)pgbouncer_->Stop();
  LocalCluster target(ClusterSpec{.data_dir = target_dir(), .port = target_port_,
                                  .os_user = opts_.os_user});
  if (target.Exists()) (void)target.Stop("immediate");
  if (source_) (void)source_->Stop("immediate");
  if (!opts_.keep && !dir_.empty()) (void)RemoveTree(dir_);
}

std::string Sandbox::AppConninfo() const {
  if (pgbouncer_) return pgbouncer_->ClientConninfo("app", "app");
  return SourceConninfo();
}

std::string Sandbox::SourceConninfo(const std::string& db, const std::string& user) const {
  return source_->Conninfo(db, user);
}

std::string Sandbox::TargetConninfo(const std::string& db, const std::string& user) const {
  return "host=127.0.0.1 port=" + std::to_string(target_port_) + " dbname=" + db + " user=" + user;
}

json Sandbox::MigrationSpec(const json& options) const {
  json spec = {{"name", "sandbox-app"},
               {"source", {{"conninfo", SourceConninfo("postgres", "postgres")}}},
               {"target", {{"data_dir", target_dir()}, {"port", target_port_},
                           {"os_user", opts_.os_user}}},
               {"router", pgbouncer_ ? pgbouncer_->RouterConfig("app") : json{{"type", "none"}}},
               {"options", json::object()}};
  for (const auto& [k, v] : options.items()) spec["options"][k] = v;
  return spec;
}

Status Sandbox::StartPgshiftd() {
  if (pgshiftd_pid_ > 0) return Status::OK();
  PGSHIFT_ASSIGN_OR_RETURN(api_port_, FreePort());
  const std::string bin = opts_.pgshiftd_path.empty() ? FindPgshiftd() : opts_.pgshiftd_path;
  PGSHIFT_ASSIGN_OR_RETURN(
      pgshiftd_pid_,
      DefaultRunner().Spawn({.argv = {bin, "--state", dir_ + "/state.db", "--listen",
                                      "127.0.0.1:" + std::to_string(api_port_)},
                             .output_file = PgshiftdLog()}));
  const int64_t deadline = MonotonicMs() + 15000;
  while (MonotonicMs() < deadline) {
    auto r = Api("GET", "/healthz");
    if (r.ok() && (*r)["status"] == 200) return Status::OK();
    int status = 0;
    if (waitpid(pgshiftd_pid_, &status, WNOHANG) == pgshiftd_pid_) {
      pgshiftd_pid_ = -1;
      return Unavailable("pgshiftd (" + bin + ") exited at start; see " + PgshiftdLog());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return Timeout("pgshiftd did not answer on " + ApiUrl() + " within 15 s; see " + PgshiftdLog());
}

Status Sandbox::KillPgshiftd(int sig) {
  if (pgshiftd_pid_ <= 0) return Status::OK();
  kill(pgshiftd_pid_, sig);
  const int64_t deadline = MonotonicMs() + 10000;
  int status = 0;
  while (waitpid(pgshiftd_pid_, &status, WNOHANG) == 0) {
    if (MonotonicMs() > deadline) {
      kill(pgshiftd_pid_, SIGKILL);
      waitpid(pgshiftd_pid_, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  pgshiftd_pid_ = -1;
  return Status::OK();
}

Result<json> Sandbox::Api(const std::string& method, const std::string& path,
                          const std::string& body) const {
  httplib::Client cli("127.0.0.1", api_port_);
  cli.set_connection_timeout(2);
  cli.set_read_timeout(30);
  httplib::Result res = method == "GET" ? cli.Get(path.c_str())
                                        : cli.Post(path.c_str(), body, "application/json");
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
