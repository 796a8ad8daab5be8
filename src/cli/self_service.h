// The self-service commands (a CommandRegistrar, see cli/commands.h):
//   pgshift databases list [--json]
//   pgshift databases show NAME [--json]
//   pgshift migrate NAME [--option KEY=VALUE]... [--auto-cutover] [--auto-finalize] [--json]
//   pgshift whoami [--json]
//   pgshift audit [--limit N] [--json]
// Same exit codes as the migration commands. Thread-compatible.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "common/status.h"

namespace pgshift::cli {

void AddSelfServiceCommands(CLI::App& app, CliContext& ctx);

// KEY=VALUE options as a JSON object: true/false are booleans, numbers are
// numbers, anything else a string. InvalidArgument for a missing '='.
Result<nlohmann::json> ParseOptionPairs(const std::vector<std::string>& pairs);

}  // namespace pgshift::cli
