#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <fstream>
#include <set>
#include <thread>

#include "common/clock.h"
#include "common/lsn.h"
#include "common/os.h"
#include "common/process.h"
#include "common/status.h"

namespace pgshift {
namespace {

TEST(Lsn, ParsesAndFormats) {
  auto l = Lsn::Parse("16/B374D848");
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->value, (0x16ull << 32) | 0xB374D848ull);
  EXPECT_EQ(l->ToString(), "16/B374D848");
  EXPECT_FALSE(Lsn::Parse("nonsense").ok());
  EXPECT_FALSE(Lsn::Parse("1/2x").ok());
  EXPECT_EQ(LsnDiff(Lsn{10}, Lsn{4}), 6u);
  EXPECT_EQ(LsnDiff(Lsn{4}, Lsn{10}), 0u);
}

TEST(Status, WrapKeepsCode) {
  Status s = Unavailable("down");
  EXPECT_EQ(s.Wrap("source").message(), "source: down");
  EXPECT_EQ(s.Wrap("source").code(), Code::kUnavailable);
  EXPECT_TRUE(Status::OK().Wrap("x").ok());
}

TEST(Process, StopHookKillsTheProgramPromptly) {
  const int64_t started = MonotonicMs();
  auto stop = [&] { return MonotonicMs() - started > 200; };
  // The shell's background child is in the same process group and dies too,
  // or the pipe it holds would keep Run reading.
  auto r = DefaultRunner().Run({.argv = {"sh", "-c", "sleep 60 & sleep 60"}, .stop = stop});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->stopped);
  EXPECT_FALSE(r->timed_out);
  EXPECT_LT(MonotonicMs() - started, 2000);
  auto checked =
      RunChecked(DefaultRunner(), {.argv = {"sleep", "60"}, .stop = [] { return true; }});
  ASSERT_FALSE(checked.ok());
  EXPECT_EQ(checked.status().code(), Code::kAborted) << checked.status().ToString();
  EXPECT_NE(checked.status().message().find("stopped"), std::string::npos);
}

TEST(Process, KillGroupOnExitEndsWhatTheProgramLeftHoldingThePipe) {
  const int64_t started = MonotonicMs();
  // The shell exits at once; its background child keeps the output pipe.
  auto r = DefaultRunner().Run(
      {.argv = {"sh", "-c", "sleep 60 & echo $!; exit 4"}, .kill_group_on_exit = true});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->exit_code, 4);
  EXPECT_LT(MonotonicMs() - started, 10000);
  const pid_t orphan = std::stoi(r->output);
  // Gone, or a zombie its new parent has yet to reap.
  auto alive = [&] {
    if (::kill(orphan, 0) != 0) return false;
    std::ifstream stat("/proc/" + std::to_string(orphan) + "/stat");
    std::string pid, comm, state;
    stat >> pid >> comm >> state;
    return state != "Z";
  };
  const int64_t deadline = MonotonicMs() + 5000;
  while (alive() && MonotonicMs() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_FALSE(alive()) << "the orphan " << orphan << " lives on";
}

TEST(Process, RunsAndCapturesOutputAndExitCode) {
  auto r = DefaultRunner().Run({.argv = {"sh", "-c", "echo hi; echo err >&2; exit 3"}});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 3);
  EXPECT_NE(r->output.find("hi"), std::string::npos);
  EXPECT_NE(r->output.find("err"), std::string::npos);
  auto checked = RunChecked(DefaultRunner(), {.argv = {"false"}});
  EXPECT_FALSE(checked.ok());
}

TEST(Process, TimesOut) {
  auto r = DefaultRunner().Run({.argv = {"sleep", "5"}, .timeout_ms = 200});
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->timed_out);
}

TEST(Process, DropsToUnprivilegedUserWhenRoot) {
  if (!RunningAsRoot()) GTEST_SKIP() << "only meaningful as root (CI runs as root)";
  auto r = RunChecked(DefaultRunner(), {.argv = {"id", "-un"}, .run_as = "postgres"});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, "postgres\n");
}

TEST(Os, FreePortIsBindable) {
  auto p = FreePort();
  ASSERT_TRUE(p.ok());
  EXPECT_GT(*p, 1024);
  EXPECT_FALSE(PortOpen("127.0.0.1", *p));
}

// Two servers given ports one after the other, before either binds, must
// not get the same one; and no port comes from the ephemeral range that
// outgoing connections take their source ports from.
TEST(Os, FreePortNeverRepeatsAndStaysBelowTheEphemeralRange) {
  std::set<int> seen;
  for (int i = 0; i < 200; ++i) {
    auto p = FreePort();
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    EXPECT_TRUE(seen.insert(*p).second) << "port " << *p << " handed out twice";
    EXPECT_LT(*p, 32768);
  }
}

}  // namespace
}  // namespace pgshift
