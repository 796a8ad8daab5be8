// MigrationRunner: drives one migration through its phases (DESIGN.md §2).
//
// Every call to Step() reloads the migration from the StateStore, applies the
// queued operator actions, runs one idempotent step of the current phase and
// records the outcome before returning, so the runner can be destroyed (or
// the process killed) between any two steps and a new runner resumes.
//
// A commit that fails (the store's disk is full, its file unwritable) ends
// the step like a crash would: nothing more is written or done in it, the
// migration does not move on, and after a back-off the next step reloads the
// last committed record and runs that phase again.
//
// The phases and their properties (inside the hold, chained into the step
// before without a commit of their own, terminal) come from the phase table
// in model/phase.h; the runner adds one step function per phase. runner.cc
// holds what every phase shares (loading, recording, transitions, operator
// actions, failures); each stage's steps are in src/workflow/phases/:
//   prepare.cc   preflight, provision
//   sync.cc      sync, validate, ready
//   cdc.cc       cdc_prepare
//   cutover.cc   quiesce, drain, promote, snapshot, switch
//   verify.cc    verify and the wait for the data parity check
//   finalize.cc  finalize
//   rollback.cc  rolling_back, and the abort of a cutover before switch
//
// A step works on the typed record (phase_, state_, progress_, result_);
// Save() writes it into the stored row in one commit. Not thread-safe: one
// worker owns a runner.
//
// A runner drives its migration under a lease (store/lease.h): every write
// carries the lease's token, and a write the store refuses because another
// pgshiftd took the migration over ends the runner (Tick::kLost) at once,
// without a retry and without another step.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "checks/finding.h"
#include "common/clock.h"
#include "model/migration.h"
#include "provider/env.h"
#include "store/state_store.h"
#include "workflow/health.h"
#include "workflow/hold_renewer.h"

namespace pgshift {

class MigrationRunner {
 public:
  enum class Tick {
    kProgress,  // moved on; step again at once
    kIdle,      // polling or waiting for an operator; step again after poll_ms
    kTerminal,  // finalized or rolled back
    kLost,      // the lease changed hands: another pgshiftd drives it; never step again
  };

  MigrationRunner(StateStore& store, Clock& clock, std::string id,
                  std::unique_ptr<MigrationEnv> env, MigrationSpec spec, Lease lease);

  Tick Step();
  // True when only an operator can move the migration on (waiting, blocked,
  // failed), as last recorded.
  bool AwaitingOperator() const;
  // The stored row as last loaded or saved.
  const MigrationRecord& record() const { return m_; }
  int64_t poll_ms() const { return spec_.options.poll_ms; }

 private:
  using StepFn = Status (MigrationRunner::*)();
  // The step of `p`; nullptr for a terminal phase.
  static StepFn StepOf(Phase p);

  // phases/prepare.cc
  Status Preflight();
  Status Provision();
  // phases/sync.cc
  Status Sync();
  Status Validate();
  Status Ready();
  Status SampleLag();
  // phases/cdc.cc
  Status CdcPrepare();
  Status CdcRecreate();
  // In cdc_prepare: result.reverse_replication_on, and findings naming what
  // it could not carry.
  void PlanReverseReplication();
  // The reverse stream as the health window judges it (phases/health.cc):
  // not in use unless cdc_recreate set it up.
  Result<ReverseReplicationHealth> ReverseHealth();
  // Before finalize: every carried slot has advanced on the target (its
  // consumer reads there), or an operator overrode the finding naming it.
  bool CdcSettled();
  // phases/cutover.cc
  Status Quiesce();
  Status Drain();
  Status Promote();
  Status Snapshot();
  Status Switch();
  // Takes the router's hold (leased when the router has leases) and starts
  // renewing it.
  Status TakeHold();
  // Before an effect inside the hold (`before` names it): OK while the
  // router's hold is still ours. A runner without a renewer (pgshiftd
  // restarted inside the hold) first asks the router whether the recorded
  // hold is still in place, and renews it from then on. Aborted once it is
  // not: the step fails and HandleFailure aborts the cutover (unfence,
  // release, back to ready) or, after the promotion, rolls back.
  Status HoldIsOurs(const std::string& before);
  // pgshiftd restarted inside a leased hold (result.hold_epoch): renews it
  // and keeps renewing it from here on. FailedPrecondition once the router
  // no longer holds it (it lapsed or was released).
  Status AdoptHold();
  // Stops renewing the hold and releases traffic.
  Status ReleaseHold();
  // The hold result.hold_epoch (and hold_instance_epochs) names.
  HoldLease RecordedHold() const;
  // PrepareCutover and the router's Prewarm: once when the standby gets in
  // sync (so their cost lands inside the sustained-lag window, well before
  // the hold) and again in cdc_prepare, where they only top up.
  void PrepareAhead();
  // phases/verify.cc
  Status Verify();
  // The route points at the target: every instance there (reconciled first)
  // or, for a route of several instances, at least one of them.
  Status RouteOnTarget();
  // Router::Reconcile toward `desired`, recorded: progress.route_instances,
  // an event and result.route_repoints per instance repointed. False for a
  // router of one instance (nothing to reconcile) or when it failed;
  // `changed` says whether it repointed one or saw them differently.
  bool ReconcileRoute(const Endpoint& desired, bool* changed = nullptr);
  // Waits for the background parity check; false while it runs or blocks
  // (or its outcome could not be recorded).
  bool ParitySettled();
  // phases/health.cc: the route's traffic through the router. SampleBaseline
  // (sync, ready) keeps progress.baseline; WatchHealth (each verify step)
  // judges the post-cutover traffic against it and acts on an anomaly
  // (options.on_anomaly: StartRollback, or an alert); CloseHealthWindow
  // records the window's verdict and FinalHealthReport the last one, at
  // finalize.
  std::optional<RouterReading> ReadRouter();
  void SampleBaseline();
  Status WatchHealth();
  void CloseHealthWindow();
  void FinalHealthReport();
  Status OnAnomaly(const std::string& reason);
  // phases/finalize.cc
  Status Finalize();
  // phases/rollback.cc
  Status RollingBack();
  // The reverse_replication path, traffic held: the source applies every
  // write the target committed, sequences and CDC slots follow.
  Status ApplyTargetWrites();
  // Before switch: release held traffic onto the unfenced source, back to ready.
  Status AbortCutover(const std::string& why);

  // runner.cc
  Tick StepPhase();
  // Reads the stored row into m_ and the typed record.
  Status Load();
  // Writes the typed record into m_ and commits it with the events waiting
  // for it and the removal of the operator actions applied since the last
  // commit. After a failed commit it writes nothing more in this step and
  // returns that failure (kept in commit_), so a step stops on it.
  Status Save();
  // Writes the events a step left waiting for a Save that did not come.
  Status FlushEvents();
  // Ends a step whose commit failed: drops what it did not record, backs off.
  Tick AfterFailedCommit();
  // Enters `next` and records it (with the step when `next` chains into it).
  Status Transition(Phase next, const std::string& message);
  // Enters `next` in the typed record only: the phase, its start, its event.
  void Enter(Phase next, const std::string& message);
  // The one place the state changes (recorded with the next Save).
  void SetState(MigrationState s);
  // Waits for an operator: state waiting, recorded at once if it changed.
  Status WaitForOperator();
  // Stops on blocking findings until an operator overrides them or rolls back.
  Status Block(const std::string& error, const std::string& advice = "");
  // Logs an event and keeps it for the next Save, in the same commit as
  // the record it explains (so a failed commit loses neither alone).
  void Note(const std::string& kind, const std::string& message);
  // Logs and records an event at once (a failed write is kept in commit_).
  // Inside the hold an info event is recorded with the next Save instead, in
  // the same commit: each commit is an fsync plus a wake-up on a busy
  // machine, and traffic waits.
  void Event(const std::string& kind, const std::string& message);
  void Log(const std::string& kind, const std::string& message) const;
  // Applies the queued operator actions in order (see runner.cc).
  Status HandleActions();
  Status HandleAction(const OperatorAction& a);
  // The queued request for `action` (cutover, finalize), or nullptr.
  const OperatorAction* Requested(const std::string& action) const;
  // Marks a queued request applied: the next Save removes it from the queue.
  void Consume(const OperatorAction& a);
  void HandleFailure(const Status& st);
  // Starts rolling back from the current phase.
  Status StartRollback(const std::string& message);
  // Replaces findings with the same id and subject, keeps an operator's override.
  void MergeFindings(const std::vector<checks::Finding>& fresh);
  // Replaces all findings, keeping the overrides of those found again.
  void ReplaceFindings(const std::vector<checks::Finding>& fresh);

  StateStore& store_;
  Clock& clock_;
  std::string id_;
  std::unique_ptr<MigrationEnv> env_;
  MigrationSpec spec_;
  const Lease lease_;  // this runner's: its owner id signs events, its token fences writes
  bool lost_ = false;  // a read or write found the lease changed hands
  // The stored row: identity, spec, findings, error, the pending action.
  // Its phase, state, progress and result are written from the typed
  // record below by Save().
  MigrationRecord m_;
  Phase phase_ = Phase::kPreflight;
  MigrationState state_ = MigrationState::kRunning;
  MigrationProgress progress_;
  MigrationResult result_;
  int consecutive_failures_ = 0;
  int failed_commits_ = 0;                      // consecutive steps whose commit failed
  Status commit_;                               // the first failed commit of this step
  std::string recorded_phase_;                  // the phase last loaded or committed
  std::vector<int64_t> applied_actions_;        // OperatorAction::seq, until Save()
  bool idle_ = false;                           // set by a phase step that is polling
  bool prepared_ahead_ = false;                 // PrepareAhead ran during this sync
  std::vector<MigrationEvent> unsaved_events_;  // Event() in the hold, until Save()
  bool unsaved_phase_ = false;                  // a ChainsInto phase, until Save()
  // Router readings, kept in memory only (a restarted pgshiftd starts each
  // span afresh): the baseline's first, the health window's first, and the
  // end of its last judged stretch; anomalous stretches in a row.
  std::optional<RouterReading> baseline_from_;
  int64_t baseline_read_ms_ = 0;
  std::optional<RouterReading> window_from_;
  std::optional<RouterReading> checkpoint_;
  int anomaly_streak_ = 0;
  // Renews the router's leased hold from quiesce until the migration leaves
  // the hold (Step drops it then), and a rollback's hold until its release.
  // Last: it stops before env_ goes.
  std::unique_ptr<HoldRenewer> renewer_;
};

}  // namespace pgshift
