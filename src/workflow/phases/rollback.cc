// Rollback: back to the source.
//
//   rolling_back  entered from any phase before finalize (an operator's
//                 rollback, a failure after promotion, a failed verify).
//                 Takes one of three paths (result.rollback_path,
//                 workflow/rollback_plan.h):
//                   source_untouched       before the switch: no client
//                                          wrote to the target;
//                   reverse_replication    after the switch: with traffic
//                                          held, the source first applies
//                                          every write the target committed,
//                                          its sequences are set past the
//                                          target's and the CDC slots moved
//                                          past what it applied
//                                          (ApplyTargetWrites);
//                   discard_target_writes  after the switch, confirmed by
//                                          the operator or forced by a
//                                          failure: the target's writes
//                                          since the switch are lost.
//                 Then routes back to the source, unfences it, releases
//                 traffic, tears reverse replication down, stops the target
//                 and drops the slot. Each step checks the world first, so
//                 a restart anywhere runs the rest again: the hold (leased,
//                 renewed while it lasts, adopted by a restarted pgshiftd)
//                 is joined or taken again until the source is unfenced. Leaves
//                 result.rollback_from, rollback_path, rollback_hold_ms (and
//                 the reverse path's rollback_target_lsn,
//                 rollback_applied_lsn, rollback_sequences_synced),
//                 rolled_back_at_ms, the phase rolled_back (state
//                 rolled_back) and the target's data directory.
//   AbortCutover  a failure inside the hold before the target is promoted:
//                 unfences the source and releases held traffic onto it,
//                 back to ready. Forgets result.final_lsn, hold_started_ms
//                 and drain_started_ms; leaves the migration waiting (auto
//                 attempts exhausted) or failed (the release itself failed).
#include "common/faults.h"
#include "workflow/cdc_slots.h"
#include "workflow/defaults.h"
#include "workflow/phases/switch_report.h"
#include "workflow/rollback_plan.h"
#include "workflow/runner.h"

namespace pgshift {

Status MigrationRunner::StartRollback(const std::string& message) {
  result_.rollback_from = phase_;
  return Transition(Phase::kRollingBack, message);
}

Status MigrationRunner::ApplyTargetWrites() {
  std::vector<CdcSlot> cdc = result_.cdc_slots.value_or(std::vector<CdcSlot>{});
  const int64_t timeout = spec_.options.rollback_apply_timeout_ms;
  // Every write the target committed before the hold closed.
  PGSHIFT_ASSIGN_OR_RETURN(ReverseReplicationState at_hold,
                           env_->InspectReverseReplication(/*mark=*/true));
  if (!at_hold.in_place) {
    return FailedPrecondition(
        "reverse replication is not in place (the subscriptions or the "
        "target's slots are missing); roll back with "
        "discard_target_writes to route back without the target's writes");
  }
  PGSHIFT_RETURN_IF_ERROR(DrainCdcOnTarget(*env_, clock_, cdc, at_hold.target_lsn, timeout));
  // Read again once the consumers are paused: no consumer knows of a
  // target position past this one (cdc_slots.h, ReturnCdcToSource).
  PGSHIFT_ASSIGN_OR_RETURN(ReverseReplicationState st,
                           env_->InspectReverseReplication(/*mark=*/true));
  result_.rollback_target_lsn = st.target_lsn;
  const int64_t started = clock_.NowMs();
  while (st.applied_lsn < st.target_lsn) {
    if (clock_.NowMs() - started > timeout) {
      return Timeout("the source applied the target's writes only up to " +
                     st.applied_lsn.ToString() + " of " + st.target_lsn.ToString() + " within " +
                     std::to_string(timeout) + " ms" +
                     (st.apply_error.empty() ? "" : ": " + st.apply_error));
    }
    clock_.SleepMs(workflow_defaults::kRollbackApplyPollMs);
    const Lsn target_lsn = st.target_lsn;
    PGSHIFT_ASSIGN_OR_RETURN(st, env_->InspectReverseReplication(/*mark=*/false));
    st.target_lsn = target_lsn;  // the mark read after the pause is the goal
  }
  result_.rollback_applied_lsn = st.applied_lsn;
  PGSHIFT_RETURN_IF_ERROR(FaultPoint("rollback_applied"));
  PGSHIFT_ASSIGN_OR_RETURN(int moved, env_->SyncSequencesToSource());
  result_.rollback_sequences_synced = moved;
  return ReturnCdcToSource(*env_, cdc, st.target_lsn);
}

Status MigrationRunner::RollingBack() {
  Router& router = env_->router();
  const bool routed = router.Kind() != "none";
  bool on_target = false;
  if (routed) {
    auto cur = router.Current();
    on_target = cur.ok() && *cur == env_->TargetEndpoint();
  }
  if (!result_.rollback_path) {
    result_.rollback_path = RollbackPathName(RollbackPathNow(
        result_.rollback_from.value_or(Phase::kVerify), result_, /*discard=*/false));
    Note("info", "rolling back by path " + *result_.rollback_path);
    PGSHIFT_RETURN_IF_ERROR(Save());
  }
  const std::string path = *result_.rollback_path;
  const bool reverse = path == RollbackPathName(RollbackPath::kReverseReplication);
  const bool after_switch = reverse || path == RollbackPathName(RollbackPath::kDiscardTargetWrites);
  const std::vector<CdcSlot> cdc = result_.cdc_slots.value_or(std::vector<CdcSlot>{});
  if (reverse && !routed) {
    // No router to hold: clients reach the target themselves, so this
    // applies what the target has now, best effort.
    PGSHIFT_RETURN_IF_ERROR(ApplyTargetWrites());
  }
  if (on_target && reverse) {
    // Before the hold, so that the hold decodes only what is applied from
    // here on: the source slots move past what the source applied so far.
    // Safe early: the consumers get those changes from the target's slots,
    // and the hold waits for them to confirm (cdc_slots.h).
    if (Status early = ReturnCdcToSource(*env_, cdc, Lsn{}); !early.ok()) {
      Event("warning",
            "could not move the CDC slots on the source ahead of the hold: " + early.message());
    }
  }
  // pgshiftd restarted inside a leased hold (the cutover's, failed after
  // the promotion, or this rollback's): renewed from here on, so that it
  // does not lapse while the rest runs. Gone, there is nothing to keep.
  const bool in_a_hold = InHold(result_.rollback_from.value_or(Phase::kVerify)) ||
                         result_.rollback_hold_started_ms.has_value();
  const bool adopted = in_a_hold && !renewer_ && AdoptHold().ok();
  // The rollback holds traffic when it finds the route on the target. Found
  // on the source after its own hold began (a restart after routing back),
  // it holds again until the source is unfenced: a hold still in place is
  // joined, and one that lapsed meanwhile does not leave clients facing
  // the fence.
  const bool holds = routed && (on_target || result_.rollback_hold_started_ms.has_value());
  if (holds) {
    if (on_target && !adopted) {
      result_.rollback_hold_started_ms = clock_.NowMs();
      PGSHIFT_RETURN_IF_ERROR(Save());  // before the hold: a restart knows it began
    }
    Status held = TakeHold();
    if (!held.ok()) {
      if (reverse && on_target) {
        return held.Wrap("holding traffic before applying the target's writes");
      }
      Event("warning", "could not hold traffic before routing back: " + held.message());
    }
    if (reverse && on_target) {
      Status applied = ApplyTargetWrites();
      // A hold that lapsed let writes reach the target after those applied.
      if (applied.ok()) applied = HoldIsOurs("route back");
      if (!applied.ok()) {
        // Traffic goes on, on the target: the step is tried again later.
        Status released = ReleaseHold();
        return released.ok() ? applied : applied.Wrap("release failed: " + released.message());
      }
      Note("info", "the source applied the target's writes up to " +
                       result_.rollback_applied_lsn->ToString() + "; " +
                       std::to_string(*result_.rollback_sequences_synced) +
                       " sequence(s) moved ahead of the target's");
    } else if (on_target && after_switch && !cdc.empty()) {
      // The target's writes are dropped, but a consumer may know of target
      // positions past the source's end of WAL: move the slots past them.
      (void)router.PauseReplication();
      Lsn past;
      if (auto st = env_->InspectReverseReplication(/*mark=*/false); st.ok()) {
        past = st->target_lsn;
      }
      if (Status moved = ReturnCdcToSource(*env_, cdc, past); !moved.ok()) {
        Event("warning",
              "could not move the CDC slots on the source past the target's "
              "positions: " +
                  moved.message());
      }
    }
  }
  if (routed) {
    PGSHIFT_RETURN_IF_ERROR(router.Repoint(env_->SourceEndpoint()));
    // Streaming CDC consumers never reach a boundary on their own: those on
    // the target are ended so they reconnect (after the release) to the
    // source's slots. Those on the source stay: a reconnect would replay to
    // them what they had not confirmed yet.
    if (!cdc.empty() && !reverse) {
      auto streaming = router.ReplicationSessions(env_->TargetEndpoint());
      if (!streaming.ok() || !streaming->empty()) {
        auto paused = router.PauseReplication();
        if (!paused.ok()) {
          Event("warning", "could not pause the CDC consumers: " + paused.status().message());
        }
      }
    }
  }
  // The target gets no more writes: its subscription on the source goes
  // before the source takes writes of its own.
  if (result_.reverse_replication_on.value_or(false)) {
    PGSHIFT_RETURN_IF_ERROR(env_->DropReverseReplication());
  }
  PGSHIFT_RETURN_IF_ERROR(env_->UnfenceSource());
  PGSHIFT_RETURN_IF_ERROR(ReleaseHold());
  if (holds && result_.rollback_hold_started_ms) {
    result_.rollback_hold_ms = clock_.NowMs() - *result_.rollback_hold_started_ms;
  }
  if (routed) {
    if (std::string report = SwitchReportEvent(router, clock_, env_->SourceEndpoint());
        !report.empty())
      Event("info", "rollback " + report);
  }
  // Stop the standby first so it does not reconnect to the slot being dropped.
  PGSHIFT_RETURN_IF_ERROR(env_->StopTarget());
  PGSHIFT_RETURN_IF_ERROR(env_->DropSlot(SlotNameFor(id_)));
  result_.rolled_back_at_ms = clock_.NowMs();
  return Transition(Phase::kRolledBack,
                    "rolled back (" + path + "): traffic on the source " +
                        env_->SourceEndpoint().ToString() +
                        ", source unfenced, target stopped (data directory kept)");
}

Status MigrationRunner::AbortCutover(const std::string& why) {
  // The source is authoritative until switch: unfence first, then let held
  // clients go on to it. (Reverse replication is set up only after the
  // promotion, which a failure here has not reached.)
  Status unfence = env_->UnfenceSource();
  Status release = env_->router().Release();
  result_.final_lsn.reset();
  result_.hold_started_ms.reset();
  result_.drain_started_ms.reset();
  const int attempts = result_.cutover_attempts.value_or(0);
  // Recorded with the outcome below, in one commit.
  Enter(Phase::kReady, "cutover aborted, traffic released to the source: " + why);
  m_.error = "cutover aborted: " + why;
  if (!unfence.ok()) m_.error += "; unfence failed: " + unfence.message();
  if (!release.ok()) m_.error += "; release failed: " + release.message();
  if (!unfence.ok() || !release.ok()) {
    SetState(MigrationState::kFailed);  // an operator must look before traffic is trusted
  } else if (spec_.options.auto_cutover && attempts >= spec_.options.max_auto_cutover_attempts) {
    SetState(MigrationState::kWaiting);
  }
  Note("error", m_.error);
  return Save();
}

}  // namespace pgshift
