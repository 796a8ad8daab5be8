// Verify: traffic runs on the target; it is watched before the source is
// retired.
//
//   verify  probes a write on the target, checks the route and judges the
//           traffic through the router against the pre-migration baseline
//           (WatchHealth, phases/health.cc: an anomaly rolls back or alerts,
//           options.on_anomaly) for the health window (options.verify_ms);
//           then waits for the data
//           parity check started in snapshot (ParitySettled) and for every
//           carried CDC slot to advance on the target (CdcSettled); then waits for
//           `finalize` (state waiting), or finalizes at once with
//           options.auto_finalize. A failed probe rolls back (runner.cc). A
//           parity difference blocks finalize until overridden or rolled
//           back. Leaves result.verify_started_ms, verify_probes, health, verified,
//           parity_done, parity_blocked, progress.parity and the
//           data_parity findings.
#include "workflow/runner.h"

namespace pgshift {

Status MigrationRunner::Verify() {
  if (!result_.verified.value_or(false)) {
    if (!result_.verify_started_ms) {
      result_.verify_started_ms = clock_.NowMs();
      PGSHIFT_RETURN_IF_ERROR(Save());
    }
    PGSHIFT_RETURN_IF_ERROR(env_->ProbeTargetWrite());
    if (env_->router().Kind() != "none") {
      PGSHIFT_ASSIGN_OR_RETURN(Endpoint cur, env_->router().Current());
      if (!(cur == env_->TargetEndpoint())) {
        return FailedPrecondition("the route points at " + cur.ToString() + ", not the target " +
                                  env_->TargetEndpoint().ToString());
      }
    }
    result_.verify_probes = result_.verify_probes.value_or(0) + 1;
    PGSHIFT_RETURN_IF_ERROR(WatchHealth());
    if (phase_ != Phase::kVerify) return Status::OK();  // an anomaly started the rollback
    const int64_t elapsed = clock_.NowMs() - *result_.verify_started_ms;
    if (elapsed < spec_.options.verify_ms) {
      idle_ = true;
      return Save();
    }
    result_.verified = true;
    Note("info", "post-cutover health window passed (" + std::to_string(*result_.verify_probes) +
                     " write probes)");
    CloseHealthWindow();
    PGSHIFT_RETURN_IF_ERROR(Save());
  }
  if (!ParitySettled() || !CdcSettled()) {
    idle_ = true;
    return Status::OK();
  }
  if (const OperatorAction* requested = Requested("finalize")) {
    Consume(*requested);  // removed with the transition, in one commit
  } else if (!spec_.options.auto_finalize) {
    idle_ = true;
    return WaitForOperator();
  }
  return Transition(Phase::kFinalize, "finalizing: dropping the source's slot and retiring it");
}

bool MigrationRunner::ParitySettled() {
  if (!spec_.options.parity || result_.parity_done.value_or(false)) {
    return !result_.parity_blocked.value_or(false) || BlockingSummary(m_.findings).empty();
  }
  if (!result_.parity_started.value_or(false)) return true;
  ParityState ps = env_->Parity();
  if (!ps.started) {
    MergeFindings({{.id = "data_parity",
                    .severity = checks::Severity::kWarning,
                    .message = "the data parity check was interrupted (pgshiftd restarted) and "
                               "the promotion snapshot is gone",
                    .remedy = "compare the source and target by hand before finalizing"}});
    result_.parity_done = true;
    return Save().ok();
  }
  if (!ps.done) {
    progress_.parity = ParityProgress{
        .tables_total = ps.tables_total, .tables_done = ps.tables_done, .current = ps.current};
    (void)Save();  // only progress; a failure is kept in commit_ and ends the step
    return false;
  }
  MergeFindings(ps.findings);
  result_.parity_done = true;
  progress_.parity = ParityProgress{.tables_total = ps.tables_total, .tables_done = ps.tables_done};
  std::string blocking = BlockingSummary(m_.findings);
  if (!blocking.empty()) {
    result_.parity_blocked = true;
    (void)Block("finalize refused: " + blocking +
                " (roll back with discard_target_writes, or override with a reason)");
    return false;
  }
  Note("info",
       "data parity: source and target match (" + std::to_string(ps.tables_done) + " tables)");
  return Save().ok();
}

}  // namespace pgshift
