#include "checks/sync_monitor.h"

#include <algorithm>
#include <cstdio>

#include "checks/server_scan.h"

namespace pgshift::checks {

namespace {

// History kept for lag-in-seconds lookups: beyond this, lag is reported as
// "at least the history span".
constexpr int64_t kHistoryMs = 3600 * 1000;
constexpr size_t kMaxSamples = 20000;

std::string Fmt(double v, const char* fmt = "%.1f") {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, v);
  return buf;
}

}  // namespace

SyncMonitor::SyncMonitor(Options opts) : opts_(std::move(opts)) {}

Status SyncMonitor::Sample(PgConn& source, PgConn& target, int64_t now_ms) {
  // Target first, then source: any WAL written in between counts as lag, so
  // the gate errs on the safe side.
  auto trows = target.Query(
      "select pg_is_in_recovery() as recovery, pg_last_wal_replay_lsn()::text as replay, "
      "pg_last_wal_receive_lsn()::text as receive, "
      "extract(epoch from now() - pg_last_xact_replay_timestamp())::float8 as delay, "
      "case when pg_is_in_recovery() then pg_is_wal_replay_paused() else false end as paused");
  if (!trows.ok()) {
    MarkGap();
    return trows.status().Wrap("sampling the target's replay position");
  }
  if (!trows->Bool(0, "recovery") || !trows->Get(0, "replay")) {
    MarkGap();
    return FailedPrecondition("the target is not in recovery, so it has no replay position to "
                              "sample (was it promoted?)");
  }
  auto slots = ReadSlots(source);
  if (!slots.ok()) {
    MarkGap();
    return slots.status().Wrap("sampling the source's WAL position");
  }
  SyncSample s;
  s.at_ms = now_ms;
  s.source_lsn = slots->current_lsn;
  auto replay = Lsn::Parse(trows->Str(0, "replay"));
  if (!replay.ok()) return replay.status();
  s.replay_lsn = *replay;
  if (auto recv = trows->Get(0, "receive")) {
    auto r = Lsn::Parse(*recv);
    if (r.ok()) s.receive_lsn = *r;
  }
  if (trows->Get(0, "delay")) s.replay_delay_s = trows->Double(0, "delay");
  s.replay_paused = trows->Bool(0, "paused");
  s.slots = std::move(*slots);
  AddSample(s);
  return Status::OK();
}

void SyncMonitor::MarkGap() { in_sync_since_ms_.reset(); }

void SyncMonitor::AddSample(const SyncSample& s) {
  if (s.slots) last_slots_ = s.slots;
  history_.push_back(s);
  history_.back().slots.reset();  // only the latest slot snapshot is kept
  lag_seconds_.push_back(0);
  const size_t i = history_.size() - 1;
  lag_seconds_[i] = LagSecondsAt(i);
  if (UnderThreshold(i)) {
    if (!in_sync_since_ms_) in_sync_since_ms_ = s.at_ms;
  } else {
    in_sync_since_ms_.reset();
  }
  if (history_.size() >= 2) {
    peak_source_bps_ = std::max(peak_source_bps_, WindowRate(true));
    peak_replay_bps_ = std::max(peak_replay_bps_, WindowRate(false));
  }
  Trim();
}

void SyncMonitor::Trim() {
  const int64_t newest = history_.back().at_ms;
  const int64_t keep_ms = std::max({kHistoryMs, 2 * opts_.rate_window_ms, 2 * opts_.sustain_ms});
  while (history_.size() > 2 &&
         (history_.size() > kMaxSamples || history_.front().at_ms < newest - keep_ms)) {
    history_.pop_front();
    lag_seconds_.pop_front();
  }
}

double SyncMonitor::LagSecondsAt(size_t i) const {
  const SyncSample& now = history_[i];
  if (now.replay_lsn >= now.source_lsn) return 0;
  // The first sample at which the source had reached the replica's position.
  size_t j = 0;
  while (j < i && history_[j].source_lsn < now.replay_lsn) ++j;
  if (j == 0) {
    // Before our history: at least the whole span.
    return static_cast<double>(now.at_ms - history_[0].at_ms) / 1000.0;
  }
  const SyncSample& a = history_[j - 1];
  const SyncSample& b = history_[j];
  // The source passed replay_lsn between a and b; interpolate by position.
  double t = static_cast<double>(b.at_ms);
  if (b.source_lsn > a.source_lsn) {
    const double frac = static_cast<double>(now.replay_lsn.value - a.source_lsn.value) /
                        static_cast<double>(b.source_lsn.value - a.source_lsn.value);
    t = static_cast<double>(a.at_ms) + frac * static_cast<double>(b.at_ms - a.at_ms);
  }
  return std::max(0.0, (static_cast<double>(now.at_ms) - t) / 1000.0);
}

bool SyncMonitor::UnderThreshold(size_t i) const {
  const SyncSample& s = history_[i];
  return LsnDiff(s.source_lsn, s.replay_lsn) <= opts_.lag_threshold_bytes &&
         lag_seconds_[i] <= opts_.lag_threshold_seconds;
}

double SyncMonitor::WindowRate(bool source) const {
  if (history_.size() < 2) return 0;
  const SyncSample& newest = history_.back();
  size_t k = history_.size() - 1;
  while (k > 0 && history_[k - 1].at_ms >= newest.at_ms - opts_.rate_window_ms) --k;
  if (k == history_.size() - 1) --k;  // window shorter than the sampling interval
  const SyncSample& oldest = history_[k];
  const int64_t dt = newest.at_ms - oldest.at_ms;
  if (dt <= 0) return 0;
  const uint64_t bytes = source ? LsnDiff(newest.source_lsn, oldest.source_lsn)
                                : LsnDiff(newest.replay_lsn, oldest.replay_lsn);
  return static_cast<double>(bytes) * 1000.0 / static_cast<double>(dt);
}

bool SyncMonitor::LagSustained() const {
  return in_sync_since_ms_.has_value() && InSyncMs() >= opts_.sustain_ms;
}

int64_t SyncMonitor::InSyncMs() const {
  if (!in_sync_since_ms_ || history_.empty()) return 0;
  return history_.back().at_ms - *in_sync_since_ms_;
}

uint64_t SyncMonitor::LagBytes() const {
  if (history_.empty()) return 0;
  return LsnDiff(history_.back().source_lsn, history_.back().replay_lsn);
}

double SyncMonitor::LagSeconds() const { return lag_seconds_.empty() ? 0 : lag_seconds_.back(); }
double SyncMonitor::SourceWalBps() const { return WindowRate(true); }
double SyncMonitor::ReplayBps() const { return WindowRate(false); }

nlohmann::json SyncMonitor::ProgressJson() const {
  return {{"lag_bytes", LagBytes()},
          {"lag_seconds", LagSeconds()},
          {"in_sync_ms", InSyncMs()},
          {"lag_sustained", LagSustained()},
          {"source_wal_bps", SourceWalBps()},
          {"replay_bps", ReplayBps()},
          {"peak_source_wal_bps", PeakSourceWalBps()},
          {"peak_replay_bps", PeakReplayBps()},
          {"replay_paused", !history_.empty() && history_.back().replay_paused}};
}

std::vector<Finding> SyncMonitor::Findings() const {
  std::vector<Finding> out;
  const nlohmann::json lag_threshold = {{"lag_bytes", opts_.lag_threshold_bytes},
                                        {"lag_seconds", opts_.lag_threshold_seconds},
                                        {"sustain_ms", opts_.sustain_ms}};
  Finding lag;
  lag.id = "lag_sustained";
  lag.threshold = lag_threshold;
  lag.value = {{"lag_bytes", LagBytes()}, {"lag_seconds", LagSeconds()},
               {"in_sync_ms", InSyncMs()}};
  const bool paused = !history_.empty() && history_.back().replay_paused;
  if (history_.empty()) {
    lag.severity = Severity::kBlocking;
    lag.message = "replication lag has not been sampled yet";
    lag.remedy = "wait for the sync phase to sample the replica";
  } else if (LagSustained()) {
    lag.severity = Severity::kOk;
    lag.message = "lag " + FormatBytes(LagBytes()) + " / " + Fmt(LagSeconds(), "%.2f") +
                  " s, under the thresholds for " + Fmt(InSyncMs() / 1000.0) + " s";
  } else {
    lag.severity = Severity::kBlocking;
    lag.message = "lag " + FormatBytes(LagBytes()) + " / " + Fmt(LagSeconds(), "%.2f") +
                  " s; under the thresholds for " + Fmt(InSyncMs() / 1000.0) + " s of the " +
                  Fmt(opts_.sustain_ms / 1000.0) + " s required";
    lag.remedy = paused ? "replay is paused on the target: SELECT pg_wal_replay_resume();"
                        : "wait for the replica to catch up and stay caught up";
  }
  out.push_back(std::move(lag));

  Finding rate;
  rate.id = "wal_rate";
  rate.value = {{"source_wal_bps", SourceWalBps()},
                {"replay_bps", ReplayBps()},
                {"peak_source_wal_bps", PeakSourceWalBps()},
                {"peak_replay_bps", PeakReplayBps()}};
  rate.threshold = {{"lag_bytes", opts_.lag_threshold_bytes}};
  const std::string rates = "source WAL " + FormatBytes(static_cast<uint64_t>(SourceWalBps())) +
                            "/s (peak " +
                            FormatBytes(static_cast<uint64_t>(PeakSourceWalBps())) +
                            "/s), replay " + FormatBytes(static_cast<uint64_t>(ReplayBps())) +
                            "/s (peak " + FormatBytes(static_cast<uint64_t>(PeakReplayBps())) +
                            "/s)";
  if (history_.size() < 2) {
    rate.severity = Severity::kWarning;
    rate.message = "rates not measured yet (need two samples)";
    rate.remedy = "keep sampling";
  } else if (LagBytes() > opts_.lag_threshold_bytes && ReplayBps() < SourceWalBps()) {
    rate.severity = Severity::kBlocking;
    rate.message = "the replica is falling behind: " + rates;
    rate.remedy = paused ? "replay is paused on the target: SELECT pg_wal_replay_resume();"
                         : "give the target more I/O/CPU, or reduce the write load, until "
                           "replay keeps up with the peak WAL rate";
  } else if (LagBytes() > opts_.lag_threshold_bytes) {
    rate.severity = Severity::kWarning;
    const double gain = ReplayBps() - SourceWalBps();
    rate.message = "the replica is catching up: " + rates +
                   (gain > 0 ? ", about " + Fmt(LagBytes() / gain) + " s to go" : "");
    rate.remedy = "wait for the replica to catch up";
  } else {
    rate.severity = Severity::kOk;
    rate.message = "the replica keeps up: " + rates;
  }
  out.push_back(std::move(rate));

  if (last_slots_) {
    for (Finding& f : EvaluateSlots(*last_slots_, opts_.slot_thresholds)) {
      out.push_back(std::move(f));
    }
  }
  return out;
}

}  // namespace pgshift::checks
