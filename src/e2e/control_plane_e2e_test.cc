// End-to-end: several pgshiftd processes on one PostgreSQL state store
// (docs/store.md). Real clusters (sources, targets and the store's own), a
// pgshift-proxy per source with a ledger writer through it, real pgshiftd
// processes.
//   - Two pgshiftd with the default leases drive six migrations; one is
//     killed (SIGKILL) inside a cutover hold; the other takes its migrations
//     over, adopts the hold (no abort, no rollback: the default hold lease
//     outlasts a takeover, docs/store.md) and finishes all six. From the
//     event log (each event names its pgshiftd), no migration was driven by
//     two at once; every ledger is clean.
//   - A pgshiftd paused (SIGSTOP) past its lease loses its migration to the
//     other; resumed (SIGCONT), it does not act on it again.
//   - A second pgshiftd on the first one's SQLite state file refuses to start.
#include <gtest/gtest.h>
#include <signal.h>

#include <set>
#include <thread>

#include "e2e/control_plane_fixture.h"

namespace pgshift::e2e {
namespace {

using ControlPlaneE2E = ControlPlaneFixture;

TEST_F(ControlPlaneE2E, ASurvivorFinishesTheMigrationsOfAPgshiftdKilledInsideAHold) {
  constexpr size_t kMigrations = 6;
  StartSandboxes(kMigrations, /*lease_ms=*/0);
  ASSERT_EQ(sandboxes_.size(), kMigrations);
  // a (sandbox 0's) kills itself (SIGKILL) when one of its migrations
  // reaches drain: traffic is held and the source fenced.
  const std::string a = StartPgshiftd(0, "crash:before_drain");
  const std::string b = StartPgshiftd(1);
  StartWriters();
  std::vector<std::string> ids;
  std::set<std::string> created_by_a;
  for (size_t i = 0; i < kMigrations; ++i) {
    const size_t via = i % 2;
    ids.push_back(Create(i, via, /*auto_cutover=*/true));
    ASSERT_FALSE(ids.back().empty());
    if (via == 0) created_by_a.insert(ids.back());
  }

  const int64_t deadline = MonotonicMs() + kDeathBoundMs;
  while (sandboxes_[0]->PgshiftdRunning() && MonotonicMs() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_FALSE(sandboxes_[0]->PgshiftdRunning()) << "pgshiftd a never reached a hold";

  for (const auto& id : ids) {
    auto m = sandboxes_[1]->WaitFor(id, Terminal, kMigrationBoundMs);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    EXPECT_EQ((*m)["phase"], "finalized") << m->dump();
    EXPECT_EQ((*m)["owner"], b) << "the survivor ends every migration";
  }
  for (size_t i = 0; i < kMigrations; ++i) ExpectLedgerClean(i);

  // The timeline: each migration driven by one pgshiftd, then (a's, after
  // its death) by the other; never back, never interleaved.
  int taken_in_hold = 0;
  for (const auto& id : ids) {
    const json events = Events(1, id);
    const auto runs = OwnerRuns(events);
    if (created_by_a.count(id)) {
      EXPECT_EQ(runs, (std::vector<std::string>{a, b})) << id << ": " << events.dump();
    } else {
      EXPECT_EQ(runs, (std::vector<std::string>{b})) << id << ": " << events.dump();
    }
    bool in_hold = false, adopted = false;
    for (const auto& e : events) {
      const std::string msg = e.value("message", "");
      if (msg.rfind("taken over from " + a, 0) == 0 && e["phase"] == "drain") in_hold = true;
      if (msg.find("still holds traffic under hold") != std::string::npos) adopted = true;
      // An abort or a rollback would say the hold was no longer the cutover's.
      EXPECT_EQ(msg.find("is no longer this cutover's"), std::string::npos) << id << ": " << msg;
      EXPECT_EQ(msg.find("lapsed"), std::string::npos) << id << ": " << msg;
    }
    if (in_hold) {
      ++taken_in_hold;
      EXPECT_TRUE(adopted) << id << ": the survivor adopts the hold: " << events.dump();
    }
  }
  EXPECT_EQ(taken_in_hold, 1) << "a died with exactly one migration in the hold";
}

TEST_F(ControlPlaneE2E, APgshiftdPausedPastItsLeaseDoesNotActAgainOnWhatItLost) {
  StartSandboxes(2, kLeaseMs);
  ASSERT_EQ(sandboxes_.size(), 2u);
  const std::string a = StartPgshiftd(0);
  const std::string b = StartPgshiftd(1);
  writers_.push_back(
      std::make_unique<load::LedgerWriter>(sandboxes_[0]->AppConninfo(), kLedgerWriterId));
  writers_.back()->Start();
  // a drives it up to ready, where it waits for a cutover request.
  const std::string id = Create(0, 0, /*auto_cutover=*/false);
  ASSERT_FALSE(id.empty());
  auto ready = sandboxes_[0]->WaitFor(
      id, [](const json& m) { return m["phase"] == "ready" || Terminal(m); }, kMigrationBoundMs);
  ASSERT_TRUE(ready.ok()) << ready.status().ToString();
  ASSERT_EQ((*ready)["owner"], a);

  const pid_t a_pid = sandboxes_[0]->pgshiftd_pid();
  ASSERT_EQ(::kill(a_pid, SIGSTOP), 0);
  auto taken = sandboxes_[1]->WaitFor(
      id, [&](const json& m) { return m["owner"] == b; }, kMigrationBoundMs);
  ASSERT_TRUE(taken.ok()) << taken.status().ToString();
  ASSERT_EQ(::kill(a_pid, SIGCONT), 0);

  // The operator asks a (now awake) for the cutover: b, the owner, applies it.
  auto r = sandboxes_[0]->Api("POST", "/v1/migrations/" + id + "/cutover", "{}");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)["status"], 202) << (*r)["body"].dump();
  auto done = sandboxes_[1]->WaitFor(id, Terminal, kMigrationBoundMs);
  ASSERT_TRUE(done.ok()) << done.status().ToString();
  EXPECT_EQ((*done)["phase"], "finalized") << done->dump();
  ExpectLedgerClean(0);

  const json events = Events(1, id);
  EXPECT_EQ(OwnerRuns(events), (std::vector<std::string>{a, b})) << events.dump();
  EXPECT_TRUE(sandboxes_[0]->PgshiftdRunning()) << "a resumed and runs on";
  auto log = ReadFile(sandboxes_[0]->PgshiftdLog());
  ASSERT_TRUE(log.ok());
  EXPECT_NE(log->find("[" + id + "] migration " + id + " is now driven by " + b), std::string::npos)
      << "a learned its lease was lost";
}

TEST(PgshiftdStateFile, ASecondPgshiftdOnTheSameFileRefusesToStart) {
  constexpr int64_t kStartBoundMs = 15000;
  auto dir = MakeTempDir("pgshift-lock-e2e");
  ASSERT_TRUE(dir.ok());
  const std::vector<std::string> argv = {PGSHIFTD_PATH, "--state", *dir + "/state.db", "--listen",
                                         "127.0.0.1:0"};
  auto first = DefaultRunner().Spawn({.argv = argv, .output_file = *dir + "/first.log"});
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  const int64_t deadline = MonotonicMs() + kStartBoundMs;
  for (;;) {
    auto log = ReadFile(*dir + "/first.log");
    if (log.ok() && log->find("pgshiftd listening") != std::string::npos) break;
    ASSERT_FALSE(ChildExited(*first)) << "the first pgshiftd did not start";
    ASSERT_LT(MonotonicMs(), deadline) << "the first pgshiftd did not start in time";
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  auto second = DefaultRunner().Run({.argv = argv, .timeout_ms = kStartBoundMs});
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_FALSE(second->timed_out) << "the second pgshiftd ran on";
  EXPECT_NE(second->exit_code, 0);
  EXPECT_NE(second->output.find("is in use by another pgshiftd"), std::string::npos)
      << second->output;
  EXPECT_FALSE(ChildExited(*first)) << "the first runs on, untouched";
  StopChild(*first, SIGTERM, kStartBoundMs);
  (void)RemoveTree(*dir);
}

}  // namespace
}  // namespace pgshift::e2e
