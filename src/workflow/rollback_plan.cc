#include "workflow/rollback_plan.h"

#include <string>

namespace pgshift {

using nlohmann::json;

const char* RollbackPathName(RollbackPath p) {
  switch (p) {
    case RollbackPath::kSourceUntouched:
      return "source_untouched";
    case RollbackPath::kReverseReplication:
      return "reverse_replication";
    case RollbackPath::kDiscardTargetWrites:
      return "discard_target_writes";
    case RollbackPath::kNone:
      break;
  }
  return "none";
}

RollbackPath RollbackPathNow(Phase from, const MigrationResult& r, bool discard) {
  if (from == Phase::kRollingBack || from == Phase::kRolledBack) {
    from = r.rollback_from.value_or(Phase::kVerify);
  }
  if (from == Phase::kFinalize || from == Phase::kFinalized) return RollbackPath::kNone;
  // A failed switch may have released traffic onto the target already.
  if (PhaseOrder(from) < PhaseOrder(Phase::kSwitch)) return RollbackPath::kSourceUntouched;
  if (discard || !r.reverse_replication_on.value_or(false)) {
    return RollbackPath::kDiscardTargetWrites;
  }
  return RollbackPath::kReverseReplication;
}

json PlanRollback(MigrationEnv& env, Phase phase, const MigrationResult& r, bool discard) {
  RollbackPath path = RollbackPathNow(phase, r, discard);
  json moves = json::array(), lose = json::array(), obstacles = json::array();
  json lag = nullptr;
  if (path == RollbackPath::kReverseReplication) {
    // What the record says was set up, checked against both sides now.
    auto found = env.ReverseReplicationFindings();
    if (!found.ok()) {
      obstacles.push_back("cannot check what reverse replication carries: " +
                          found.status().message());
    } else {
      for (const auto& f : *found) {
        if (f.Blocks()) obstacles.push_back(f.subject + ": " + f.message);
      }
    }
    auto st = env.InspectReverseReplication(/*mark=*/false);
    if (!st.ok()) {
      obstacles.push_back("cannot read reverse replication: " + st.status().message());
    } else {
      if (!st->in_place) {
        obstacles.push_back(
            "reverse replication is not in place (a subscription on the source "
            "or a slot on the target is missing)");
      }
      if (!st->apply_error.empty()) obstacles.push_back(st->apply_error);
      lag = LsnDiff(st->target_lsn, st->applied_lsn);
    }
    if (!obstacles.empty()) path = RollbackPath::kDiscardTargetWrites;
  }
  const bool cdc = r.cdc_slots && !r.cdc_slots->empty();
  std::string slots;
  for (const auto& s : r.cdc_slots.value_or(std::vector<CdcSlot>{})) {
    slots += (slots.empty() ? "" : ", ") + s.name;
  }
  json refused = nullptr;
  switch (path) {
    case RollbackPath::kNone:
      refused = "finalize has started: the source is being retired and cannot take traffic back";
      break;
    case RollbackPath::kSourceUntouched:
      moves.push_back(
          "traffic: the route points at the source again, which no client has "
          "written to since the fence; the source is unfenced");
      if (cdc) {
        moves.push_back("CDC consumers (" + slots +
                        ") resume on the source's slots where they confirmed the final LSN");
      }
      break;
    case RollbackPath::kReverseReplication:
      moves.push_back(
          "every write committed on the target: the source, subscribed to it, "
          "applies the rest while traffic is held");
      moves.push_back("sequences: each set on the source to at least the target's value");
      moves.push_back("traffic: the route points at the source again; the source is unfenced");
      if (cdc) {
        moves.push_back("CDC consumers (" + slots +
                        "): confirmed on the target, then resumed on the source's slots past "
                        "the changes it applied (none is delivered twice)");
      }
      break;
    case RollbackPath::kDiscardTargetWrites:
      lose.push_back("every write made on the target since the switch" +
                     std::string(r.switched_at_ms ? " (at " + std::to_string(*r.switched_at_ms) +
                                                        " ms since the epoch)"
                                                  : ""));
      if (r.reverse_replication_off) {
        lose.push_back("reverse replication is off: " + *r.reverse_replication_off);
      }
      if (r.reverse_replication_on.value_or(false)) {
        lose.push_back(
            "(the source keeps the target's writes reverse replication applied "
            "before the rollback, in commit order; those after are lost)");
      }
      moves.push_back("traffic: the route points at the source again; the source is unfenced");
      if (cdc) moves.push_back("CDC consumers (" + slots + ") resume on the source's slots");
      break;
  }
  const bool after_switch =
      path == RollbackPath::kReverseReplication || path == RollbackPath::kDiscardTargetWrites;
  return {{"path", RollbackPathName(path)},
          {"phase", PhaseName(phase)},
          {"refused", refused},
          {"moves_back", moves},
          {"would_lose", lose},
          {"obstacles", obstacles},
          {"needs_confirmation", path == RollbackPath::kDiscardTargetWrites && !discard},
          // As long as the cutover's hold: the same hold, route and fence steps.
          {"expected_hold_ms", after_switch && r.hold_ms ? json(*r.hold_ms) : json(nullptr)},
          {"apply_lag_bytes", lag}};
}

}  // namespace pgshift
