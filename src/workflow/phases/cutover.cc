// Cutover: traffic is held, the source fenced, the target caught up,
// promoted and put behind the route. Every phase here is inside the hold
// (the phase table's in_hold): a failure before the target is promoted
// releases traffic onto the unfenced source (AbortCutover, rollback.cc); a
// failure after it rolls back.
//
// While traffic is held, a router with leases (pgshift-proxy) releases it on
// its own if pgshiftd stops renewing (it died): the runner's HoldRenewer
// renews it, and each effect inside the hold (fence, promote, switch) first
// checks that the hold is still this cutover's (HoldIsOurs). If it lapsed,
// the step fails and the cutover is aborted or rolled back as any failure
// there is; a restarted pgshiftd finds out the same way at its first step.
//
//   quiesce   holds traffic at transaction boundaries in the router, fences
//             the source for every role (the router's idle held sessions
//             are left alive) and writes the final marker. Leaves
//             result.hold_started_ms, fence_ms, fence_terminated,
//             fence_exempted, final_lsn, fenced_at_ms.
//   drain     waits for the target to replay the final LSN (and with
//             options.parity_before_promote_ms compares the frozen source
//             with the standby), then for every CDC consumer to confirm it,
//             and pauses them (workflow/cdc_slots.h). Leaves
//             result.drain_started_ms, cdc_slots' drained positions and
//             progress.replay_lsn.
//   promote   promotes the target (chained: committed with switch). Leaves
//             result.timeline, promoted_at_ms.
//   snapshot  sets the target's sequences to the fenced source's values,
//             exports the target's snapshot at the promotion point and
//             starts the data parity check against the frozen source
//             (chained: committed with switch). Leaves result.parity_started.
//   (cdc_recreate runs between snapshot and switch: phases/cdc.cc)
//   switch    routes to the target and releases held clients. Leaves
//             result.switched_at_ms and hold_ms, traffic on the target.
#include "common/faults.h"
#include "workflow/cdc_slots.h"
#include "workflow/defaults.h"
#include "workflow/phases/switch_report.h"
#include "workflow/runner.h"

namespace pgshift {

void MigrationRunner::PrepareAhead() {
  // pgshiftd's own standby sessions (the parity snapshots'), then the
  // router's: sessions log in on the standby (such sessions stay valid
  // through its promotion) and the switch takes those logins instead of
  // making them. A session that changes a setting afterwards gets a fresh
  // login here, or logs in again at the switch. Only an optimisation.
  const int64_t prepare_started = clock_.NowMs();
  env_->PrepareCutover();
  const int64_t prewarm_started = clock_.NowMs();
  if (Status pw = env_->router().Prewarm(env_->TargetEndpoint()); !pw.ok()) {
    Event("warning",
          "the router did not open logins on the target ahead of the switch: " + pw.message());
  }
  result_.prepare_ms = prewarm_started - prepare_started;
  result_.prewarm_ms = clock_.NowMs() - prewarm_started;
}

Status MigrationRunner::Quiesce() {
  if (!result_.hold_started_ms) {
    result_.hold_started_ms = clock_.NowMs();
    PGSHIFT_RETURN_IF_ERROR(Save());
  }
  PGSHIFT_RETURN_IF_ERROR(TakeHold());
  Event("info", "traffic held at transaction boundaries (" + env_->router().Kind() +
                    (result_.hold_epoch
                         ? ", hold " + std::to_string(*result_.hold_epoch) + " with a lease of " +
                               std::to_string(spec_.options.hold_lease_ms) + " ms"
                         : "") +
                    ")");
  // The router's held sessions cannot write and never use their source
  // backend again: the fence may leave those alive instead of terminating
  // them and waiting for their exit inside the hold. Only an optimisation:
  // without the list the fence terminates every client session.
  const Endpoint source = env_->SourceEndpoint();
  auto held = env_->router().HeldBackendPids(source);
  if (!held.ok()) {
    Event("warning",
          "the router did not list its held sessions' backends, so the fence "
          "terminates them all: " +
              held.status().message());
  }
  // The fault tests stop pgshiftd here: the hold has drained, the source is
  // not fenced yet.
  PGSHIFT_RETURN_IF_ERROR(FaultPoint("quiesce_held"));
  PGSHIFT_RETURN_IF_ERROR(HoldIsOurs("fence"));
  const int64_t fence_started = clock_.NowMs();
  PGSHIFT_ASSIGN_OR_RETURN(FenceResult fenced,
                           env_->FenceSource(held.ok() ? *held : HeldBackends{.server = source}));
  result_.fence_ms = clock_.NowMs() - fence_started;
  result_.fence_terminated = fenced.terminated;
  result_.fence_exempted = fenced.exempted;
  Event("info", "source fenced: new connections refused, " + std::to_string(fenced.terminated) +
                    " client session(s) terminated, " + std::to_string(fenced.exempted) +
                    " idle session(s) held by the router left alone");
  PGSHIFT_ASSIGN_OR_RETURN(Lsn final_lsn, env_->WriteFinalMarker("pgshift final " + id_));
  result_.final_lsn = final_lsn;
  result_.fenced_at_ms = clock_.NowMs();
  return Transition(Phase::kDrain, "final source LSN " + final_lsn.ToString());
}

Status MigrationRunner::Drain() {
  // After a restart, the first look at the hold: still ours, or abort.
  PGSHIFT_RETURN_IF_ERROR(HoldIsOurs("drain"));
  // Recorded with the phase change, or by the Save before polling again.
  if (!result_.drain_started_ms) result_.drain_started_ms = clock_.NowMs();
  if (!result_.final_lsn) return Internal("drain without a recorded final LSN");
  const Lsn final_lsn = *result_.final_lsn;
  // Traffic is held: look again every few ms for a short while rather than
  // at the engine's poll interval.
  TargetState t;
  const int64_t spin_until = clock_.NowMs() + workflow_defaults::kDrainSpinMs;
  do {
    PGSHIFT_ASSIGN_OR_RETURN(t, env_->InspectTarget());
    // A target that went down will not replay the final LSN: abort the
    // cutover now rather than hold traffic until drain_timeout_ms.
    if (!t.running) return Unavailable("the target stopped during drain; not promoting");
    if (t.replay_lsn >= final_lsn) break;
    clock_.SleepMs(workflow_defaults::kDrainPollMs);
  } while (clock_.NowMs() < spin_until);
  progress_.replay_lsn = t.replay_lsn;
  if (t.replay_lsn >= final_lsn) {
    if (spec_.options.parity_before_promote_ms > 0) {
      PGSHIFT_ASSIGN_OR_RETURN(auto found,
                               env_->QuickParity(spec_.options.parity_before_promote_ms));
      MergeFindings(found);
      std::string differ;
      for (const auto& f : found) {
        if (f.Blocks()) differ += (differ.empty() ? "" : ", ") + f.subject;
      }
      if (!differ.empty()) {
        return FailedPrecondition(
            "pre-promotion parity: the standby differs from the fenced "
            "source in " +
            differ + "; not promoting");
      }
    }
    std::vector<CdcSlot> slots = result_.cdc_slots.value_or(std::vector<CdcSlot>{});
    PGSHIFT_RETURN_IF_ERROR(
        DrainCdc(*env_, clock_, slots, final_lsn, spec_.options.cdc_drain_timeout_ms));
    if (!slots.empty()) {
      result_.cdc_slots = slots;
      PGSHIFT_RETURN_IF_ERROR(
          CatchUpAfterPause(*env_, clock_, SlotNameFor(id_), spec_.options.cdc_drain_timeout_ms));
      Event("info", std::to_string(slots.size()) +
                        " CDC consumer(s) confirmed the final LSN and were paused");
    }
    return Transition(Phase::kPromote, "target replayed the final LSN " + final_lsn.ToString() +
                                           " (at " + t.replay_lsn.ToString() + ")");
  }
  const int64_t waited = clock_.NowMs() - *result_.drain_started_ms;
  if (waited > spec_.options.drain_timeout_ms) {
    return Timeout("the target replayed only up to " + t.replay_lsn.ToString() + " of " +
                   final_lsn.ToString() + " within " +
                   std::to_string(spec_.options.drain_timeout_ms) + " ms");
  }
  idle_ = true;
  return Save();
}

Status MigrationRunner::Promote() {
  PGSHIFT_RETURN_IF_ERROR(HoldIsOurs("promotion"));
  PGSHIFT_ASSIGN_OR_RETURN(int timeline, env_->PromoteTarget());
  result_.timeline = timeline;
  result_.promoted_at_ms = clock_.NowMs();
  return Transition(Phase::kSnapshot, "target promoted, timeline " + std::to_string(timeline));
}

Status MigrationRunner::Snapshot() {
  // Sequences go on where the source's stopped, not past the values the
  // standby's WAL logged ahead. Here, before the switch: once clients write
  // on the target, setting a sequence back would hand out values twice. A
  // skip is what a failover does anyway, so not worth failing the cutover.
  if (auto aligned = env_->AlignSequencesWithSource(); !aligned.ok()) {
    Event("warning",
          "sequences on the target were not aligned with the source's, so their next "
          "values may skip some: " +
              aligned.status().message());
  }
  if (spec_.options.parity) {
    Status st = env_->StartParityCheck();
    if (st.ok()) {
      result_.parity_started = true;
      Event("info", "target snapshot exported at the promotion point; data parity check started");
    } else {
      // Parity verifies the cutover; it is not worth holding traffic over.
      MergeFindings({{.id = "data_parity",
                      .severity = checks::Severity::kWarning,
                      .message = "could not export a snapshot of the target, so the data parity "
                                 "check did not run: " +
                                 st.message(),
                      .remedy = "compare the source and target by hand before finalizing"}});
      Event("warning", "data parity check not started: " + st.message());
    }
  }
  return Transition(Phase::kCdcRecreate, "recreating the logical slots on the target");
}

Status MigrationRunner::Switch() {
  if (Status ours = HoldIsOurs("switch"); !ours.ok()) {
    // A pgshiftd that died after the switch, before recording it, finds the
    // hold released and the route on the target: only a switch under this
    // hold moves it there (a lapse before it releases to the source).
    // Clients write on the target now, and a rollback would discard that.
    auto view = env_->router().View();
    if (!view.ok() || view->held || !(view->upstream == env_->TargetEndpoint())) return ours;
    Event("warning",
          "the route already points at the target and is not held: the switch was "
          "made before this pgshiftd took over, and is recorded now");
  } else {
    // Under the hold's epoch: a hold that lapsed since is not switched.
    PGSHIFT_RETURN_IF_ERROR(result_.hold_epoch
                                ? env_->router().SwitchHeld(env_->TargetEndpoint(), RecordedHold())
                                : env_->router().SwitchTo(env_->TargetEndpoint()));
  }
  const int64_t now = clock_.NowMs();
  result_.switched_at_ms = now;
  const int64_t hold_ms = now - result_.hold_started_ms.value_or(now);
  result_.hold_ms = hold_ms;
  // What moved with the sessions and what was ended, on the timeline.
  if (std::string report = SwitchReportEvent(env_->router(), clock_, env_->TargetEndpoint());
      !report.empty())
    Event("info", report);
  return Transition(Phase::kVerify, "traffic switched to the target " +
                                        env_->TargetEndpoint().ToString() + " after a " +
                                        std::to_string(hold_ms) + " ms hold");
}

}  // namespace pgshift
