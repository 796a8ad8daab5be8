// LocalCluster: one PostgreSQL cluster on this host, driven with initdb /
// pg_ctl / pg_basebackup. When pgshift runs as root, every server process
// runs as the cluster's unprivileged OS user (PostgreSQL refuses root).
//
// The server listens on 127.0.0.1:<port> and on a private unix socket
// directory inside the data directory's parent. Thread-compatible: one
// owner drives a LocalCluster at a time.
#pragma once

#include <map>
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

class LocalCluster {
 public:
  explicit LocalCluster(ClusterSpec spec, ProcessRunner& runner = DefaultRunner());

  const ClusterSpec& spec() const { return spec_; }
  std::string Bin(const std::string& tool) const;
  std::string LogFile() const;

  // initdb with trust auth on loopback, replication-ready settings, and
  // `spec.settings`. Fails with AlreadyExists when data_dir holds a cluster.
  Status InitDb();
  // Settings appended to postgresql.conf (the last occurrence wins in PostgreSQL).
  Status AppendSettings(const std::map<std::string, std::string>& settings);
  Status Start(int timeout_s = 60);
  // mode: smart | fast | immediate
  Status Stop(const std::string& mode = "fast", int timeout_s = 60);
  bool Running() const;
  bool Exists() const;  // data_dir holds PG_VERSION
  Status Promote(int timeout_s = 60);
  // Lowers the CPU priority of the running postmaster (postmaster.pid) and of
  // its children to `nice`; backends it starts later inherit it. Before a
  // cluster that no longer carries traffic is stopped: its shutdown
  // checkpoint and every backend's exit then give way to the server that
  // does, on the same host. Best effort (a process may end meanwhile); returns
  // how many processes were changed, or an error when none could be.
  Result<int> LowerPriority(int nice = 19) const;

  // libpq conninfo over TCP to this cluster.
  std::string Conninfo(const std::string& dbname = "postgres", const std::string& user = "") const;

  // Runs psql -c against this cluster as the superuser (for scripts and tests).
  Result<std::string> Psql(const std::string& sql, const std::string& dbname = "postgres") const;

 private:
  ClusterSpec spec_;
  ProcessRunner& runner_;
};

}  // namespace pgshift
