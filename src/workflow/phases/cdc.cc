// CDC: what logical decoding consumers need to carry on across the cutover.
//
//   cdc_prepare  records each logical slot on the source (name, plugin,
//                database, confirmed_flush_lsn, restart_lsn, active), tops
//                up the cutover's standby sessions and the router's logins
//                (PrepareAhead), then enters quiesce. Leaves result.cdc_slots.
#include "workflow/runner.h"

namespace pgshift {

Status MigrationRunner::CdcPrepare() {
  PGSHIFT_ASSIGN_OR_RETURN(auto slots, env_->LogicalSlots());
  std::vector<CdcSlotPosition> positions;
  for (const auto& s : slots) {
    positions.push_back({.name = s.name,
                         .plugin = s.plugin,
                         .database = s.database,
                         .confirmed_flush_lsn = s.confirmed_flush_lsn,
                         .restart_lsn = s.restart_lsn,
                         .active = s.active});
  }
  result_.cdc_slots = std::move(positions);
  // Tops up what was opened when the standby got in sync (sessions that
  // arrived since, a database created since); the router answers once its
  // logins are open, so the hold does not start while they are made.
  PrepareAhead();
  Transition(Phase::kQuiesce, "recorded " + std::to_string(slots.size()) +
                                  " logical slot position(s); holding traffic");
  return Status::OK();
}

}  // namespace pgshift
