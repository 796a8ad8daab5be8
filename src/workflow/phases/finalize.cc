// Finalize: the migration is done and the source retired.
//
//   finalize  tears reverse replication down (the source's subscriptions,
//             the target's slots and publications), drops the carried CDC
//             slots and the migration's physical slot on the source and
//             retires the source (stopped, still fenced); no rollback is
//             possible from here. Leaves result.finalized_at_ms, the last
//             post-cutover report (result.health, an event) and the
//             phase finalized (state finalized).
#include "workflow/runner.h"

namespace pgshift {

Status MigrationRunner::Finalize() {
  // Nothing flows back to the source any more: its subscriptions go, and
  // the target's slots and publications with them.
  if (result_.reverse_replication_on.value_or(false)) {
    PGSHIFT_RETURN_IF_ERROR(env_->DropReverseReplication());
  }
  // The carried slots' source halves: their consumers read from the target.
  for (const auto& s : result_.cdc_slots.value_or(std::vector<CdcSlot>{})) {
    PGSHIFT_RETURN_IF_ERROR(env_->DropSlot(s.name));
  }
  PGSHIFT_RETURN_IF_ERROR(env_->DropSlot(SlotNameFor(id_)));
  PGSHIFT_RETURN_IF_ERROR(env_->RetireSource());
  result_.finalized_at_ms = clock_.NowMs();
  FinalHealthReport();
  return Transition(Phase::kFinalized,
                    "migration finalized; the source is retired (stopped, fenced)");
}

}  // namespace pgshift
