// LocalEnv: MigrationEnv for the local provider — the source is any
// PostgreSQL reachable by libpq whose data directory is on this host (for the
// fence and for retiring it); the target is built here with pg_basebackup
// and run with pg_ctl as an unprivileged OS user.
//
// Connections are opened lazily and reopened after a failure, so a source
// restart or a fence that terminates sessions does not wedge the engine.
// The login on both sides comes from a CredentialSource (the source
// conninfo's; the target is a physical copy with the same roles).
// Used by one engine worker at a time (not thread-safe).
//
// Next to the target's data directory, pgshift owns <data_dir>.partial (a
// base backup in progress, discarded when a build starts over) and
// <data_dir>.tblspc (the copies of the source's tablespaces, one directory
// per oid; discarded with it).
//
// Files: local_env.cc (connections, source, replica, retire),
// local_cutover.cc (PrepareCutover, fence, final marker, promotion),
// local_parity.cc (data parity), local_checks.cc (preflight / validate),
// local_cdc.cc (logical slots), local_reverse.cc (reverse replication),
// local_tablespaces.cc (tablespace copies and the guard against new ones).
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
#include "provider/credentials.h"
#include "provider/env.h"
#include "provider/local/fence.h"
#include "provider/local/local_cluster.h"

namespace pgshift {

// The provider's name in spec.target.provider.
inline constexpr const char* kLocalProvider = "local";

// LocalEnv's own waits (the fence's and the clusters' are in their options).
struct LocalEnvOptions {
  // libpq connect_timeout of pgshiftd's sessions and "is the source up" probes.
  int connect_timeout_s = 5;
  // Every session pgshiftd opens on the source and the target runs with
  // these: a statement stuck behind a lock (an ALTER TABLE, a VACUUM FULL of
  // a catalog) or a server that stalls fails with Code::kTimeout and the step
  // retries, instead of hanging pgshiftd. Exempt: the parity scans (they run
  // long by design, pace themselves and are cancelled by the env; a parity
  // session sets statement_timeout = 0) and pg_basebackup (a replication
  // connection, stopped by RequestStop).
  SessionTimeouts session = {.statement_timeout_ms = 30000, .lock_timeout_ms = 5000};
  // DropSlot: how long a slot may stay in use after its walsender is
  // terminated (a standby reconnects), and the pause between attempts.
  int64_t slot_release_timeout_ms = 15000;
  int64_t slot_release_poll_ms = 100;
  // WriteFinalMarker: how long the source may take to flush the marker, and
  // how often it is asked (traffic is held).
  int64_t final_flush_timeout_ms = 10000;
  int64_t final_flush_poll_ms = 1;
  // PromoteTarget: how long promotion may take, and how often the end of
  // recovery is asked (traffic is held).
  int64_t promote_timeout_ms = 60000;
  int64_t promote_poll_ms = 2;
  // RetireSource ends the sessions left on the source one at a time, at
  // most retire_spacing_ms apart (as pgshift-proxy's retire_interval_ms), at
  // least retire_min_spacing_ms, within retire_budget_ms in all: backend
  // exits together stall a shared host (~200 ms measured).
  int64_t retire_spacing_ms = 100;
  int64_t retire_min_spacing_ms = 2;
  int64_t retire_budget_ms = 10000;
  // How often the parity thread checks for cancellation while it waits out
  // the verify window.
  int64_t parity_wait_poll_ms = 50;
  FenceOptions fence;
  LocalClusterOptions cluster;
};

class LocalEnv : public MigrationEnv {
 public:
  // `stop`, when given, is a flag shared with the factory: set, it stops
  // this env as RequestStop does.
  LocalEnv(std::string migration_id, MigrationSpec spec, std::unique_ptr<Router> router,
           ProcessRunner& runner = DefaultRunner(), LocalEnvOptions options = {},
           std::shared_ptr<const std::atomic<bool>> stop = nullptr);
  ~LocalEnv() override;

  Result<SourceInfo> InspectSource() override;
  Result<std::vector<checks::Finding>> PreflightFindings() override;
  Result<std::vector<checks::Finding>> ValidateFindings() override;
  std::vector<checks::Finding> SyncFindings() override;
  Status EnsurePhysicalSlot(const std::string& slot) override;
  Status DropSlot(const std::string& slot) override;
  Result<std::vector<LogicalSlot>> LogicalSlots() override;
  Status DropInactiveSlot(const std::string& slot) override;
  // Also guards the source: a tablespace it created after the base backup,
  // which the standby would replay into the source's own directory, stops
  // the standby and fails (FailedPrecondition, explained); SyncFindings then
  // holds the blocking tablespace_created_during_sync finding.
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

  // local_reverse.cc
  Result<std::vector<checks::Finding>> ReverseReplicationFindings() override;
  Status EnsureReverseReplication() override;
  Result<ReverseReplicationState> InspectReverseReplication(bool mark) override;
  Status DropReverseReplication() override;
  Result<int> SyncSequencesToSource() override;
  Result<int> AlignSequencesWithSource() override;
  Result<Lsn> AdvanceSourceSlot(const std::string& slot, Lsn past) override;

  Endpoint SourceEndpoint() const override { return source_ep_; }
  Endpoint TargetEndpoint() const override { return {kTargetHost, spec_.target.port}; }
  Router& router() override { return *router_; }
  ProviderCapabilities Capabilities() const override;
  // Kills a running base backup (its partial copy is discarded by the next
  // attempt); CreateReplica refuses afterwards.
  void RequestStop() override { stop_requested_ = true; }

  // The conninfo pgshift uses on each side, with the credentials applied;
  // `dbname` "" keeps the source conninfo's (source) or "postgres" (target).
  Result<std::string> SourceConninfo(const std::string& dbname = "") const;
  // The target: TCP on loopback, as the source's login (a physical copy).
  Result<std::string> TargetConninfo(const std::string& dbname = "") const;
  // What the target replicates from (pg_basebackup, then primary_conninfo):
  // spec.source.replication_conninfo's address over SourceConninfo().
  Result<std::string> ReplicationConninfo() const;

 private:
  // The target listens here only.
  static constexpr const char* kTargetHost = "127.0.0.1";
  // On in the target's configuration: the source's WAL may create in-place
  // tablespaces (LOCATION ''), which the standby replays into its own
  // pg_tblspc, and a server that finds one there without this setting
  // refuses to start (PANIC, measured on 15).
  static constexpr const char* kInPlaceTablespaces = "allow_in_place_tablespaces";
  // In the target's data directory: the id of the migration that built it.
  static constexpr const char* kMarkerFile = "/pgshift.migration";
  // Opens a session's REPEATABLE READ transaction and exports its snapshot
  // in one round trip (PrepareCutover warms it, StartParityCheck uses it).
  static constexpr const char* kExportSnapshot =
      "begin isolation level repeatable read read only; select pg_export_snapshot() as s";
  // The timeline a primary writes on: the first 8 hex digits of its current
  // WAL file's name (an error during recovery, so always behind a recovery
  // check). InspectTarget and PromoteTarget's poll share it.
  static constexpr const char* kPrimaryTimeline =
      "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int";

  checks::TargetPlan Plan() const;
  // A session of pgshiftd's own on `conninfo` (either side): named pgshiftd,
  // with options_.session's timeouts.
  Result<std::unique_ptr<PgConn>> OpenSession(const std::string& conninfo) const;
  Result<PgConn*> Source();
  Result<PgConn*> Target();
  template <typename T>
  Result<T> OnSource(const std::function<Result<T>(PgConn&)>& fn);
  // The source accepts connections (libpq's ping, so a DNS name or a socket
  // directory works as well as an IP literal).
  bool SourceUp() const;
  bool StopRequested() const;
  // local_tablespaces.cc: where the target's copies of the source's
  // tablespaces go; pg_basebackup's --tablespace-mapping arguments for them;
  // tablespace_created_during_sync findings (one ok when there is none); and
  // the guard that stops the standby when one blocks.
  std::string TablespaceDir() const;
  Result<std::vector<std::string>> TablespaceMappings();
  Result<std::vector<checks::Finding>> TablespaceFindings();
  Status GuardTablespaces();
  // local_reverse.cc: the databases reverse replication covers (the
  // target's, templates aside; a physical copy keeps the source's oids) and
  // the name of a database's slot and subscription.
  struct ReverseDb {
    std::string oid;
    std::string name;
  };
  Result<std::vector<ReverseDb>> ReverseDatabases();
  std::string ReverseName(const std::string& db_oid) const;
  // Sets the sequences of one side from the other's values in each database:
  // onto the source those it has behind the target's (SyncSequencesToSource),
  // onto the target those that differ from the source's (AlignSequencesWithSource).
  Result<int> CopySequences(bool onto_source);

  std::string id_;
  MigrationSpec spec_;
  std::unique_ptr<Router> router_;
  ProcessRunner& runner_;
  LocalEnvOptions options_;
  std::unique_ptr<CredentialSource> credentials_;
  LocalCluster target_;
  LocalFence fence_;
  Endpoint source_ep_;
  std::unique_ptr<PgConn> source_;
  std::unique_ptr<PgConn> target_conn_;
  checks::SyncMonitor monitor_;
  std::vector<checks::Finding> tablespace_findings_;  // from the last guard
  std::atomic<bool> stop_requested_{false};
  std::shared_ptr<const std::atomic<bool>> factory_stop_;

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

// Builds LocalEnvs with routers from each spec's router config. Make and
// RequestStop are thread-safe (the only state is the atomic stop flag).
class LocalEnvFactory : public EnvFactory {
 public:
  explicit LocalEnvFactory(LocalEnvOptions options = {}) : options_(options) {}
  Result<std::unique_ptr<MigrationEnv>> Make(const std::string& migration_id,
                                             const MigrationSpec& spec) override;
  void RequestStop() override { *stop_ = true; }

 private:
  LocalEnvOptions options_;
  // Shared with every env made, which watches it.
  std::shared_ptr<std::atomic<bool>> stop_ = std::make_shared<std::atomic<bool>>(false);
};

}  // namespace pgshift
