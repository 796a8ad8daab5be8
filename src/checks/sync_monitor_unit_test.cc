// Unit tests for SyncMonitor with injected samples: lag in bytes and seconds,
// rates and peaks, the sustained-lag gate and the findings it yields.
#include <gtest/gtest.h>

#include "checks/sync_monitor.h"

namespace pgshift::checks {
namespace {

constexpr uint64_t kMiB = 1 << 20;

SyncSample At(int64_t ms, uint64_t source, uint64_t replay, bool paused = false) {
  SyncSample s;
  s.at_ms = ms;
  s.source_lsn = Lsn{source};
  s.replay_lsn = Lsn{replay};
  s.receive_lsn = Lsn{source};
  s.replay_paused = paused;
  return s;
}

SyncMonitor::Options Opts() {
  SyncMonitor::Options o;
  o.lag_threshold_bytes = 1 * kMiB;
  o.lag_threshold_seconds = 2;
  o.sustain_ms = 5000;
  o.rate_window_ms = 2000;
  return o;
}

const Finding* Find(const std::vector<Finding>& fs, const std::string& id) {
  for (const Finding& f : fs) {
    if (f.id == id) return &f;
  }
  return nullptr;
}

TEST(SyncMonitor, RatesAreAveragedOverTheWindowAndPeaksKept) {
  SyncMonitor m(Opts());
  // Source writes 1 MiB/s for 4 s, then 4 MiB/s; replay follows 1 s behind.
  uint64_t src = 0;
  for (int t = 0; t <= 8000; t += 1000) {
    const uint64_t replay = src >= kMiB ? src - kMiB : 0;
    m.AddSample(At(t, src, replay));
    src += (t < 4000 ? 1 : 4) * kMiB;
  }
  // Last window (6 s..8 s): source 8 MiB in 2 s.
  EXPECT_DOUBLE_EQ(m.SourceWalBps(), 4.0 * kMiB);
  EXPECT_DOUBLE_EQ(m.ReplayBps(), 4.0 * kMiB);
  EXPECT_DOUBLE_EQ(m.PeakSourceWalBps(), 4.0 * kMiB);
  EXPECT_EQ(m.LagBytes(), kMiB);
  // The source was at the replay position 0.25 s before the last sample (4 MiB/s).
  EXPECT_NEAR(m.LagSeconds(), 0.25, 1e-9);
}

TEST(SyncMonitor, IdleCaughtUpReplicaHasZeroLagSeconds) {
  SyncMonitor m(Opts());
  m.AddSample(At(0, 5 * kMiB, 5 * kMiB));
  SyncSample s = At(60000, 5 * kMiB, 5 * kMiB);
  s.replay_delay_s = 3600;  // the last commit was an hour ago; that is not lag
  m.AddSample(s);
  EXPECT_EQ(m.LagBytes(), 0u);
  EXPECT_EQ(m.LagSeconds(), 0);
  EXPECT_EQ(m.SourceWalBps(), 0);
  EXPECT_TRUE(m.LagSustained());
}

TEST(SyncMonitor, LagSecondsIsAtLeastTheHistorySpanWhenReplayIsOlderThanIt) {
  SyncMonitor m(Opts());
  m.AddSample(At(1000, 50 * kMiB, 10 * kMiB));
  m.AddSample(At(4000, 60 * kMiB, 10 * kMiB));
  EXPECT_DOUBLE_EQ(m.LagSeconds(), 3.0);
}

TEST(SyncMonitor, SustainedOnlyAfterLagStaysUnderThresholdsForTheWindow) {
  SyncMonitor m(Opts());
  uint64_t src = 100 * kMiB;
  m.AddSample(At(0, src, src - 50 * kMiB, true));
  EXPECT_FALSE(m.LagSustained());
  EXPECT_EQ(Find(m.Findings(), "lag_sustained")->severity, Severity::kBlocking);
  m.AddSample(At(1000, src + 4 * kMiB, src - 50 * kMiB, true));
  // Falling behind while paused: wal_rate blocks and names the pause.
  const auto paused_findings = m.Findings();
  const Finding* rate = Find(paused_findings, "wal_rate");
  EXPECT_EQ(rate->severity, Severity::kBlocking);
  EXPECT_NE(rate->remedy.find("pg_wal_replay_resume"), std::string::npos);
  src += 4 * kMiB;
  // Resumed: caught up at 3 s.
  m.AddSample(At(2000, src, src - 20 * kMiB));
  EXPECT_EQ(Find(m.Findings(), "wal_rate")->severity, Severity::kWarning);  // catching up
  m.AddSample(At(3000, src, src));
  EXPECT_EQ(m.InSyncMs(), 0);
  m.AddSample(At(6000, src, src));
  EXPECT_EQ(m.InSyncMs(), 3000);
  EXPECT_FALSE(m.LagSustained());
  // A blip over the threshold restarts the window.
  m.AddSample(At(7000, src + 2 * kMiB, src));
  EXPECT_EQ(m.InSyncMs(), 0);
  src += 2 * kMiB;
  m.AddSample(At(8000, src, src));
  m.AddSample(At(12999, src, src));
  EXPECT_FALSE(m.LagSustained());
  m.AddSample(At(13000, src, src));
  EXPECT_TRUE(m.LagSustained());
  auto fs = m.Findings();
  EXPECT_EQ(Find(fs, "lag_sustained")->severity, Severity::kOk);
  EXPECT_EQ(Find(fs, "wal_rate")->severity, Severity::kOk);
  EXPECT_EQ(Find(fs, "slot_health"), nullptr);  // no slots were sampled
  m.MarkGap();
  EXPECT_FALSE(m.LagSustained());
}

TEST(SyncMonitor, LagInSecondsAloneKeepsTheGateClosed) {
  auto o = Opts();
  o.lag_threshold_bytes = 100 * kMiB;  // bytes always fine
  SyncMonitor m(o);
  // A slow trickle: replay 10 KiB behind, but the source was there 4 s ago.
  m.AddSample(At(0, 1000 * 1024, 1000 * 1024));
  m.AddSample(At(4000, 1010 * 1024, 1000 * 1024));
  m.AddSample(At(10000, 1010 * 1024, 1000 * 1024));
  EXPECT_GT(m.LagSeconds(), 2);
  EXPECT_FALSE(m.LagSustained());
}

TEST(SyncMonitor, SlotHealthComesFromTheLatestSlotSnapshot) {
  SyncMonitor m(Opts());
  SyncSample s = At(0, 100 * kMiB, 100 * kMiB);
  SlotSnapshot snap;
  snap.current_lsn = Lsn{100 * kMiB};
  snap.slots.push_back(SlotInfo{"stale", "logical", "pgoutput", "app", false, "extended",
                                std::nullopt, Lsn{10 * kMiB}, Lsn{10 * kMiB}});
  s.slots = snap;
  m.AddSample(s);
  m.AddSample(At(1000, 100 * kMiB, 100 * kMiB));  // no slots read this time: keep the last
  bool flagged = false;
  for (const Finding& f : m.Findings()) {
    flagged |= f.id == "slot_health" && f.subject == "stale" && f.severity == Severity::kWarning;
  }
  EXPECT_TRUE(flagged);
  auto progress = m.ProgressJson();
  EXPECT_EQ(progress["lag_bytes"], 0);
}

}  // namespace
}  // namespace pgshift::checks
