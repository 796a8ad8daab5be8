// pgshift: the command-line client of pgshiftd. Command groups are
// registrars (see cli/commands.h); adding one is a line in kCommands.
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <iostream>

#include "cli/commands.h"
#include "cli/fleet_commands.h"
#include "cli/local_commands.h"
#include "cli/self_service.h"

namespace {

std::atomic<bool> g_interrupted{false};

extern "C" void OnSigint(int) { g_interrupted.store(true); }

// First Ctrl-C asks the watch loop to stop; a second one kills the process.
void CatchSigintOnce() {
  struct sigaction sa {};
  sa.sa_handler = OnSigint;
  sa.sa_flags = SA_RESETHAND;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
}

}  // namespace

int main(int argc, char** argv) {
  using namespace pgshift::cli;
  const std::vector<CommandRegistrar> kCommands = {
      AddMigrationCommands, AddSelfServiceCommands, AddFleetCommands,
      AddDemoCommand,       AddCheckCommand,
  };
  CliIo io;
  io.out = &std::cout;
  io.err = &std::cerr;
  io.out_is_tty = isatty(STDOUT_FILENO) == 1;
  io.interrupted = [] { return g_interrupted.load(); };
  io.watch_interrupts = CatchSigintOnce;
  return RunCli(std::vector<std::string>(argv + 1, argv + argc), io, kCommands);
}
