// Which way a rollback goes back to the source, and what it would do: the
// path chosen when rolling back starts (phases/rollback.cc), the one status
// shows, and the dry run an operator asks for before rolling back
// (`pgshift migration rollback --dry-run`). Stateless; thread-compatible.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>

#include "common/status.h"
#include "model/phase.h"
#include "model/progress.h"
#include "provider/env.h"

namespace pgshift {

enum class RollbackPath {
  kSourceUntouched,      // before the switch: no client wrote to the target
  kReverseReplication,   // the source applies the target's writes first
  kDiscardTargetWrites,  // the target's writes since the switch are lost
  kNone,                 // finalize started, or over: no way back
};
const char* RollbackPathName(RollbackPath p);

// The path a rollback from phase `from` takes, by the record: reverse
// replication where it was set up, unless `discard` (the operator's
// confirmation) asks to drop the target's writes.
RollbackPath RollbackPathNow(Phase from, const MigrationResult& r, bool discard);

// The dry run, with a look at both sides now (DDL since the cutover, the
// subscriptions' health, how far behind the source is):
//   {"path":..., "phase":..., "moves_back":[...], "would_lose":[...],
//    "obstacles":[...], "needs_confirmation":bool, "expected_hold_ms":N|null,
//    "apply_lag_bytes":N|null}
// needs_confirmation: the rollback loses the target's writes and `discard`
// does not confirm it.
nlohmann::json PlanRollback(MigrationEnv& env, Phase phase, const MigrationResult& r, bool discard);

}  // namespace pgshift
