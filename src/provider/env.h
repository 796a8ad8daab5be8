// MigrationEnv: everything the workflow engine does to the outside world for
// one migration — source and target clusters, the fence, the router — behind
// one interface (LevelDB's Env idea). The local provider implements it with
// real servers (provider/local/local_env.h); unit tests drive the engine with
// an in-memory fake. docs/providers.md maps every method onto AWS (RDS to
// Aurora) and Kubernetes (CloudNativePG).
//
// Every method is idempotent and checks the world instead of trusting memory,
// so a restarted engine can call it again. Endpoints name hosts as strings: a
// DNS name, an IP literal or (local provider) a socket directory, never
// assumed to be an IPv4 literal; the router resolves them when it connects.
// An instance is used by one engine worker thread at a time.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "checks/finding.h"
#include "common/lsn.h"
#include "common/status.h"
#include "model/migration.h"
#include "router/router.h"

namespace pgshift {

struct SourceInfo {
  int server_version_num = 0;
  std::string wal_level;
  int max_wal_senders = 0;
  int max_replication_slots = 0;
  int used_replication_slots = 0;
  bool in_recovery = false;
};

struct TargetState {
  bool exists = false;  // a complete data directory is in place
  bool running = false;
  bool in_recovery = false;
  Lsn replay_lsn;
  int timeline = 0;
};

struct ReplicationLag {
  uint64_t bytes = 0;  // source current LSN - target replay LSN
  double seconds = 0;  // replay_lag reported by the source's walsender (0 when caught up)
  Lsn source_lsn;
  Lsn replay_lsn;
};

struct LogicalSlot {
  std::string name;
  std::string plugin;
  std::string database;
  std::string confirmed_flush_lsn;
  std::string restart_lsn;
  bool active = false;
  bool two_phase = false;
  int active_pid = 0;                     // the walsender serving its consumer
  std::string consumer_application_name;  // from pg_stat_replication, when active
  std::string consumer_client_addr;
};

struct ParityState {
  bool started = false;  // false also when a restart lost the running check
  bool done = false;
  int tables_total = 0;
  int tables_done = 0;
  std::string current;
  std::vector<checks::Finding> findings;  // data_parity, once done
};

// Reverse replication (DESIGN.md §2, rollback): the promoted target
// publishes every table, one logical slot per database, and the fenced
// source subscribes, so writes made on the target flow back to the source.
struct ReverseReplicationState {
  bool in_place = false;  // publication, slot and subscription in every database
  // Read before applied_lsn. Marked (InspectReverseReplication(true)): the
  // end of a transaction committed on the target for the purpose, so once
  // applied_lsn >= target_lsn the source has applied every transaction the
  // target had committed before; otherwise the target's WAL flush position.
  Lsn target_lsn;
  // The least position the source confirmed (flushed) among the reverse
  // slots on the target; 0/0 when not in place.
  Lsn applied_lsn;
  std::string apply_error;  // the subscriptions' last apply failure, "" when none
};

struct FenceResult {
  int terminated = 0;  // client sessions on the source terminated
  int exempted = 0;    // sessions the router holds, left alive (idle, no transaction)
};

// How far a replica being built has come (EnsureReplica).
struct ReplicaProgress {
  bool complete = false;  // in place, started, and a standby of the source
  int percent = 0;        // 0..100; coarse when the platform reports no more
  std::string detail;     // what the provider waits for, for the operator
};

// What a provider can do beyond the interface's contract, for the workflow
// to consult (e.g. to warn that a hold will last a promotion of minutes).
// Each field is false unless the provider states it: a false field never
// breaks a call, it only means the optimisation or feature is absent.
struct ProviderCapabilities {
  // FenceSource can leave alive the router's held sessions that sit idle
  // outside a transaction (FenceResult::exempted); otherwise all are ended.
  bool fence_exempts_held_sessions = false;
  // pgshiftd reaches the source's host, not only its SQL port: its data
  // directory and pg_hba.conf (the local fence, RetireSource's pg_ctl).
  bool source_host_access = false;
  // CreateReplica honours MigrationOptions::basebackup_max_rate_kbps.
  bool basebackup_rate_limit = false;
  // Sessions opened on the standby before promotion (PrepareCutover) survive
  // it; false where promotion restarts the server.
  bool sessions_survive_promotion = false;
  // PromoteTarget takes seconds at most (pg_promote), so it fits inside the
  // hold; false where the platform's promotion takes minutes.
  bool promotes_within_hold = false;
  // Logical slots can be created on the promoted target (CDC consumers move).
  bool logical_slots_on_target = false;
  // The source's logical slots are kept in sync on the standby (failover
  // slots), so consumers resume on the promoted target where they were.
  bool failover_slot_sync = false;
  // The reverse replication methods are implemented (rollback after writes
  // keeps the target's writes).
  bool reverse_replication = false;
};

class MigrationEnv {
 public:
  virtual ~MigrationEnv() = default;

  // --- source ---
  virtual Result<SourceInfo> InspectSource() = 0;
  // Checks before anything is created (source + the target's plan).
  virtual Result<std::vector<checks::Finding>> PreflightFindings() = 0;
  // Checks against the running replica, just before `ready`.
  virtual Result<std::vector<checks::Finding>> ValidateFindings() = 0;
  // What the continuous checks during sync see now (slot health, WAL rate vs
  // replay rate, sustained lag); fed by the samples Lag() takes.
  virtual std::vector<checks::Finding> SyncFindings() = 0;
  virtual Status EnsurePhysicalSlot(const std::string& slot) = 0;
  // Absent slot: OK. An active slot's walsender is terminated first.
  virtual Status DropSlot(const std::string& slot) = 0;
  virtual Result<std::vector<LogicalSlot>> LogicalSlots() = 0;
  // An operator's explicit request: drops a slot that no consumer is using.
  // Refuses an active slot (FailedPrecondition) and an unknown one (NotFound).
  virtual Status DropInactiveSlot(const std::string& slot) = 0;
  virtual Result<ReplicationLag> Lag(const std::string& slot) = 0;
  // Rejects new connections for every role but pgshift's own, terminates the
  // remaining client sessions and verifies none is left — except those of
  // `held` (the router's sessions held at a boundary) that the source shows
  // idle outside any transaction, on held.database; only when held.server
  // is the source.
  virtual Result<FenceResult> FenceSource(const HeldBackends& held) = 0;
  virtual Status UnfenceSource() = 0;
  // After the fence: writes a WAL record that follows every committed
  // transaction, waits for it to be flushed, and returns its end LSN.
  virtual Result<Lsn> WriteFinalMarker(const std::string& text) = 0;
  // Stops the (fenced) source for good; its data directory is kept.
  virtual Status RetireSource() = 0;

  // --- target ---
  // Builds the target as a standby of the source streaming from `slot`
  // (local: a base backup into the target's data directory) and starts it;
  // returns when it is complete. A complete replica already in place is
  // kept. `progress` gets 0..100. Called again after a restart that
  // interrupted a build, it resumes or starts over (local: a partial base
  // backup is discarded).
  virtual Status CreateReplica(const std::string& slot, std::function<void(int)> progress) = 0;
  // The non-blocking form, for builds that outlast a step (a cloud cluster
  // takes many minutes to create): starts the build, or finds the one
  // started earlier (by this process or one before a restart) and reports
  // how far it has come; returns promptly. It may be called again while the
  // build runs and must not start a second one. `complete` once
  // CreateReplica would have returned OK; `progress` as in CreateReplica,
  // for what advances within the call. The default runs CreateReplica to
  // completion: right for a build this process drives itself (local).
  virtual Result<ReplicaProgress> EnsureReplica(const std::string& slot,
                                                std::function<void(int)> progress);
  virtual Result<TargetState> InspectTarget() = 0;
  virtual Status StopTarget() = 0;
  // Promotes (no-op when already promoted) and returns the new timeline.
  virtual Result<int> PromoteTarget() = 0;
  // A committed write on the target.
  virtual Status ProbeTargetWrite() = 0;
  // Ahead of the hold (once the standby is in sync, and again just before
  // the hold): opens what the held part of the cutover will need (e.g.
  // sessions on the standby that survive its promotion), so that work is not
  // paid for while clients wait. Keeps what is still open from a previous
  // call. Best effort.
  virtual void PrepareCutover() = 0;
  // Right after promotion, before any write is let through: exports a
  // snapshot of the target and starts comparing it, in the background, with
  // the fenced (frozen) source. Idempotent while the check runs.
  virtual Status StartParityCheck() = 0;
  virtual ParityState Parity() = 0;
  // Compares the fenced source with the caught-up, not yet promoted standby
  // within `budget_ms`; data_parity findings (a warning when out of time).
  virtual Result<std::vector<checks::Finding>> QuickParity(int64_t budget_ms) = 0;

  // --- CDC (logical slots; DESIGN.md §2 "Why CDC stays exact") ---
  // On the promoted target, before any client write is released: creates
  // `slot` in its database with the same name, plugin and two_phase unless it
  // exists already (a restarted step), and returns the slot's consistent
  // point (its confirmed_flush_lsn).
  virtual Result<Lsn> EnsureTargetLogicalSlot(const LogicalSlot& slot) = 0;
  // The logical slots on the target, with their confirmed positions.
  virtual Result<std::vector<LogicalSlot>> TargetLogicalSlots() = 0;

  // --- reverse replication (rollback after writes; DESIGN.md §2) ---
  // Each default refuses (FailedPrecondition) where a provider has none
  // (Capabilities().reverse_replication false); Inspect says not in place.
  // What reverse replication cannot carry, read on the promoted target and
  // compared with the source: tables without a primary key or replica
  // identity (a FOR ALL TABLES publication would make the target refuse
  // their UPDATE and DELETE), large objects, unlogged tables, tables or
  // columns the target has and the source lacks (DDL after the cutover),
  // a source whose worker or slot settings cannot host a subscription per
  // database. One blocking finding per obstacle, id "reverse_replication";
  // none: it can be used.
  virtual Result<std::vector<checks::Finding>> ReverseReplicationFindings();
  // On the promoted target, before any client write is released: the
  // publication and a logical slot per database on the target, and on the
  // fenced source an enabled subscription per database owned by pgshift's
  // role (copy_data off, the existing slot). Keeps what exists.
  virtual Status EnsureReverseReplication();
  virtual Result<ReverseReplicationState> InspectReverseReplication(bool mark);
  // Drops the subscriptions on the source, then the slots and publications
  // on the target (each where it is reachable). Absent: OK.
  virtual Status DropReverseReplication();
  // Sets each sequence on the source to at least the target's value (at
  // most, for a descending one): logical replication does not carry
  // sequences. Returns how many moved.
  virtual Result<int> SyncSequencesToSource();
  // On the promoted target, before any client write is let through: sets
  // each sequence to the fenced source's value. A standby's sequences stand
  // up to 32 values past the source's (a sequence's WAL record logs values
  // ahead), so without it a sequence's next value on the target skips some
  // that the source never handed out. Returns how many were set; providers
  // without it set none.
  virtual Result<int> AlignSequencesWithSource();
  // Advances the (inactive) logical slot `slot` on the source past every
  // change in its WAL so far, first padding the source's WAL (records no
  // decoder emits) until its flush position is past `past`; returns the
  // slot's new confirmed position.
  virtual Result<Lsn> AdvanceSourceSlot(const std::string& slot, Lsn past);

  // Where clients reach each side: what the router is pointed at, and the
  // server HeldBackends names (compared as given, so the router must be
  // asked with SourceEndpoint() itself).
  virtual Endpoint SourceEndpoint() const = 0;
  virtual Endpoint TargetEndpoint() const = 0;
  virtual Router& router() = 0;

  // Defaults to none beyond the contract (every field false).
  virtual ProviderCapabilities Capabilities() const { return {}; }

  // Asks the env to give up what it is doing, for pgshiftd's shutdown. The
  // one method that may be called from any thread, also while another is
  // inside a method: a long call in progress (CreateReplica's base backup)
  // returns Aborted promptly, leaving only what a later attempt discards,
  // and later long calls refuse. The default does nothing (nothing long).
  virtual void RequestStop() {}
};

// Builds the env of one migration. Make may be called from several engine
// workers at once: implementations keep no mutable state or lock it.
class EnvFactory {
 public:
  virtual ~EnvFactory() = default;
  virtual Result<std::unique_ptr<MigrationEnv>> Make(const std::string& migration_id,
                                                     const MigrationSpec& spec) = 0;
  // RequestStop on every env this factory made and will make. Thread-safe;
  // for pgshiftd's shutdown, before the engine joins its workers (an env is
  // owned by a worker that may be inside CreateReplica). Final.
  virtual void RequestStop() {}
};

}  // namespace pgshift
