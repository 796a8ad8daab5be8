// The `pgshift` command line: the CLI11 app, its shared context, and the
// `migration` command group. Other groups (the lead's `demo`, `check`) plug
// in as CommandRegistrar functions passed to RunCli — see main.cc.
//
// Exit codes (also in `pgshift --help`):
//   0   success; `status --watch`: the migration was finalized
//   1   the request failed (server error, unknown migration, wrong state);
//       `status --watch`: the migration failed
//   2   `status --watch`: the migration was rolled back
//   3   pgshiftd (or a dependency it reported) could not be reached
//   64  bad command line or bad input (flags, connection string, spec file)
//   130 interrupted (Ctrl-C) while watching
//
// Thread-compatible: RunCli is called from one thread; CliIo's interrupted()
// may be set from a signal handler (it only reads an atomic flag).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "cli/api_client.h"
#include "common/status.h"

namespace CLI {
class App;
}

namespace pgshift::cli {

enum ExitCode : int {
  kExitOk = 0,
  kExitFailed = 1,
  kExitRolledBack = 2,
  kExitUnreachable = 3,
  kExitUsage = 64,
  kExitInterrupted = 130,
};

// Where commands write, and how they wait; tests substitute string streams,
// a fake TTY flag and a fast clock.
struct CliIo {
  std::ostream* out = nullptr;
  std::ostream* err = nullptr;
  bool out_is_tty = false;
  // Polled while watching; true once the user asked to stop (Ctrl-C).
  std::function<bool()> interrupted = [] { return false; };
  // Called when a watch begins: main() installs its SIGINT handler here, so
  // Ctrl-C elsewhere keeps its default (immediate) effect.
  std::function<void()> watch_interrupts;
  // Defaults to std::this_thread::sleep_for.
  std::function<void(std::chrono::milliseconds)> sleep;
};

// Shared by all subcommands: global flags, the IO, and the exit code a
// subcommand's callback sets.
struct CliContext {
  CliIo io;
  std::string server_url;
  ApiClientOptions client_options;
  int exit_code = kExitOk;

  // An ApiClient for --server; on a bad URL prints the error, sets
  // exit_code and returns null.
  std::unique_ptr<ApiClient> Client();
  // Prints "error: <message>" and sets exit_code from the status code.
  void Fail(const Status& st);
};

// Adds a command group to the app. Callbacks set ctx.exit_code.
using CommandRegistrar = std::function<void(CLI::App& app, CliContext& ctx)>;

// `pgshift migration ...`.
void AddMigrationCommands(CLI::App& app, CliContext& ctx);

// The exit code for a failed Status.
int ExitCodeFor(const Status& st);

// Parses `args` (without the program name) and runs the chosen command.
// The default --server is $PGSHIFT_SERVER, else http://127.0.0.1:7432.
int RunCli(const std::vector<std::string>& args, CliIo io,
           const std::vector<CommandRegistrar>& registrars);

}  // namespace pgshift::cli
