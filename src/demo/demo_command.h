// CLI registrars for the commands that run locally rather than through
// pgshiftd: `pgshift demo` and `pgshift check`. Single-threaded (CLI).
#pragma once

#include <CLI/CLI.hpp>

#include "cli/commands.h"

namespace pgshift::demo {

void AddDemoCommand(CLI::App& app, cli::CliContext& ctx);
void AddCheckCommand(CLI::App& app, cli::CliContext& ctx);

}  // namespace pgshift::demo
