#include "model/state.h"

#include <utility>

namespace pgshift {
namespace {

constexpr std::pair<MigrationState, const char*> kStateNames[] = {
    {MigrationState::kRunning, "running"},     {MigrationState::kWaiting, "waiting"},
    {MigrationState::kBlocked, "blocked"},     {MigrationState::kFailed, "failed"},
    {MigrationState::kFinalized, "finalized"}, {MigrationState::kRolledBack, "rolled_back"},
};

}  // namespace

const char* StateName(MigrationState s) {
  for (const auto& [state, name] : kStateNames) {
    if (state == s) return name;
  }
  return "unknown";
}

std::optional<MigrationState> ParseState(std::string_view name) {
  for (const auto& [state, n] : kStateNames) {
    if (name == n) return state;
  }
  return std::nullopt;
}

bool AwaitsOperator(MigrationState s) {
  return s == MigrationState::kWaiting || s == MigrationState::kBlocked ||
         s == MigrationState::kFailed;
}

}  // namespace pgshift
