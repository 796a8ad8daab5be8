// CLI registrars for the commands that run locally rather than through
// pgshiftd: `pgshift demo` and `pgshift check`. Single-threaded (CLI).
#pragma once

#include <CLI/CLI.hpp>

#include "cli/commands.h"

namespace pgshift::cli {

void AddDemoCommand(CLI::App& app, CliContext& ctx);
void AddCheckCommand(CLI::App& app, CliContext& ctx);

}  // namespace pgshift::cli
