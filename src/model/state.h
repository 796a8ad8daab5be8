// MigrationState: what a migration is doing within its phase. Stored and
// served as the strings StateName gives (running, waiting, blocked, failed,
// finalized, rolled_back). Pure functions; thread-safe.
#pragma once

#include <optional>
#include <string_view>

namespace pgshift {

enum class MigrationState {
  kRunning,
  kWaiting,     // for an operator (cutover, finalize)
  kBlocked,     // blocking findings; override or roll back
  kFailed,      // retries exhausted; retry or roll back
  kFinalized,   // phase finalized
  kRolledBack,  // phase rolled_back
};

const char* StateName(MigrationState s);
std::optional<MigrationState> ParseState(std::string_view name);
// Only an operator can move the migration on: waiting, blocked, failed.
bool AwaitsOperator(MigrationState s);

}  // namespace pgshift
