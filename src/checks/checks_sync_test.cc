// Integration tests: SyncMonitor sampling a real source and a real physical
// replica, idle and under a pgbench write load with replay paused.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "checks/sync_monitor.h"
#include "testing/test_replica.h"
#include "common/clock.h"
#include "common/os.h"
#include "common/process.h"
#include "pg/conn.h"
#include "testing/pg_harness.h"

namespace pgshift::checks {
namespace {

using pgshift::testing::TestCluster;
using testing::TestReplica;

void Sleep(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

const Finding* Find(const std::vector<Finding>& fs, const std::string& id) {
  for (const Finding& f : fs) {
    if (f.id == id && (id != "slot_health" || !f.subject.empty())) return &f;
  }
  return nullptr;
}

TEST(SyncMonitorLive, IdleCaughtUpReplicaReportsZeroLagSecondsNotTimeSinceLastCommit) {
  auto src = TestCluster::Create({.name = "idle"});
  ASSERT_TRUE(src.ok()) << src.status().ToString();
  auto replica = TestReplica::Create(**src, {});
  ASSERT_TRUE(replica.ok()) << replica.status().ToString();
  // A commit the replica replays, so it has a last-replayed-commit time.
  ASSERT_TRUE((*src)->Psql("create table t (id int primary key); insert into t values (1)").ok());
  ASSERT_TRUE((*replica)->WaitCaughtUp((*src)->Conninfo()).ok());
  auto s = PgConn::Connect((*src)->Conninfo());
  auto t = PgConn::Connect((*replica)->Conninfo());
  ASSERT_TRUE(s.ok() && t.ok());
  Sleep(2000);  // the last commit is now > 2 s old
  SyncMonitor m({.lag_threshold_bytes = 64 * 1024, .lag_threshold_seconds = 1, .sustain_ms = 1000,
                 .rate_window_ms = 1000});
  const int64_t deadline = MonotonicMs() + 30000;
  while (MonotonicMs() < deadline && !m.LagSustained()) {
    ASSERT_TRUE(m.Sample(**s, **t, MonotonicMs()).ok());
    Sleep(200);
  }
  ASSERT_TRUE(m.LagSustained()) << m.ProgressJson().dump();
  auto since_commit = (*t)->Query(
      "select extract(epoch from now() - pg_last_xact_replay_timestamp())::float8 as s");
  ASSERT_TRUE(since_commit.ok());
  ASSERT_TRUE(since_commit->Get(0, "s").has_value());
  EXPECT_GT(since_commit->Double(0, "s"), 2.0);
  EXPECT_LE(m.LagSeconds(), 1.0);
  if (m.LagBytes() == 0) {
    EXPECT_EQ(m.LagSeconds(), 0);
  }
  auto fs = m.Findings();
  EXPECT_EQ(Find(fs, "lag_sustained")->severity, Severity::kOk);
  const Finding* slot = Find(fs, "slot_health");
  ASSERT_NE(slot, nullptr);
  EXPECT_EQ(slot->subject, (*replica)->slot_name());
}

TEST(SyncMonitorLive, HeavyWriteLoadMustBeWaitedOutBeforeLagCountsAsSustained) {
  auto src = TestCluster::Create({.name = "load"});
  ASSERT_TRUE(src.ok()) << src.status().ToString();
  const std::string pgbench = DefaultPgBinDir() + "/pgbench";
  ASSERT_TRUE(RunChecked(DefaultRunner(), {.argv = {pgbench, "-i", "-q", "-s", "2", "-d",
                                                    (*src)->Conninfo()},
                                           .timeout_ms = 120000})
                  .ok());
  auto replica = TestReplica::Create(**src, {});
  ASSERT_TRUE(replica.ok()) << replica.status().ToString();
  ASSERT_TRUE((*replica)->WaitCaughtUp((*src)->Conninfo()).ok());
  auto s = PgConn::Connect((*src)->Conninfo());
  auto t = PgConn::Connect((*replica)->Conninfo());
  ASSERT_TRUE(s.ok() && t.ok());

  SyncMonitor::Options opts{.lag_threshold_bytes = 512 * 1024, .lag_threshold_seconds = 2,
                            .sustain_ms = 3000, .rate_window_ms = 2000};
  SyncMonitor m(opts);
  ASSERT_TRUE((*t)->Exec("select pg_wal_replay_pause()").ok());

  std::atomic<bool> load_done{false};
  Result<std::string> load_result = std::string();
  std::thread load([&] {
    load_result = RunChecked(DefaultRunner(), {.argv = {pgbench, "-n", "-c", "4", "-T", "8",
                                                        "-d", (*src)->Conninfo()},
                                               .timeout_ms = 120000});
    load_done = true;
  });
  uint64_t max_lag = 0;
  bool rate_blocked = false;
  int64_t last_over_ms = -1;
  auto sample = [&] {
    const int64_t now = MonotonicMs();
    Status st = m.Sample(**s, **t, now);
    EXPECT_TRUE(st.ok()) << st.ToString();
    max_lag = std::max(max_lag, m.LagBytes());
    if (m.LagBytes() > opts.lag_threshold_bytes || m.LagSeconds() > opts.lag_threshold_seconds) {
      last_over_ms = now;
      EXPECT_FALSE(m.LagSustained()) << m.ProgressJson().dump();
      EXPECT_EQ(m.InSyncMs(), 0);
    }
  };
  while (!load_done) {
    sample();
    for (const Finding& f : m.Findings()) {
      rate_blocked |= f.id == "wal_rate" && f.severity == Severity::kBlocking;
    }
    Sleep(250);
  }
  load.join();
  ASSERT_TRUE(load_result.ok()) << load_result.status().ToString();
  // The load built a backlog the gate had to see.
  EXPECT_GT(max_lag, opts.lag_threshold_bytes);
  EXPECT_TRUE(rate_blocked);
  EXPECT_GT(m.PeakSourceWalBps(), 0);
  EXPECT_FALSE(m.LagSustained());
  EXPECT_EQ(Find(m.Findings(), "lag_sustained")->severity, Severity::kBlocking);

  ASSERT_TRUE((*t)->Exec("select pg_wal_replay_resume()").ok());
  const int64_t deadline = MonotonicMs() + 120000;
  while (!m.LagSustained() && MonotonicMs() < deadline) {
    sample();
    Sleep(200);
  }
  ASSERT_TRUE(m.LagSustained()) << m.ProgressJson().dump();
  // It opened only after a full window under the thresholds.
  const int64_t opened_at = MonotonicMs();
  EXPECT_GE(opened_at - last_over_ms, opts.sustain_ms);
  EXPECT_GE(m.InSyncMs(), opts.sustain_ms);
  EXPECT_GT(m.PeakReplayBps(), 0);
  auto fs = m.Findings();
  EXPECT_EQ(Find(fs, "lag_sustained")->severity, Severity::kOk);
  EXPECT_EQ(Find(fs, "wal_rate")->severity, Severity::kOk);
}

}  // namespace
}  // namespace pgshift::checks
