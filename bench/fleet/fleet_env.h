// FleetEnv: everything bench-fleet runs on one host, in one temporary
// directory — N small source clusters (copies of one template made with
// LocalCluster, each serving its own database dNNNN with the ledger table and
// a role `app` that authenticates with SCRAM), ONE pgshift-proxy with a
// route per database (mutual TLS; the proxy holds the password), and ONE
// pgshiftd whose inventory lists every database with its wave tag, the
// proxy's route and a placement for its target.
//
// Sources are added while the host has room: before each one the free
// memory, disk, file descriptors and process slots are compared with a
// reserve, and the first that runs short (or the first cluster that fails to
// start) ends the fleet there; limit() names it.
//
// The destructor stops pgshiftd, the proxy and every cluster found under the
// directory (sources and the targets pgshiftd made), then removes it unless
// `keep`. Not thread-safe, except Api().
#pragma once

#include <sys/types.h>

#include <atomic>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"
#include "provider/local/local_cluster.h"

namespace pgshift::bench {

struct FleetEnvOptions {
  std::string pgshiftd_path;
  std::string proxy_path;
  int wave_size = 100;             // databases per wave (tag wNN)
  int workers = 16;                // pgshiftd --workers
  int setup_threads = 4;           // clusters copied and started at once
  int64_t mem_reserve_mb = 4096;   // left for targets in flight, pgshiftd, the other tenants
  int64_t disk_reserve_mb = 8192;  // the targets' base backups need as much again
  int target_port_min = 21000;     // placement.ports of every database
  int target_port_max = 21999;
  int proxy_threads = 2;
  bool keep = false;
  const std::atomic<bool>* interrupted = nullptr;  // ^C: stop adding sources
};

struct FleetSource {
  std::string name;  // database, route and inventory entry: d0001...
  int port = 0;
  std::unique_ptr<LocalCluster> cluster;
};

class FleetEnv {
 public:
  static Result<std::unique_ptr<FleetEnv>> Create(FleetEnvOptions opts);
  ~FleetEnv();

  // Adds up to `n` sources (fewer when a resource runs short: see limit()).
  // An error only when not even one could be made.
  Status AddSources(int n);
  // The proxy with a route per source, then pgshiftd with the inventory.
  Status StartProxy();
  Status StartPgshiftd();

  const std::vector<FleetSource>& sources() const { return sources_; }
  // Why the fleet has no more sources than it has ("" when it has all asked).
  const std::string& limit() const { return limit_; }
  const std::string& dir() const { return dir_; }
  pid_t pgshiftd_pid() const { return pgshiftd_pid_; }
  // Role app through the proxy with the client certificate.
  std::string AppConninfo(const std::string& db) const;
  // The superuser straight to a cluster (trust on loopback).
  static std::string AdminConninfo(int port, const std::string& db);

  // REST call to pgshiftd: {"status":N,"body":json}.
  Result<nlohmann::json> Api(const std::string& method, const std::string& path,
                             const std::string& body = "") const;

 private:
  FleetEnv() = default;
  Status MakeTemplate();
  // Copies the template to source `index` and starts it.
  Result<FleetSource> MakeSource(int index);
  // "" while the host keeps the reserves, else what ran short.
  std::string ShortOf() const;
  // The directories under src/ and targets/ (the ones a cluster may run in).
  std::vector<std::string> ClusterDirs() const;
  // Stops every cluster running in `dirs`, a few at a time.
  void StopClusters(const std::vector<std::string>& dirs);

  FleetEnvOptions opts_;
  std::string dir_;
  std::string template_dir_;
  std::vector<FleetSource> sources_;
  std::string limit_;
  int proxy_port_ = 0;
  int proxy_admin_port_ = 0;
  int api_port_ = 0;
  pid_t proxy_pid_ = -1;
  pid_t pgshiftd_pid_ = -1;
};

}  // namespace pgshift::bench
