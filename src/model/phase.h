// The phases of a migration and the one table that describes them
// (DESIGN.md §2): name, order, branch, whether traffic is held, whether a
// phase is entered without a commit of its own, whether it ends the
// migration. The runner, the API (GET /v1/phases), the CLI's renderer and
// the test fakes all read this table; nothing else lists the phases.
// Constant data and pure functions; thread-safe.
#pragma once

#include <array>
#include <cstddef>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string_view>

namespace pgshift {

// In workflow order: the main path, then the rollback branch.
enum class Phase {
  kPreflight,
  kProvision,
  kSync,
  kValidate,
  kReady,
  kCdcPrepare,
  kQuiesce,
  kDrain,
  kPromote,
  kSnapshot,
  kCdcRecreate,
  kSwitch,
  kVerify,
  kFinalize,
  kFinalized,
  kRollingBack,
  kRolledBack,
};

enum class PhaseBranch {
  kMain,      // preflight .. finalized
  kRollback,  // rolling_back, rolled_back: entered from any phase before finalize
};

struct PhaseInfo {
  Phase phase;
  const char* name;  // the stored and JSON form
  PhaseBranch branch;
  // Traffic is held at the router or the source is fenced (quiesce through
  // switch): a failure here releases traffic or rolls back, never retries.
  bool in_hold;
  // Entered without a commit of its own: the step that enters it runs it at
  // once, and the next commit (entering switch, or a failure) records it. A
  // restart before that commit finds the migration in drain, whose final LSN
  // the target has replayed, and runs promote (a no-op on a promoted target),
  // the snapshot export and the CDC slots' creation (a slot already there is
  // kept) again; no client has written to the target yet, because the switch
  // happens only after the switch phase is committed. Saves three commits
  // while traffic waits.
  bool chains_into;
  // Traffic may be on the target: a rollback discards its writes.
  bool after_switch;
  bool terminal;  // nothing more happens
};

// The table. A phase's order is its position here, which is also its enum value.
// clang-format off
inline constexpr PhaseInfo kPhaseTable[] = {
    // phase              name            branch                  in_hold chains after  terminal
    {Phase::kPreflight,   "preflight",    PhaseBranch::kMain,     false, false, false, false},
    {Phase::kProvision,   "provision",    PhaseBranch::kMain,     false, false, false, false},
    {Phase::kSync,        "sync",         PhaseBranch::kMain,     false, false, false, false},
    {Phase::kValidate,    "validate",     PhaseBranch::kMain,     false, false, false, false},
    {Phase::kReady,       "ready",        PhaseBranch::kMain,     false, false, false, false},
    {Phase::kCdcPrepare,  "cdc_prepare",  PhaseBranch::kMain,     false, false, false, false},
    {Phase::kQuiesce,     "quiesce",      PhaseBranch::kMain,     true,  false, false, false},
    {Phase::kDrain,       "drain",        PhaseBranch::kMain,     true,  false, false, false},
    {Phase::kPromote,     "promote",      PhaseBranch::kMain,     true,  true,  false, false},
    {Phase::kSnapshot,    "snapshot",     PhaseBranch::kMain,     true,  true,  false, false},
    {Phase::kCdcRecreate, "cdc_recreate", PhaseBranch::kMain,     true,  true,  false, false},
    {Phase::kSwitch,      "switch",       PhaseBranch::kMain,     true,  false, false, false},
    {Phase::kVerify,      "verify",       PhaseBranch::kMain,     false, false, true,  false},
    {Phase::kFinalize,    "finalize",     PhaseBranch::kMain,     false, false, true,  false},
    {Phase::kFinalized,   "finalized",    PhaseBranch::kMain,     false, false, true,  true},
    {Phase::kRollingBack, "rolling_back", PhaseBranch::kRollback, false, false, false, false},
    {Phase::kRolledBack,  "rolled_back",  PhaseBranch::kRollback, false, false, false, true},
};
// clang-format on
inline constexpr size_t kPhaseCount = std::size(kPhaseTable);

constexpr bool PhaseTableInEnumOrder() {
  for (size_t i = 0; i < kPhaseCount; ++i) {
    if (static_cast<size_t>(kPhaseTable[i].phase) != i) return false;
  }
  return true;
}
static_assert(PhaseTableInEnumOrder(), "kPhaseTable must list every Phase in enum order");

constexpr const PhaseInfo& InfoOf(Phase p) { return kPhaseTable[static_cast<size_t>(p)]; }
constexpr int PhaseOrder(Phase p) { return static_cast<int>(p); }
constexpr const char* PhaseName(Phase p) { return InfoOf(p).name; }
constexpr bool IsTerminal(Phase p) { return InfoOf(p).terminal; }
constexpr bool InHold(Phase p) { return InfoOf(p).in_hold; }
constexpr bool ChainsInto(Phase p) { return InfoOf(p).chains_into; }
constexpr bool AfterSwitch(Phase p) { return InfoOf(p).after_switch; }

std::optional<Phase> ParsePhase(std::string_view name);
// The phases of one branch, in order.
std::span<const PhaseInfo> PhasesOf(PhaseBranch branch);
const char* BranchName(PhaseBranch b);  // "main" | "rollback"

// GET /v1/phases:
// [{"name":"preflight","order":0,"branch":"main","in_hold":false,"terminal":false},...]
nlohmann::json PhaseTableJson();

}  // namespace pgshift
