#include "common/process.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/clock.h"
#include "common/os.h"

extern char** environ;

namespace pgshift {
namespace {

// Everything the child needs, built before fork so the child only makes syscalls.
struct Prepared {
  std::vector<std::string> argv_store;
  std::vector<char*> argv;
  std::vector<std::string> env_store;
  std::vector<char*> envp;
  bool drop = false;
  OsUser user;
};

Result<Prepared> Prepare(const ProcessSpec& spec) {
  if (spec.argv.empty()) return InvalidArgument("empty command");
  Prepared p;
  p.argv_store = spec.argv;
  for (auto& a : p.argv_store) p.argv.push_back(a.data());
  p.argv.push_back(nullptr);
  for (char** e = environ; *e; ++e) p.env_store.emplace_back(*e);
  if (!spec.run_as.empty() && RunningAsRoot()) {
    PGSHIFT_ASSIGN_OR_RETURN(p.user, LookupOsUser(spec.run_as));
    p.drop = true;
    // The tools we run look at HOME and USER; give them the target user's.
    std::erase_if(p.env_store, [](const std::string& e) {
      return e.rfind("HOME=", 0) == 0 || e.rfind("USER=", 0) == 0 || e.rfind("LOGNAME=", 0) == 0;
    });
    p.env_store.push_back("HOME=" + p.user.home);
    p.env_store.push_back("USER=" + p.user.name);
    p.env_store.push_back("LOGNAME=" + p.user.name);
  }
  for (const auto& e : spec.extra_env) p.env_store.push_back(e);
  for (auto& e : p.env_store) p.envp.push_back(e.data());
  p.envp.push_back(nullptr);
  return p;
}

// In the child after fork: only async-signal-safe calls.
[[noreturn]] void ExecChild(const Prepared& p, const ProcessSpec& spec, int out_fd) {
  int devnull = open("/dev/null", O_RDONLY);
  if (devnull >= 0) dup2(devnull, 0);
  if (out_fd >= 0) {
    dup2(out_fd, 1);
    dup2(out_fd, 2);
  }
  signal(SIGPIPE, SIG_DFL);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  if (p.drop) {
    if (setgroups(p.user.groups.size(), p.user.groups.data()) != 0 || setgid(p.user.gid) != 0 ||
        setuid(p.user.uid) != 0) {
      const char msg[] = "pgshift: could not drop privileges\n";
      (void)!write(2, msg, sizeof msg - 1);
      _exit(126);
    }
  }
  if (!spec.cwd.empty() && chdir(spec.cwd.c_str()) != 0) {
    const char msg[] = "pgshift: could not chdir\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(126);
  }
  execvpe(p.argv[0], p.argv.data(), p.envp.data());
  const char msg[] = "pgshift: exec failed: ";
  (void)!write(2, msg, sizeof msg - 1);
  (void)!write(2, p.argv[0], strlen(p.argv[0]));
  (void)!write(2, "\n", 1);
  _exit(127);
}

int DecodeWait(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

}  // namespace

Result<ProcessResult> SubprocessRunner::Run(const ProcessSpec& spec) {
  PGSHIFT_ASSIGN_OR_RETURN(Prepared p, Prepare(spec));
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return Internal(std::string("pipe: ") + strerror(errno));
  pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    return Internal(std::string("fork: ") + strerror(errno));
  }
  if (pid == 0) {
    setpgid(0, 0);
    ExecChild(p, spec, fds[1]);
  }
  setpgid(pid, pid);
  close(fds[1]);

  ProcessResult result;
  const int64_t deadline = spec.timeout_ms > 0 ? MonotonicMs() + spec.timeout_ms : 0;
  char buf[8192];
  bool open_pipe = true;
  bool reaped = false;
  int status = 0;
  while (open_pipe) {
    if (spec.kill_group_on_exit && !reaped && waitpid(pid, &status, WNOHANG) == pid) {
      reaped = true;
      kill(-pid, SIGKILL);  // the pipe reaches EOF once the group is gone
    }
    int wait_ms = spec.stop ? static_cast<int>(kStopPollMs) : 500;
    if (spec.stop && spec.stop()) {
      result.stopped = true;
      kill(-pid, SIGKILL);
      break;
    }
    if (deadline) {
      int64_t left = deadline - MonotonicMs();
      if (left <= 0) {
        result.timed_out = true;
        kill(-pid, SIGKILL);
        break;
      }
      wait_ms = static_cast<int>(std::min<int64_t>(left, wait_ms));
    }
    pollfd pfd{fds[0], POLLIN, 0};
    int r = poll(&pfd, 1, wait_ms);
    if (r < 0 && errno != EINTR) break;
    if (r <= 0) continue;
    ssize_t n = read(fds[0], buf, sizeof buf);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      open_pipe = false;
      break;
    }
    std::string chunk(buf, static_cast<size_t>(n));
    result.output += chunk;
    if (spec.on_output) spec.on_output(chunk);
  }
  close(fds[0]);
  while (!reaped && waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  result.exit_code = DecodeWait(status);
  return result;
}

Result<pid_t> SubprocessRunner::Spawn(const ProcessSpec& spec) {
  PGSHIFT_ASSIGN_OR_RETURN(Prepared p, Prepare(spec));
  int out = -1;
  const std::string path = spec.output_file.empty() ? "/dev/null" : spec.output_file;
  out = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (out < 0) return Internal("cannot open " + path + ": " + strerror(errno));
  if (p.drop) (void)!fchown(out, p.user.uid, p.user.gid);
  pid_t pid = fork();
  if (pid < 0) {
    close(out);
    return Internal(std::string("fork: ") + strerror(errno));
  }
  if (pid == 0) {
    setsid();
    ExecChild(p, spec, out);
  }
  close(out);
  return pid;
}

bool ChildExited(pid_t pid) {
  int status = 0;
  pid_t r = waitpid(pid, &status, WNOHANG);
  return r == pid || (r < 0 && errno == ECHILD);
}

bool StopChild(pid_t pid, int sig, int64_t grace_ms) {
  kill(pid, sig);
  const int64_t deadline = MonotonicMs() + grace_ms;
  while (!ChildExited(pid)) {
    if (MonotonicMs() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
      return false;
    }
    usleep(20000);
  }
  return true;
}

ProcessRunner& DefaultRunner() {
  static SubprocessRunner runner;
  return runner;
}

std::string JoinArgv(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) {
    if (!s.empty()) s += ' ';
    if (a.find_first_of(" '\"") != std::string::npos) {
      s += "'" + a + "'";
    } else {
      s += a;
    }
  }
  return s;
}

Result<std::string> RunChecked(ProcessRunner& runner, const ProcessSpec& spec) {
  PGSHIFT_ASSIGN_OR_RETURN(ProcessResult r, runner.Run(spec));
  if (r.stopped) {
    return Aborted("'" + JoinArgv(spec.argv) + "' was stopped before it finished");
  }
  if (r.timed_out) {
    return Timeout("'" + JoinArgv(spec.argv) + "' did not finish within " +
                   std::to_string(spec.timeout_ms) + " ms");
  }
  if (r.exit_code != 0) {
    std::string tail = r.output.size() > 1500 ? r.output.substr(r.output.size() - 1500) : r.output;
    return Internal("'" + JoinArgv(spec.argv) + "' exited with " + std::to_string(r.exit_code) +
                    ": " + tail);
  }
  return std::move(r.output);
}

}  // namespace pgshift
