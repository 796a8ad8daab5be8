// Prepare: the checks before anything is created, and the target's build.
//
//   preflight  connects to the source and checks it (version, wal_level,
//              sender and slot capacity, disk, hazards such as unlogged
//              tables, prepared transactions, inactive slots) and that the
//              router's route serves it (route_check.h). Leaves the
//              findings; blocking ones stop the migration (state blocked)
//              until fixed, overridden with a reason, or rolled back.
//   provision  creates the physical slot on the source, takes the base
//              backup into the target and starts it as a standby. Leaves
//              result.slot, progress.basebackup_pct, and the target running
//              in recovery.
//
// Each step is idempotent: it looks at the world, does what is missing,
// records the outcome and transitions.
#include "workflow/cdc_slots.h"
#include "workflow/route_check.h"
#include "workflow/runner.h"

namespace pgshift {

Status MigrationRunner::Preflight() {
  PGSHIFT_ASSIGN_OR_RETURN(auto findings, env_->PreflightFindings());
  PGSHIFT_ASSIGN_OR_RETURN(auto cdc, PlanCdc(*env_));
  for (auto& f : CdcFindings(cdc, spec_.options.cdc_drain_timeout_ms)) findings.push_back(f);
  if (auto route = RouteFinding(*env_)) findings.push_back(std::move(*route));
  result_.cdc_slots = std::move(cdc);
  ReplaceFindings(findings);
  std::string blocking = BlockingSummary(m_.findings);
  if (!blocking.empty()) {
    idle_ = true;
    return Block("preflight found blocking problems: " + blocking,
                 " (fix them, or override one with a reason, or roll back)");
  }
  return Transition(Phase::kProvision, "preflight passed (" + std::to_string(m_.findings.size()) +
                                           " checks); building the target");
}

Status MigrationRunner::Provision() {
  const std::string slot = SlotNameFor(id_);
  PGSHIFT_RETURN_IF_ERROR(env_->EnsurePhysicalSlot(slot));
  if (result_.slot != slot) {
    result_.slot = slot;
    Note("info", "physical replication slot " + slot + " in place on the source");
    PGSHIFT_RETURN_IF_ERROR(Save());
  }
  int last_pct = -1;
  // Only progress: a failed commit of it ends the step once the copy is done.
  PGSHIFT_RETURN_IF_ERROR(env_->CreateReplica(slot, [&](int pct) {
    if (pct == last_pct) return;
    last_pct = pct;
    progress_.basebackup_pct = pct;
    (void)Save();
  }));
  PGSHIFT_RETURN_IF_ERROR(commit_);
  PGSHIFT_ASSIGN_OR_RETURN(TargetState t, env_->InspectTarget());
  if (!t.running || !t.in_recovery) {
    return FailedPrecondition("the target at " + env_->TargetEndpoint().ToString() +
                              " is not running as a standby after provisioning");
  }
  progress_.basebackup_pct = 100;
  return Transition(Phase::kSync,
                    "target running as a physical replica at " + env_->TargetEndpoint().ToString());
}

}  // namespace pgshift
