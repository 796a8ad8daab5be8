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
#include <unistd.h>

#include <future>
#include <set>
#include <thread>

#include "common/clock.h"
#include "common/process.h"
#include "demo/sandbox.h"
#include "e2e/e2e_fixture.h"
#include "load/ledger.h"
#include "testing/pg_harness.h"

namespace pgshift::e2e {
namespace {

// Short leases so a takeover comes quickly (the pause test); the bound below
// is a safety net.
constexpr int64_t kLeaseMs = 2000;
constexpr int64_t kDeathBoundMs = 180000;
constexpr int kLedgerWriterId = 1;
constexpr int kMinCommittedRows = 20;

void SetFaults(const std::string& value) {
  if (value.empty()) {
    ::unsetenv("PGSHIFT_FAULTS");
  } else {
    ::setenv("PGSHIFT_FAULTS", value.c_str(), 1);
  }
}

std::string OwnerIdOf(pid_t pid) {
  char host[256] = {};
  ::gethostname(host, sizeof(host) - 1);
  return std::string(host) + ":" + std::to_string(pid);
}

json Options(bool auto_cutover) {
  return {{"auto_cutover", auto_cutover},
          {"auto_finalize", true},
          {"sustain_seconds", 1},
          {"verify_seconds", 1},
          {"poll_ms", 100}};
}

// The owners of a migration's events in order, each run of one owner once
// (the API's own notes, with no owner, left out).
std::vector<std::string> OwnerRuns(const json& events) {
  std::vector<std::string> runs;
  for (const auto& e : events) {
    const std::string owner = e.value("owner", "");
    if (!owner.empty() && (runs.empty() || runs.back() != owner)) runs.push_back(owner);
  }
  return runs;
}

class ControlPlaneE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = testing::TestCluster::Create({.name = "store"});
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(*store);
    store_url_ = "postgresql://postgres@127.0.0.1:" + std::to_string(store_->port()) + "/postgres";
  }
  void TearDown() override {
    if (HasFailure()) {
      for (size_t i = 0; i < sandboxes_.size() && i < 2; ++i) {
        PrintTail("pgshiftd " + std::to_string(i) + " log", sandboxes_[i]->PgshiftdLog(),
                  kPgshiftdLogTail);
      }
    }
    writers_.clear();
    // Each stops its processes and clusters: at once.
    std::vector<std::future<void>> stopping;
    for (auto& sb : sandboxes_) {
      stopping.push_back(
          std::async(std::launch::async, [sb = std::move(sb)]() mutable { sb.reset(); }));
    }
    for (auto& f : stopping) f.get();
    sandboxes_.clear();
    store_.reset();
  }

  // `n` sandboxes started at once, none with its pgshiftd yet; their
  // pgshiftd get `lease_ms` (0: the default).
  void StartSandboxes(int n, int64_t lease_ms) {
    std::vector<std::string> args = {"--store", store_url_, "--workers", "4"};
    if (lease_ms > 0) args.insert(args.end(), {"--lease-ms", std::to_string(lease_ms)});
    std::vector<std::future<Result<std::unique_ptr<demo::Sandbox>>>> starting;
    for (int i = 0; i < n; ++i) {
      starting.push_back(std::async(std::launch::async, [&] {
        return demo::Sandbox::Start({.pgshiftd_path = PGSHIFTD_PATH,
                                     .proxy_path = PGSHIFT_PROXY_PATH,
                                     .pgshiftd_args = args,
                                     .start_pgshiftd = false});
      }));
    }
    for (auto& f : starting) {
      auto sb = f.get();
      ASSERT_TRUE(sb.ok()) << sb.status().ToString();
      sandboxes_.push_back(std::move(*sb));
    }
  }

  // Starts sandbox i's pgshiftd (on the shared store) armed with `faults`.
  std::string StartPgshiftd(size_t i, const std::string& faults = "") {
    SetFaults(faults);
    Status st = sandboxes_[i]->StartPgshiftd();
    SetFaults("");
    EXPECT_TRUE(st.ok()) << st.ToString();
    return OwnerIdOf(sandboxes_[i]->pgshiftd_pid());
  }

  // A ledger writer through each sandbox's proxy.
  void StartWriters() {
    for (auto& sb : sandboxes_) {
      writers_.push_back(std::make_unique<load::LedgerWriter>(sb->AppConninfo(), kLedgerWriterId));
      writers_.back()->Start();
    }
  }

  // POSTs sandbox `of`'s migration to the pgshiftd of sandbox `via`.
  std::string Create(size_t of, size_t via, bool auto_cutover) {
    auto r = sandboxes_[via]->Api("POST", "/v1/migrations",
                                  sandboxes_[of]->MigrationSpec(Options(auto_cutover)).dump());
    EXPECT_TRUE(r.ok());
    if (!r.ok()) return "";
    EXPECT_EQ((*r)["status"], 201) << (*r)["body"].dump();
    return (*r)["body"].value("id", "");
  }

  json Events(size_t via, const std::string& id) {
    auto r = sandboxes_[via]->Api("GET", "/v1/migrations/" + id + "/events");
    EXPECT_TRUE(r.ok() && (*r)["status"] == 200);
    if (!r.ok()) return json::array();
    const json& body = (*r)["body"];
    return body.is_object() ? body.value("events", json::array()) : body;
  }

  // Every row acknowledged through sandbox i's proxy is on its target once.
  void ExpectLedgerClean(size_t i) {
    auto& w = *writers_[i];
    w.Stop();
    auto st = w.Stats();
    EXPECT_EQ(st.failed, 0) << (st.errors.empty() ? "" : st.errors.front());
    EXPECT_EQ(st.uncertain, 0) << (st.errors.empty() ? "" : st.errors.front());
    EXPECT_GT(st.committed, kMinCommittedRows);
    auto check =
        load::CheckLedger(sandboxes_[i]->TargetConninfo(), w.writer_id(), w.Acknowledged());
    ASSERT_TRUE(check.ok()) << check.status().ToString();
    EXPECT_EQ(check->lost, 0) << "sandbox " << i;
    EXPECT_EQ(check->duplicated, 0) << "sandbox " << i;
    EXPECT_EQ(check->found, check->acknowledged);
  }

  std::unique_ptr<testing::TestCluster> store_;
  std::string store_url_;
  std::vector<std::unique_ptr<demo::Sandbox>> sandboxes_;
  std::vector<std::unique_ptr<load::LedgerWriter>> writers_;
};

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
