// LocalCluster: one PostgreSQL cluster on this host, driven with initdb /
// pg_ctl / pg_basebackup. When pgshift runs as root, every server process
// runs as the cluster's unprivileged OS user (PostgreSQL refuses root).
//
// The server listens on 127.0.0.1:<port> and on a private unix socket
// directory inside the data directory's parent. Thread-compatible: one
// owner drives a LocalCluster at a time.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/process.h"
#include "common/status.h"

namespace pgshift {

struct ClusterSpec {
  std::string data_dir;  // absolute; its parent must be writable by os_user
  int port = 0;
  std::string bin_dir;  // PostgreSQL binaries; empty = DefaultPgBinDir()
  std::string os_user = "postgres";
  std::string superuser = "postgres";
  // postgresql.conf settings written by InitDb (replication-ready defaults are added).
  std::map<std::string, std::string> settings;
};

// How long LocalCluster waits for the tools it runs.
struct LocalClusterOptions {
  // pg_ctl start / stop / promote wait (-t) when the caller names none.
  int pg_ctl_wait_s = 60;
  // Beyond pg_ctl's own wait before its process is killed: pg_ctl reports
  // its timeout itself, with the reason.
  int64_t pg_ctl_grace_ms = 10000;
  int64_t initdb_timeout_ms = 120000;
  int64_t status_timeout_ms = 15000;  // pg_ctl status
  int64_t psql_timeout_ms = 120000;
  // LowerPriority's nice when the caller names none: the lowest priority.
  int background_nice = 19;
};

class LocalCluster {
 public:
  explicit LocalCluster(ClusterSpec spec, ProcessRunner& runner = DefaultRunner(),
                        LocalClusterOptions options = {});

  const ClusterSpec& spec() const { return spec_; }
  std::string Bin(const std::string& tool) const;
  std::string LogFile() const;

  // initdb with trust auth on loopback, replication-ready settings, and
  // `spec.settings`. Fails with AlreadyExists when data_dir holds a cluster.
  Status InitDb();
  // Settings appended to postgresql.conf (the last occurrence wins in PostgreSQL).
  Status AppendSettings(const std::map<std::string, std::string>& settings);
  // Waits: the given seconds, or options.pg_ctl_wait_s.
  Status Start(std::optional<int> timeout_s = std::nullopt);
  // mode: smart | fast | immediate
  Status Stop(const std::string& mode = "fast", std::optional<int> timeout_s = std::nullopt);
  bool Running() const;
  bool Exists() const;  // data_dir holds PG_VERSION
  Status Promote(std::optional<int> timeout_s = std::nullopt);
  // Lowers the CPU priority of the running postmaster (postmaster.pid) and of
  // its children to `nice`; backends it starts later inherit it. Before a
  // cluster that no longer carries traffic is stopped: its shutdown
  // checkpoint and every backend's exit then give way to the server that
  // does, on the same host. Best effort (a process may end meanwhile); returns
  // how many processes were changed, or an error when none could be.
  // nice: the given one, or options.background_nice.
  Result<int> LowerPriority(std::optional<int> nice = std::nullopt) const;

  // libpq conninfo over TCP to this cluster.
  std::string Conninfo(const std::string& dbname = "postgres", const std::string& user = "") const;

  // Runs psql -c against this cluster as the superuser (for scripts and tests).
  Result<std::string> Psql(const std::string& sql, const std::string& dbname = "postgres") const;

 private:
  // Runs pg_ctl `action` with -w -t (the given wait or the default).
  Status PgCtl(const std::string& action, std::vector<std::string> args,
               std::optional<int> timeout_s) const;

  ClusterSpec spec_;
  ProcessRunner& runner_;
  LocalClusterOptions options_;
};

}  // namespace pgshift
