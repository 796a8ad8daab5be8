// What the fault-matrix scenarios (faults_*_e2e_test.cc) share beyond
// e2e_fixture.h: arming pgshiftd's fault points (common/faults.h) for the
// pgshiftd a sandbox starts next, and waiting for one that kills itself.
// Not thread-safe: used from the test's thread.
#pragma once

#include <dirent.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "common/clock.h"
#include "common/os.h"
#include "demo/sandbox.h"

namespace pgshift::e2e {

inline constexpr int64_t kDeathPollMs = 20;

// PGSHIFT_FAULTS for the pgshiftd the sandbox starts next. The entry is put
// into the environment once, before any thread of the test starts, and then
// rewritten in place: environ itself never changes under the ledger
// writers' threads (libpq reads it when they connect).
inline void SetFaults(const std::string& value) {
  static char entry[128] = "PGSHIFT_FAULTS=";
  static const bool put = ::putenv(entry) == 0;
  ASSERT_TRUE(put);
  ASSERT_LT(value.size() + 16, sizeof entry);
  std::snprintf(entry, sizeof entry, "PGSHIFT_FAULTS=%s", value.c_str());
}

// The pid of the sandbox's pgshiftd while it runs (a zombie, which the
// sandbox has not reaped yet, does not count), else -1.
inline pid_t LivePgshiftd(const demo::Sandbox& sb) {
  const std::string state_arg = sb.dir() + "/state.db";
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return -1;
  pid_t found = -1;
  while (dirent* d = ::readdir(proc)) {
    const pid_t pid = std::atoi(d->d_name);
    if (pid <= 0) continue;
    auto cmdline = ReadFile("/proc/" + std::to_string(pid) + "/cmdline");
    if (!cmdline.ok() ||
        cmdline->find(std::string("--state") + '\0' + state_arg) == std::string::npos) {
      continue;
    }
    auto stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
    const size_t paren = stat.ok() ? stat->rfind(')') : std::string::npos;
    if (paren != std::string::npos && paren + 2 < stat->size() && (*stat)[paren + 2] != 'Z') {
      found = pid;
    }
  }
  ::closedir(proc);
  return found;
}

// Waits up to bound_ms until pgshiftd has killed itself, then lets the
// sandbox reap it.
inline bool WaitForPgshiftdToDie(demo::Sandbox& sb, int64_t bound_ms) {
  const int64_t deadline = MonotonicMs() + bound_ms;
  while (LivePgshiftd(sb) > 0) {
    if (MonotonicMs() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(kDeathPollMs));
  }
  return sb.KillPgshiftd(SIGKILL).ok();
}

// Starts pgshiftd armed with `faults`. With a fault armed it may reach it
// before it answers; that counts as started.
inline void StartPgshiftd(demo::Sandbox& sb, const std::string& faults) {
  SetFaults(faults);
  Status st = sb.StartPgshiftd();
  if (!faults.empty() && st.code() == Code::kUnavailable) return;
  ASSERT_TRUE(st.ok()) << st.ToString();
}

}  // namespace pgshift::e2e
