// Sync: the standby streams until its lag stays low, is validated, and waits
// for the cutover.
//
//   sync      samples the replication lag and the WAL rates every poll
//             (SampleLag) until the lag has stayed under the thresholds for
//             options.sustain_ms; opens the cutover's standby sessions and
//             the router's logins ahead the first time it is in sync. Leaves
//             the last sample and the lag gate in progress (lag_bytes,
//             lag_seconds, source_wal_bps, replay_bps, in_sync_ms, ...), and
//             the route's traffic through the router (progress.baseline,
//             SampleBaseline in phases/health.cc; ready keeps sampling it).
//   validate  checks that the target can take over (parameters,
//             extensions, slot health) and records the sustained lag as a
//             finding. Leaves the validation findings; blocking ones stop
//             the migration (state blocked).
//   ready     keeps sampling the lag and waits for `cutover` (state
//             waiting), or starts it at once with options.auto_cutover
//             while attempts remain. Leaves result.cutover_attempts.
#include <algorithm>

#include "workflow/runner.h"

namespace pgshift {
namespace {

// True when the standby's data directory is in place but its server is
// down (it crashed, was killed, its host restarted): nothing but pgshift
// would start it again, and its slot on the source kept the WAL it missed.
bool TargetStopped(MigrationEnv& env) {
  auto t = env.InspectTarget();
  return t.ok() && t->exists && !t->running;
}

}  // namespace

Status MigrationRunner::SampleLag() {
  const std::string slot = SlotNameFor(id_);
  auto sampled = env_->Lag(slot);
  if (!sampled.ok() && TargetStopped(*env_)) {
    // A step checks the world rather than trusting it: the standby is
    // started again (the replica in place is kept), and this attempt still
    // counts as failed, with the reason, so one that does not come back
    // ends the migration as failed after max_step_attempts.
    Event("warning",
          "the target is not running (stopped or crashed; see its server log): "
          "starting it again as a standby of the source");
    PGSHIFT_RETURN_IF_ERROR(env_->CreateReplica(slot, [](int) {}).Wrap("restarting the target"));
    return Unavailable("the target was down and has been started again (" +
                       sampled.status().message() + ")");
  }
  PGSHIFT_RETURN_IF_ERROR(sampled.status());
  const ReplicationLag& lag = *sampled;
  const int64_t now = clock_.NowMs();
  MigrationProgress& p = progress_;
  const int64_t prev_at = p.sample_at_ms.value_or(0);
  if (prev_at > 0 && now > prev_at) {
    const double dt = (now - prev_at) / 1000.0;
    const double src_bps = LsnDiff(lag.source_lsn, p.source_lsn.value_or(Lsn{})) / dt;
    const double rep_bps = LsnDiff(lag.replay_lsn, p.replay_lsn.value_or(Lsn{})) / dt;
    p.source_wal_bps = src_bps;
    p.replay_bps = rep_bps;
    p.peak_source_wal_bps = std::max(p.peak_source_wal_bps.value_or(0.0), src_bps);
    p.peak_replay_bps = std::max(p.peak_replay_bps.value_or(0.0), rep_bps);
  }
  p.sample_at_ms = now;
  p.source_lsn = lag.source_lsn;
  p.replay_lsn = lag.replay_lsn;
  p.lag_bytes = lag.bytes;
  p.lag_seconds = lag.seconds;
  const auto& o = spec_.options;
  const bool under = static_cast<int64_t>(lag.bytes) <= o.lag_threshold_bytes &&
                     lag.seconds <= o.lag_threshold_seconds;
  if (!under) {
    p.in_sync_since_ms = 0;
    p.in_sync_ms = 0;
  } else {
    const int64_t since = p.in_sync_since_ms.value_or(0) == 0 ? now : *p.in_sync_since_ms;
    p.in_sync_since_ms = since;
    p.in_sync_ms = now - since;
  }
  p.sustain_ms = o.sustain_ms;
  SampleBaseline();
  return Save();
}

Status MigrationRunner::Sync() {
  PGSHIFT_RETURN_IF_ERROR(SampleLag());
  MergeFindings(env_->SyncFindings());
  const int64_t in_sync_ms = progress_.in_sync_ms.value_or(0);
  // In sync for the first time: open the cutover's standby sessions and
  // logins now. Their cost (new backends are dear) then falls inside the
  // window that must show the lag staying low, not just before the hold.
  if (in_sync_ms > 0 && !prepared_ahead_) {
    prepared_ahead_ = true;
    PrepareAhead();
  }
  if (in_sync_ms >= spec_.options.sustain_ms) {
    return Transition(Phase::kValidate, "replay lag stayed under " +
                                            std::to_string(spec_.options.lag_threshold_bytes) +
                                            " bytes for " +
                                            std::to_string(spec_.options.sustain_ms) + " ms");
  }
  idle_ = true;
  return Status::OK();
}

Status MigrationRunner::Validate() {
  PGSHIFT_ASSIGN_OR_RETURN(TargetState t, env_->InspectTarget());
  if (!t.running || !t.in_recovery) {
    return FailedPrecondition(
        "the target is not running as a standby (running=" + std::to_string(t.running) + ")");
  }
  PGSHIFT_ASSIGN_OR_RETURN(auto findings, env_->ValidateFindings());
  MergeFindings(findings);
  // The sync gate that let us here is the record of sustained lag.
  MergeFindings(
      {{.id = "lag_sustained",
        .severity = checks::Severity::kOk,
        .value = progress_.in_sync_ms.value_or(0),
        .threshold = spec_.options.sustain_ms,
        .message = "replay lag stayed under " + std::to_string(spec_.options.lag_threshold_bytes) +
                   " bytes / " + std::to_string(spec_.options.lag_threshold_seconds) +
                   " s for the whole window (ms)"}});
  std::string blocking = BlockingSummary(m_.findings);
  if (!blocking.empty()) {
    idle_ = true;
    return Block("validation found blocking problems: " + blocking);
  }
  return Transition(Phase::kReady, spec_.options.auto_cutover
                                       ? "validated; cutting over automatically"
                                       : "validated; waiting for `pgshift migration cutover`");
}

Status MigrationRunner::Ready() {
  PGSHIFT_RETURN_IF_ERROR(SampleLag());
  const OperatorAction* requested = Requested("cutover");
  const int attempts = result_.cutover_attempts.value_or(0);
  const bool automatic = spec_.options.auto_cutover &&
                         attempts < spec_.options.max_auto_cutover_attempts &&
                         state_ != MigrationState::kWaiting;
  if (!requested && !automatic) {
    idle_ = true;
    return WaitForOperator();
  }
  if (progress_.in_sync_ms.value_or(0) <= 0) {
    // Cutting over while far behind would hold traffic for the whole catch-up.
    idle_ = true;
    return Status::OK();
  }
  const bool approved = requested != nullptr;
  if (approved) Consume(*requested);  // removed with the transition, in one commit
  result_.cutover_attempts = attempts + 1;
  return Transition(Phase::kCdcPrepare,
                    approved ? "cutover approved by operator" : "automatic cutover");
}

}  // namespace pgshift
