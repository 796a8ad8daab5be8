#include "bench/fleet/fleet_env.h"

#include <httplib.h>
#include <signal.h>

#include <cstdio>
#include <filesystem>
#include <mutex>
#include <thread>

#include "bench/fleet/parallel.h"
#include "bench/fleet/resources.h"
#include "common/clock.h"
#include "common/dev_certs.h"
#include "common/os.h"
#include "common/process.h"
#include "load/ledger.h"
#include "pg/conn.h"

namespace pgshift::bench {

using json = nlohmann::json;

namespace {

constexpr char kOsUser[] = "postgres";
constexpr char kAppPassword[] = "fleet-app-secret";
constexpr char kRouterName[] = "fleet-proxy";
constexpr char kTeam[] = "fleet";
constexpr char kTemplateDb[] = "app";
// How long a child process gets to answer at start and to stop.
constexpr int64_t kStartWaitMs = 30000;
constexpr int64_t kStopGraceMs = 10000;
// The proxy's hold of a route during a cutover: pgshiftd releases it sooner.
constexpr int kHoldTimeoutMs = 10000;

// A small cluster: PostgreSQL 15's floor for shared memory and a handful of
// connections (the ledger writer, pgshiftd's sessions, the base backup and
// the standby's stream), WAL kept small (1 MB segments, see MakeTemplate).
// Parallel query and autovacuum workers are bounded to one process each.
const std::map<std::string, std::string> kSmallCluster = {
    {"shared_buffers", "1MB"},
    {"max_connections", "20"},
    {"max_wal_senders", "4"},
    {"max_replication_slots", "4"},
    {"max_worker_processes", "2"},
    {"max_parallel_workers", "0"},
    {"max_parallel_workers_per_gather", "0"},
    {"autovacuum_max_workers", "1"},
    {"wal_buffers", "64kB"},
    {"min_wal_size", "4MB"},
    {"max_wal_size", "32MB"},
    {"huge_pages", "off"},
    {"log_min_messages", "warning"},
};
constexpr char kWalSegmentMb[] = "1";

std::string Name(int index) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "d%04d", index + 1);
  return buf;
}

std::string Wave(int index, int wave_size) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "w%02d", index / std::max(1, wave_size) + 1);
  return buf;
}

// Spawns `argv`, then waits until `port` answers (or the child exits).
Result<pid_t> SpawnAndWait(const std::vector<std::string>& argv, const std::string& log, int port) {
  PGSHIFT_ASSIGN_OR_RETURN(pid_t pid, DefaultRunner().Spawn({.argv = argv, .output_file = log}));
  const int64_t deadline = MonotonicMs() + kStartWaitMs;
  while (!PortOpen("127.0.0.1", port)) {
    if (ChildExited(pid)) return Unavailable(argv[0] + " exited at start; see " + log);
    if (MonotonicMs() > deadline) {
      StopChild(pid, SIGKILL, kStopGraceMs);
      return Timeout(argv[0] + " did not listen on " + std::to_string(port) + "; see " + log);
    }
    DefaultClock().SleepMs(50);
  }
  return pid;
}

}  // namespace

Result<std::unique_ptr<FleetEnv>> FleetEnv::Create(FleetEnvOptions opts) {
  std::unique_ptr<FleetEnv> env(new FleetEnv());
  env->opts_ = std::move(opts);
  PGSHIFT_ASSIGN_OR_RETURN(env->dir_, MakeTempDir("pgshift-fleet-bench"));
  PGSHIFT_RETURN_IF_ERROR(MakeDirOwnedBy(env->dir_, kOsUser, 0755));
  for (const char* sub : {"/src", "/targets"}) {
    PGSHIFT_RETURN_IF_ERROR(MakeDirOwnedBy(env->dir_ + sub, kOsUser, 0755));
  }
  PGSHIFT_RETURN_IF_ERROR(env->MakeTemplate());
  return env;
}

// initdb once; every source is a copy (initdb per cluster would take most of
// the set-up time). The copies share a system identifier, which nothing
// compares across clusters.
Status FleetEnv::MakeTemplate() {
  template_dir_ = dir_ + "/template/data";
  PGSHIFT_ASSIGN_OR_RETURN(int port, FreePort());
  LocalCluster tmpl(ClusterSpec{
      .data_dir = template_dir_, .port = port, .os_user = kOsUser, .settings = kSmallCluster});
  PGSHIFT_RETURN_IF_ERROR(tmpl.InitDb());
  // 1 MB WAL segments instead of 16: a source and its target each keep a
  // few, and 800 clusters would otherwise hold ~25 GB of empty WAL.
  PGSHIFT_RETURN_IF_ERROR(
      RunChecked(DefaultRunner(),
                 {.argv = {tmpl.Bin("pg_resetwal"), std::string("--wal-segsize=") + kWalSegmentMb,
                           "-D", template_dir_},
                  .run_as = kOsUser,
                  .timeout_ms = kStartWaitMs})
          .status()
          .Wrap("pg_resetwal"));
  PGSHIFT_RETURN_IF_ERROR(tmpl.Start());
  Status st = tmpl.Psql("create role app login").status();
  if (st.ok()) st = tmpl.Psql("create database app owner app").status();
  if (st.ok()) st = load::CreateLedgerTable(tmpl.Conninfo(kTemplateDb, "app"));
  if (st.ok()) {
    st = tmpl.Psql(std::string("set password_encryption = 'scram-sha-256'; alter role app "
                               "password '") +
                   kAppPassword + "'")
             .status();
  }
  Status stopped = tmpl.Stop("fast");
  PGSHIFT_RETURN_IF_ERROR(st);
  PGSHIFT_RETURN_IF_ERROR(stopped);
  // Role app only with its password: applications reach it through the proxy.
  const std::string hba = template_dir_ + "/pg_hba.conf";
  PGSHIFT_ASSIGN_OR_RETURN(std::string text, ReadFile(hba));
  return WriteFileAtomic(hba, "host all app 127.0.0.1/32 scram-sha-256\n" + text);
}

Result<FleetSource> FleetEnv::MakeSource(int index) {
  FleetSource s;
  s.name = Name(index);
  const std::string parent = dir_ + "/src/" + s.name;
  PGSHIFT_RETURN_IF_ERROR(MakeDirOwnedBy(parent, kOsUser, 0755));
  PGSHIFT_RETURN_IF_ERROR(RunChecked(DefaultRunner(), {.argv = {"cp", "-a", template_dir_, parent},
                                                       .run_as = kOsUser,
                                                       .timeout_ms = kStartWaitMs})
                              .status());
  PGSHIFT_ASSIGN_OR_RETURN(s.port, FreePort());
  s.cluster = std::make_unique<LocalCluster>(
      ClusterSpec{.data_dir = parent + "/data", .port = s.port, .os_user = kOsUser});
  PGSHIFT_RETURN_IF_ERROR(s.cluster->AppendSettings(
      {{"port", std::to_string(s.port)}, {"unix_socket_directories", "'" + parent + "'"}}));
  PGSHIFT_RETURN_IF_ERROR(s.cluster->Start());
  PGSHIFT_ASSIGN_OR_RETURN(auto conn, PgConn::Connect(AdminConninfo(s.port, "postgres")));
  PGSHIFT_RETURN_IF_ERROR(
      conn->Exec("alter database " + std::string(kTemplateDb) + " rename to " + s.name));
  return s;
}

std::string FleetEnv::ShortOf() const {
  const HostUsage h = ReadHostUsage(dir_);
  char buf[320];
  if (h.mem_available_mb < opts_.mem_reserve_mb) {
    std::snprintf(buf, sizeof buf, "memory: MemAvailable %.0f MB is below the reserve of %lld MB",
                  h.mem_available_mb, static_cast<long long>(opts_.mem_reserve_mb));
  } else if (h.disk_free_mb < opts_.disk_reserve_mb) {
    std::snprintf(buf, sizeof buf, "disk: %.0f MB free is below the reserve of %lld MB",
                  h.disk_free_mb, static_cast<long long>(opts_.disk_reserve_mb));
  } else if (h.fds_max > 0 && h.fds_open * 10 > h.fds_max * 9) {
    std::snprintf(buf, sizeof buf, "file descriptors: %lld of fs.file-max %lld open",
                  static_cast<long long>(h.fds_open), static_cast<long long>(h.fds_max));
  } else if (h.pid_max > 0 && h.processes * 10 > h.pid_max * 9) {
    std::snprintf(buf, sizeof buf, "processes: %lld of kernel.pid_max %lld",
                  static_cast<long long>(h.processes), static_cast<long long>(h.pid_max));
  } else {
    return "";
  }
  return buf;
}

Status FleetEnv::AddSources(int n) {
  std::mutex mu;
  int next = static_cast<int>(sources_.size());
  const int end = next + n;
  std::vector<FleetSource> made;
  auto work = [&] {
    while (true) {
      int index;
      {
        std::lock_guard lock(mu);
        if (next >= end || !limit_.empty()) return;
        if (opts_.interrupted && *opts_.interrupted) {
          limit_ = "interrupted";
          return;
        }
        if (std::string s = ShortOf(); !s.empty()) {
          limit_ = s + " after " + std::to_string(made.size()) + " clusters";
          return;
        }
        index = next++;
      }
      auto s = MakeSource(index);
      std::lock_guard lock(mu);
      if (!s.ok()) {
        if (limit_.empty()) {
          limit_ = "cluster " + Name(index) + " failed after " + std::to_string(made.size()) +
                   " (" + Describe(ReadHostUsage(dir_)) + "): " + s.status().message();
        }
        return;
      }
      made.push_back(std::move(*s));
      if (made.size() % 50 == 0) {
        std::printf("  %zu sources up (%s)\n", made.size(), Describe(ReadHostUsage(dir_)).c_str());
        std::fflush(stdout);
      }
    }
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < std::max(1, opts_.setup_threads); ++i) threads.emplace_back(work);
  for (auto& t : threads) t.join();
  std::sort(made.begin(), made.end(),
            [](const FleetSource& a, const FleetSource& b) { return a.name < b.name; });
  for (auto& s : made) sources_.push_back(std::move(s));
  if (sources_.empty()) return FailedPrecondition("no source cluster could be made: " + limit_);
  return Status::OK();
}

Status FleetEnv::StartProxy() {
  const std::string certs = dir_ + "/certs";
  PGSHIFT_RETURN_IF_ERROR(MakeDirOwnedBy(certs, "", 0700));
  PGSHIFT_RETURN_IF_ERROR(MakeDevCerts(certs));
  PGSHIFT_ASSIGN_OR_RETURN(proxy_port_, FreePort());
  PGSHIFT_ASSIGN_OR_RETURN(proxy_admin_port_, FreePort());
  json routes = json::array();
  for (const auto& s : sources_) {
    routes.push_back({{"name", s.name},
                      {"database", s.name},
                      {"upstream", {{"host", "127.0.0.1"}, {"port", s.port}}},
                      {"hold_timeout_ms", kHoldTimeoutMs}});
  }
  const json cfg = {
      {"listen", "127.0.0.1:" + std::to_string(proxy_port_)},
      {"admin_listen", "127.0.0.1:" + std::to_string(proxy_admin_port_)},
      {"threads", opts_.proxy_threads},
      {"tls",
       {{"cert", certs + "/server.crt"},
        {"key", certs + "/server.key"},
        {"client_ca", certs + "/ca.crt"}}},
      {"routes", routes},
      {"policy", {{{"identity", "app-client"}, {"databases", {"*"}}, {"roles", {"app"}}}}},
      {"credentials", {{{"role", "app"}, {"password", kAppPassword}}}},
  };
  PGSHIFT_RETURN_IF_ERROR(WriteFileAtomic(dir_ + "/proxy.json", cfg.dump(2)));
  PGSHIFT_ASSIGN_OR_RETURN(proxy_pid_,
                           SpawnAndWait({opts_.proxy_path, "--config", dir_ + "/proxy.json"},
                                        dir_ + "/proxy.log", proxy_admin_port_));
  return Status::OK();
}

Status FleetEnv::StartPgshiftd() {
  json dbs = json::object();
  const std::string ports =
      std::to_string(opts_.target_port_min) + "-" + std::to_string(opts_.target_port_max);
  for (size_t i = 0; i < sources_.size(); ++i) {
    const auto& s = sources_[i];
    dbs[s.name] = {
        {"team", kTeam},
        {"source", {{"host", "127.0.0.1"}, {"port", s.port}, {"dbname", s.name}}},
        {"placement", {{"data_root", dir_ + "/targets"}, {"ports", ports}, {"os_user", kOsUser}}},
        {"router", kRouterName},
        {"route", s.name},
        {"tags", {Wave(static_cast<int>(i), opts_.wave_size)}}};
  }
  const json registry = {
      {"routers",
       {{{"name", kRouterName},
         {"type", "proxy"},
         {"admin_url", "http://127.0.0.1:" + std::to_string(proxy_admin_port_)}}}},
      {"databases", dbs}};
  PGSHIFT_RETURN_IF_ERROR(WriteFileAtomic(dir_ + "/registry.json", registry.dump(2)));
  PGSHIFT_ASSIGN_OR_RETURN(api_port_, FreePort());
  PGSHIFT_ASSIGN_OR_RETURN(
      pgshiftd_pid_,
      SpawnAndWait({opts_.pgshiftd_path, "--state", dir_ + "/state.db", "--listen",
                    "127.0.0.1:" + std::to_string(api_port_), "--registry", dir_ + "/registry.json",
                    "--workers", std::to_string(opts_.workers)},
                   dir_ + "/pgshiftd.log", api_port_));
  return Status::OK();
}

std::string FleetEnv::AppConninfo(const std::string& db) const {
  const std::string c = dir_ + "/certs/";
  return "host=127.0.0.1 port=" + std::to_string(proxy_port_) + " dbname=" + db +
         " user=app sslmode=verify-full sslrootcert=" + c + "ca.crt sslcert=" + c +
         "app-client.crt sslkey=" + c + "app-client.key connect_timeout=30";
}

std::string FleetEnv::AdminConninfo(int port, const std::string& db) {
  return "host=127.0.0.1 port=" + std::to_string(port) + " dbname=" + db +
         " user=postgres connect_timeout=30";
}

Result<json> FleetEnv::Api(const std::string& method, const std::string& path,
                           const std::string& body) const {
  httplib::Client cli("127.0.0.1", api_port_);
  cli.set_connection_timeout(5);
  cli.set_read_timeout(120);
  httplib::Result res =
      method == "GET" ? cli.Get(path.c_str()) : cli.Post(path.c_str(), body, "application/json");
  if (!res) return Unavailable("pgshiftd did not answer " + method + " " + path);
  json parsed = json::parse(res->body, nullptr, false);
  return json{{"status", res->status}, {"body", parsed.is_discarded() ? json(res->body) : parsed}};
}

// Each data directory under src/ and targets/ (the targets' logs sit beside them).
std::vector<std::string> FleetEnv::ClusterDirs() const {
  std::vector<std::string> dirs;
  std::error_code ec;
  for (const char* sub : {"/src", "/targets"}) {
    for (const auto& e : std::filesystem::directory_iterator(dir_ + sub, ec)) {
      if (e.is_directory(ec)) dirs.push_back(e.path().string());
    }
  }
  return dirs;
}

void FleetEnv::StopClusters(const std::vector<std::string>& dirs) {
  ForEach(dirs.size(), opts_.setup_threads, [&](size_t i) {
    for (const std::string& d : {dirs[i], dirs[i] + "/data"}) {
      if (!PathExists(d + "/postmaster.pid")) continue;
      (void)LocalCluster(ClusterSpec{.data_dir = d, .os_user = kOsUser}).Stop("immediate");
    }
  });
}

FleetEnv::~FleetEnv() {
  // pgshiftd first: it would start a stopped standby again.
  if (pgshiftd_pid_ > 0) StopChild(pgshiftd_pid_, SIGTERM, kStopGraceMs);
  if (proxy_pid_ > 0) StopChild(proxy_pid_, SIGTERM, kStopGraceMs);
  if (dir_.empty()) return;
  const std::vector<std::string> dirs = ClusterDirs();
  StopClusters(dirs);
  if (opts_.keep) return;
  ForEach(dirs.size(), opts_.setup_threads, [&](size_t i) { (void)RemoveTree(dirs[i]); });
  (void)RemoveTree(dir_);
}

}  // namespace pgshift::bench
