// CDC: every logical slot (each CDC pipeline) carried from the source to the
// target so its consumer sees each change exactly once (workflow/cdc_slots.h says
// why). Preflight plans the slots (phases/prepare.cc) and drain waits for
// their consumers and pauses them (phases/cutover.cc); here:
//
//   cdc_prepare   records each slot's position and consumer on the source,
//                 decides whether reverse replication can carry the
//                 target's writes back (PlanReverseReplication),
//                 tops up the cutover's standby sessions and the router's
//                 logins (PrepareAhead), then enters quiesce. Leaves
//                 result.cdc_slots (state recorded).
//   cdc_recreate  after promote and snapshot, before the switch (chained:
//                 committed with switch): each slot created on the target
//                 with the same name, plugin and two_phase, and reverse
//                 replication set up. Leaves result.cdc_slots (state
//                 recreated, recreated_lsn), result.reverse_replication_on
//                 (and reverse_replication_off saying why not).
// And verify's gate before finalize (CdcSettled): each carried slot has
// advanced on the target (finding cdc_slot_advanced, blocking until then
// or overridden).
#include "workflow/cdc_slots.h"
#include "workflow/runner.h"

namespace pgshift {

Status MigrationRunner::CdcPrepare() {
  std::vector<CdcSlot> slots = result_.cdc_slots.value_or(std::vector<CdcSlot>{});
  PGSHIFT_RETURN_IF_ERROR(RecordCdc(*env_, slots));
  const size_t n = slots.size();
  result_.cdc_slots = std::move(slots);
  PlanReverseReplication();
  // Tops up what was opened when the standby got in sync (sessions that
  // arrived since, a database created since); the router answers once its
  // logins are open, so the hold does not start while they are made.
  PrepareAhead();
  return Transition(Phase::kQuiesce,
                    "recorded " + std::to_string(n) + " logical slot position(s); holding traffic");
}

Status MigrationRunner::CdcRecreate() {
  // Before any client write reaches the target: see workflow/cdc_slots.h for why
  // the consumers then miss nothing and see nothing twice.
  std::vector<CdcSlot> slots = result_.cdc_slots.value_or(std::vector<CdcSlot>{});
  PGSHIFT_RETURN_IF_ERROR(RecreateCdc(*env_, slots));
  const size_t n = slots.size();
  if (n > 0) result_.cdc_slots = std::move(slots);
  if (result_.reverse_replication_on.value_or(false)) {
    // Still before any client write: the subscription misses none of them.
    Status st = env_->EnsureReverseReplication();
    if (!st.ok()) {
      // Not worth failing a cutover over: a rollback then needs the
      // operator's consent to lose the target's writes.
      result_.reverse_replication_on = false;
      result_.reverse_replication_off = "could not be set up: " + st.message();
      Event("warning", "reverse replication is off: " + st.message());
      (void)env_->DropReverseReplication();
    }
  }
  return Transition(Phase::kSwitch,
                    std::to_string(n) + " logical slot(s) on the target; releasing traffic to it");
}

void MigrationRunner::PlanReverseReplication() {
  std::string off;
  std::vector<checks::Finding> found;
  if (!spec_.options.reverse_replication) {
    off = "turned off (options.reverse_replication)";
  } else if (!env_->Capabilities().reverse_replication) {
    off = "the provider has none";
  } else if (auto f = env_->ReverseReplicationFindings(); !f.ok()) {
    off = "cannot check what it would carry: " + f.status().message();
  } else {
    // Read on the standby just before the hold; what changes inside the
    // hold is DDL, which the rollback's own check catches.
    for (auto& x : *f) {
      off += (off.empty() ? "" : "; ") + x.subject + ": " + x.message;
      x.severity = checks::Severity::kWarning;  // a rollback asks; finalize does not wait
      found.push_back(std::move(x));
    }
  }
  if (found.empty()) {
    found.push_back({.id = "reverse_replication",
                     .severity = off.empty() ? checks::Severity::kOk : checks::Severity::kWarning,
                     .message = off.empty() ? "writes on the target flow back to the source "
                                              "until finalize: a rollback keeps them"
                                            : "reverse replication is " + off,
                     .remedy = off.empty() ? ""
                                           : "a rollback after the switch loses the "
                                             "target's writes (confirmation asked)"});
  }
  MergeFindings(found);
  result_.reverse_replication_on = off.empty();
  if (off.empty()) {
    result_.reverse_replication_off.reset();
  } else {
    result_.reverse_replication_off = off;
  }
}

bool MigrationRunner::CdcSettled() {
  if (!result_.cdc_slots || result_.cdc_slots->empty()) return true;
  auto waiting = ObserveCdcOnTarget(*env_, *result_.cdc_slots);
  if (!waiting.ok()) {
    Event("warning", "cannot read the carried slots on the target: " + waiting.status().message());
    return false;
  }
  std::vector<checks::Finding> found;
  for (const auto& s : *result_.cdc_slots) {
    if (s.state < CdcSlotState::kRecreated) continue;
    const bool advanced = s.state == CdcSlotState::kAdvanced;
    found.push_back(
        {.id = "cdc_slot_advanced",
         .severity = advanced ? checks::Severity::kOk : checks::Severity::kBlocking,
         .subject = s.name,
         .value = s.target_confirmed_lsn,
         .threshold = s.recreated_lsn,
         .message = advanced ? "the consumer of " + s.name + " reads from the target"
                             : "the consumer of " + s.name +
                                   " has not confirmed anything on the target since the slot "
                                   "was recreated there; finalize waits, so its source slot "
                                   "is kept",
         .remedy = advanced ? ""
                            : "check that the consumer reconnected (through the router), or "
                              "override with a reason to finalize without it"});
  }
  MergeFindings(found);
  if (!Save().ok()) return false;
  for (const auto& f : m_.findings) {
    if (f.value("id", "") == "cdc_slot_advanced" && f.value("severity", "") == "blocking" &&
        !f.value("overridden", false)) {
      return false;
    }
  }
  return true;
}

}  // namespace pgshift
