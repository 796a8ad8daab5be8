// ProcessRunner: the seam through which pgshift starts other programs
// (initdb, pg_basebackup, pg_ctl, pgbench, pgbouncer, ...).
//
// When pgshift runs as root, a ProcessSpec with `run_as` drops to that
// unprivileged OS user in the child before exec: PostgreSQL and PgBouncer
// refuse to run as root. SubprocessRunner is thread-safe (fork/exec only;
// everything the child needs is prepared before fork).
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>
#include <vector>

#include "common/status.h"

namespace pgshift {

struct ProcessSpec {
  std::vector<std::string> argv;
  std::string run_as;                  // OS user to become when root; empty: stay as we are
  std::string cwd;                     // empty: inherit
  std::vector<std::string> extra_env;  // "KEY=VALUE", added to our environment
  int64_t timeout_ms = 0;              // Run only; 0 = no deadline
  // Run only: called with each chunk of merged stdout/stderr as it arrives.
  std::function<void(const std::string&)> on_output;
  // Run only: asked at least every kStopPollMs while the program runs (from
  // Run's thread); once it returns true the program's process group is
  // killed and Run returns with ProcessResult::stopped. For a caller that
  // must be able to give up (pgshiftd shutting down) on a program that has
  // no deadline of its own, e.g. a rate-limited pg_basebackup.
  std::function<bool()> stop;
  // Run only: once the program itself exits, kill what it left in its
  // process group and stop reading. pg_basebackup's WAL streamer is a forked
  // child: when the parent is killed (SIGKILL, the OOM killer) it lives on
  // holding the output pipe, and Run would wait for it without end. Not for
  // programs that leave a daemon in the group on purpose.
  bool kill_group_on_exit = false;
  std::string output_file;  // Spawn only: append stdout/stderr here ("" = /dev/null)
};

struct ProcessResult {
  int exit_code = -1;  // exit status, or 128+signal when killed
  bool timed_out = false;
  bool stopped = false;  // ended by ProcessSpec::stop
  std::string output;    // merged stdout/stderr (Run only)
};

// How often Run asks ProcessSpec::stop.
inline constexpr int64_t kStopPollMs = 50;

class ProcessRunner {
 public:
  virtual ~ProcessRunner() = default;
  // Runs to completion. A non-zero exit is a ProcessResult, not an error Status;
  // a Status error means the program could not be started at all.
  virtual Result<ProcessResult> Run(const ProcessSpec& spec) = 0;
  // Starts in the background, in its own session; returns its pid.
  virtual Result<pid_t> Spawn(const ProcessSpec& spec) = 0;
};

class SubprocessRunner : public ProcessRunner {
 public:
  Result<ProcessResult> Run(const ProcessSpec& spec) override;
  Result<pid_t> Spawn(const ProcessSpec& spec) override;
};

ProcessRunner& DefaultRunner();

// Whether a child started with Spawn has exited; reaps it if so.
bool ChildExited(pid_t pid);
// Sends `sig` to a child started with Spawn and waits up to `grace_ms` for it
// to exit; then SIGKILLs and reaps it. False when it had to be killed.
bool StopChild(pid_t pid, int sig, int64_t grace_ms);

// Convenience: Run and turn a non-zero exit into an error naming the command
// and quoting the tail of its output (Timeout past timeout_ms, Aborted when
// ProcessSpec::stop ended it).
Result<std::string> RunChecked(ProcessRunner& runner, const ProcessSpec& spec);

// "a b 'c d'" for messages.
std::string JoinArgv(const std::vector<std::string>& argv);

}  // namespace pgshift
