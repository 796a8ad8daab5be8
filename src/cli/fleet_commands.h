// The fleet commands (a CommandRegistrar, see cli/commands.h), operators only:
//   pgshift fleet plan   [request flags] [--json]   the waves, nothing started
//   pgshift fleet run    [request flags] [--json]   start a fleet run
//   pgshift fleet status [ID] [--json]              one run with its report, or every run
//   pgshift fleet pause ID [--json] / pgshift fleet resume ID [--json]
// Request flags: --by tag|team, --wave V (repeatable, in order), --database N
// (repeatable), --max-concurrent N, --wave-concurrency N, --stop-after N,
// --approve-outside-window, --option KEY=VALUE (repeatable).
// Same exit codes as the migration commands. Thread-compatible.
#pragma once

#include "cli/commands.h"

namespace pgshift::cli {

void AddFleetCommands(CLI::App& app, CliContext& ctx);

}  // namespace pgshift::cli
