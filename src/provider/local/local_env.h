// LocalEnv: MigrationEnv for the local provider — the source is any
// PostgreSQL reachable by libpq whose data directory is on this host (for the
// fence and for retiring it); the target is built here with pg_basebackup
// and run with pg_ctl as an unprivileged OS user.
//
// Connections are opened lazily and reopened after a failure, so a source
// restart or a fence that terminates sessions does not wedge the engine.
// Used by one engine worker at a time (not thread-safe).
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "checks/checks.h"
#include "checks/sync_monitor.h"
#include "pg/conn.h"
#include "provider/local/fence.h"
#include "provider/local/local_cluster.h"
#include "provider/env.h"

namespace pgshift {

class LocalEnv : public MigrationEnv {
 public:
  LocalEnv(std::string migration_id, MigrationSpec spec, std::unique_ptr<Router> router,
           ProcessRunner& runner = DefaultRunner());
  ~LocalEnv() override;

  Result<SourceInfo> InspectSource() override;
  Result<std::vector<checks::Finding>> PreflightFindings() override;
  Result<std::vector<checks::Finding>> ValidateFindings() override;
  std::vector<checks::Finding> SyncFindings() override;
  Status EnsurePhysicalSlot(const std::string& slot) override;
  Status DropSlot(const std::string& slot) override;
  Result<std::vector<LogicalSlot>> LogicalSlots() override;
  Status DropInactiveSlot(const std::string& slot) override;
  Result<ReplicationLag> Lag(const std::string& slot) override;
  Result<FenceResult> FenceSource(const HeldBackends& held) override;
  Status UnfenceSource() override;
  Result<Lsn> WriteFinalMarker(const std::string& text) override;
  Status RetireSource() override;

  Status CreateReplica(const std::string& slot, std::function<void(int)> progress) override;
  Result<TargetState> InspectTarget() override;
  Status StopTarget() override;
  Result<int> PromoteTarget() override;
  Status ProbeTargetWrite() override;
  void PrepareCutover() override;
  Result<std::vector<checks::Finding>> QuickParity(int64_t budget_ms) override;
  Status StartParityCheck() override;
  ParityState Parity() override;

  Result<Lsn> EnsureTargetLogicalSlot(const LogicalSlot& slot) override;
  Result<std::vector<LogicalSlot>> TargetLogicalSlots() override;

  Endpoint SourceEndpoint() const override { return source_ep_; }
  Endpoint TargetEndpoint() const override { return {"127.0.0.1", spec_.target.port}; }
  Router& router() override { return *router_; }

  // The conninfo pgshift uses for the target (superuser of the source, TCP).
  std::string TargetConninfo() const;

 private:
  checks::TargetPlan Plan() const;
  Result<PgConn*> Source();
  Result<PgConn*> Target();
  template <typename T>
  Result<T> OnSource(const std::function<Result<T>(PgConn&)>& fn);

  std::string id_;
  MigrationSpec spec_;
  std::unique_ptr<Router> router_;
  ProcessRunner& runner_;
  LocalCluster target_;
  LocalFence fence_;
  Endpoint source_ep_;
  std::string source_user_;
  std::unique_ptr<PgConn> source_;
  std::unique_ptr<PgConn> target_conn_;
  checks::SyncMonitor monitor_;

  // The background parity check (local_parity.cc): snapshot-holding target
  // sessions stay open until it ends.
  struct ParityJob {
    std::mutex mu;
    ParityState state;
    std::vector<std::unique_ptr<PgConn>> snapshot_sessions;
    std::atomic<bool> cancel{false};
    std::thread thread;
  };
  std::unique_ptr<ParityJob> parity_;
  // Sessions on the standby, one per database, opened by PrepareCutover and
  // used after promotion to export the parity snapshots.
  std::vector<std::pair<std::string, std::unique_ptr<PgConn>>> standby_sessions_;
};

// Runs `fn` on the source session; a failure that left it broken drops it,
// so the next call reconnects.
template <typename T>
Result<T> LocalEnv::OnSource(const std::function<Result<T>(PgConn&)>& fn) {
  PGSHIFT_ASSIGN_OR_RETURN(PgConn * c, Source());
  auto r = fn(*c);
  if (!r.ok() && !c->Healthy()) source_.reset();
  return r;
}

// Builds LocalEnvs with routers from each spec's router config.
class LocalEnvFactory : public EnvFactory {
 public:
  Result<std::unique_ptr<MigrationEnv>> Make(const std::string& migration_id,
                                             const MigrationSpec& spec) override;
};

}  // namespace pgshift
