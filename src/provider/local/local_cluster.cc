#include "provider/local/local_cluster.h"

#include <sys/resource.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/os.h"

namespace pgshift {

LocalCluster::LocalCluster(ClusterSpec spec, ProcessRunner& runner, LocalClusterOptions options)
    : spec_(std::move(spec)), runner_(runner), options_(options) {
  if (spec_.bin_dir.empty()) spec_.bin_dir = DefaultPgBinDir();
}

std::string LocalCluster::Bin(const std::string& tool) const { return spec_.bin_dir + "/" + tool; }

std::string LocalCluster::LogFile() const { return spec_.data_dir + ".log"; }

bool LocalCluster::Exists() const { return PathExists(spec_.data_dir + "/PG_VERSION"); }

Status LocalCluster::InitDb() {
  if (spec_.data_dir.empty() || spec_.data_dir[0] != '/') {
    return InvalidArgument("cluster data_dir must be an absolute path, got '" + spec_.data_dir +
                           "'");
  }
  if (spec_.port <= 0) return InvalidArgument("cluster port must be set");
  if (Exists()) return AlreadyExists("a cluster already exists in " + spec_.data_dir);
  std::string parent = std::filesystem::path(spec_.data_dir).parent_path();
  PGSHIFT_RETURN_IF_ERROR(MakeDirOwnedBy(parent, spec_.os_user, 0755));
  PGSHIFT_RETURN_IF_ERROR(
      RunChecked(runner_, {.argv = {Bin("initdb"), "-D", spec_.data_dir, "-U", spec_.superuser,
                                    "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"},
                           .run_as = spec_.os_user,
                           .timeout_ms = options_.initdb_timeout_ms})
          .status()
          .Wrap("initdb"));
  std::map<std::string, std::string> base = {
      {"listen_addresses", "'127.0.0.1'"},
      {"port", std::to_string(spec_.port)},
      {"unix_socket_directories", "'" + parent + "'"},
      {"wal_level", "logical"},
      {"max_wal_senders", "10"},
      {"max_replication_slots", "10"},
      {"hot_standby", "on"},
      {"wal_keep_size", "0"},
      {"fsync", "off"},
      {"synchronous_commit", "on"},
      {"shared_buffers", "64MB"},
      {"logging_collector", "off"},
      {"log_line_prefix", "'%m [%p] %u@%d '"},
  };
  for (const auto& [k, v] : spec_.settings) base[k] = v;
  PGSHIFT_RETURN_IF_ERROR(AppendSettings(base));
  // initdb's trust rules cover loopback for databases but replication only
  // partly; make loopback replication explicit for standbys and CDC.
  auto hba = ReadFile(spec_.data_dir + "/pg_hba.conf");
  if (!hba.ok()) return hba.status();
  return WriteFileAtomic(spec_.data_dir + "/pg_hba.conf",
                         *hba + "\nhost replication all 127.0.0.1/32 trust\n");
}

Status LocalCluster::AppendSettings(const std::map<std::string, std::string>& settings) {
  const std::string conf = spec_.data_dir + "/postgresql.conf";
  PGSHIFT_ASSIGN_OR_RETURN(std::string text, ReadFile(conf));
  text += "\n# pgshift\n";
  for (const auto& [k, v] : settings) text += k + " = " + v + "\n";
  return WriteFileAtomic(conf, text);
}

Status LocalCluster::PgCtl(const std::string& action, std::vector<std::string> args,
                           std::optional<int> timeout_s) const {
  const int wait_s = timeout_s.value_or(options_.pg_ctl_wait_s);
  std::vector<std::string> argv = {Bin("pg_ctl"), action, "-D", spec_.data_dir};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.insert(argv.end(), {"-w", "-t", std::to_string(wait_s)});
  return RunChecked(runner_, {.argv = argv,
                              .run_as = spec_.os_user,
                              .timeout_ms = wait_s * int64_t{1000} + options_.pg_ctl_grace_ms})
      .status();
}

Status LocalCluster::Start(std::optional<int> timeout_s) {
  if (Running()) return Status::OK();
  return PgCtl("start", {"-l", LogFile()}, timeout_s)
      .Wrap("starting PostgreSQL in " + spec_.data_dir + " (log: " + LogFile() + ")");
}

Status LocalCluster::Stop(const std::string& mode, std::optional<int> timeout_s) {
  if (!Running()) return Status::OK();
  return PgCtl("stop", {"-m", mode}, timeout_s).Wrap("stopping PostgreSQL in " + spec_.data_dir);
}

bool LocalCluster::Running() const {
  if (!Exists()) return false;
  auto r = runner_.Run({.argv = {Bin("pg_ctl"), "status", "-D", spec_.data_dir},
                        .run_as = spec_.os_user,
                        .timeout_ms = options_.status_timeout_ms});
  return r.ok() && r->exit_code == 0;
}

Status LocalCluster::Promote(std::optional<int> timeout_s) {
  return PgCtl("promote", {}, timeout_s).Wrap("promoting " + spec_.data_dir);
}

Result<int> LocalCluster::LowerPriority(std::optional<int> nice_value) const {
  const int nice = nice_value.value_or(options_.background_nice);
  auto pidfile = ReadFile(spec_.data_dir + "/postmaster.pid");
  if (!pidfile.ok()) return FailedPrecondition("no postmaster.pid in " + spec_.data_dir);
  const int postmaster = std::atoi(pidfile->c_str());
  if (postmaster <= 0) return FailedPrecondition("unreadable postmaster.pid in " + spec_.data_dir);
  std::vector<int> pids = {postmaster};
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const int pid = std::stoi(name);
    auto ppid = ParentPid(pid);
    if (ppid.ok() && *ppid == postmaster) pids.push_back(pid);
  }
  int changed = 0;
  std::string first_error;
  for (int pid : pids) {
    if (setpriority(PRIO_PROCESS, static_cast<id_t>(pid), nice) == 0) {
      ++changed;
    } else if (first_error.empty()) {
      first_error = "pid " + std::to_string(pid) + ": " + std::strerror(errno);
    }
  }
  if (changed == 0) {
    return FailedPrecondition("could not lower the priority of the cluster in " + spec_.data_dir +
                              " (" + first_error + ")");
  }
  return changed;
}

std::string LocalCluster::Conninfo(const std::string& dbname, const std::string& user) const {
  return "host=127.0.0.1 port=" + std::to_string(spec_.port) + " dbname=" + dbname +
         " user=" + (user.empty() ? spec_.superuser : user);
}

Result<std::string> LocalCluster::Psql(const std::string& sql, const std::string& dbname) const {
  return RunChecked(runner_, {.argv = {Bin("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At",
                                       "-d", Conninfo(dbname), "-c", sql},
                              .timeout_ms = options_.psql_timeout_ms});
}

}  // namespace pgshift
