// Rollback: back to the source, which was never written since the fence.
//
//   rolling_back  entered from any phase before finalize (an operator's
//                 rollback, a failure after promotion, a failed verify):
//                 routes back to the source (holding traffic first if it is
//                 on the target), unfences the source, releases traffic,
//                 stops the target and drops the slot. Leaves
//                 result.rollback_from, rolled_back_at_ms, the phase
//                 rolled_back (state rolled_back) and the target's data
//                 directory.
//   AbortCutover  a failure inside the hold before the target is promoted:
//                 unfences the source and releases held traffic onto it,
//                 back to ready. Forgets result.final_lsn, hold_started_ms
//                 and drain_started_ms; leaves the migration waiting (auto
//                 attempts exhausted) or failed (the release itself failed).
#include "workflow/runner.h"

namespace pgshift {

void MigrationRunner::StartRollback(const std::string& message) {
  result_.rollback_from = phase_;
  Transition(Phase::kRollingBack, message);
}

Status MigrationRunner::RollingBack() {
  Router& router = env_->router();
  if (router.Kind() != "none") {
    auto cur = router.Current();
    if (cur.ok() && *cur == env_->TargetEndpoint()) {
      Status held = router.Hold(spec_.options.hold_timeout_ms);
      if (!held.ok()) {
        Event("warning", "could not hold traffic before routing back: " + held.message());
      }
    }
    PGSHIFT_RETURN_IF_ERROR(router.Repoint(env_->SourceEndpoint()));
    // Streaming CDC consumers never reach a boundary on their own: end their
    // sessions so they reconnect (after the release) to the source's slots.
    if (result_.cdc_slots && !result_.cdc_slots->empty()) {
      auto paused = router.PauseReplication();
      if (!paused.ok()) {
        Event("warning", "could not pause the CDC consumers: " + paused.status().message());
      }
    }
  }
  PGSHIFT_RETURN_IF_ERROR(env_->UnfenceSource());
  PGSHIFT_RETURN_IF_ERROR(router.Release());
  // Stop the standby first so it does not reconnect to the slot being dropped.
  PGSHIFT_RETURN_IF_ERROR(env_->StopTarget());
  PGSHIFT_RETURN_IF_ERROR(env_->DropSlot(SlotNameFor(id_)));
  result_.rolled_back_at_ms = clock_.NowMs();
  Transition(Phase::kRolledBack, "rolled back: traffic on the source " +
                                     env_->SourceEndpoint().ToString() +
                                     ", source unfenced, target stopped (data directory kept)");
  return Status::OK();
}

void MigrationRunner::AbortCutover(const std::string& why) {
  // The source is authoritative until switch: unfence first, then let held
  // clients go on to it.
  Status unfence = env_->UnfenceSource();
  Status release = env_->router().Release();
  result_.final_lsn.reset();
  result_.hold_started_ms.reset();
  result_.drain_started_ms.reset();
  const int attempts = result_.cutover_attempts.value_or(0);
  Transition(Phase::kReady, "cutover aborted, traffic released to the source: " + why);
  m_.error = "cutover aborted: " + why;
  if (!unfence.ok()) m_.error += "; unfence failed: " + unfence.message();
  if (!release.ok()) m_.error += "; release failed: " + release.message();
  if (!unfence.ok() || !release.ok()) {
    SetState(MigrationState::kFailed);  // an operator must look before traffic is trusted
  } else if (spec_.options.auto_cutover && attempts >= spec_.options.max_auto_cutover_attempts) {
    SetState(MigrationState::kWaiting);
  }
  Save();
  Event("error", m_.error);
}

}  // namespace pgshift
