// SyncMonitor: the sync phase's gauge. Fed one sample at a time (source WAL
// position, target replay position, slots), it keeps a bounded history and
// derives lag in bytes and seconds, WAL generation and replay rates over a
// window with their peaks, and whether lag has stayed under the thresholds
// for the sustain window (the gate before `ready`).
//
// Lag in seconds is measured against our own history of the source's WAL
// position: it is how long ago the source was where the replica is now. So
// an idle source with replay caught up has 0 s lag (not "time since the last
// commit"); while lagging it is accurate to one sampling interval.
//
// Not thread-safe: one owner samples and reads it (wrap it in a mutex to share).
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <vector>

#include "checks/finding.h"
#include "checks/slots.h"
#include "common/lsn.h"
#include "pg/conn.h"

namespace pgshift::checks {

struct SyncSample {
  int64_t at_ms = 0;
  Lsn source_lsn;                        // source pg_current_wal_lsn()
  Lsn replay_lsn;                        // target pg_last_wal_replay_lsn()
  Lsn receive_lsn;                       // target pg_last_wal_receive_lsn()
  std::optional<double> replay_delay_s;  // target now() - pg_last_xact_replay_timestamp()
  bool replay_paused = false;
  std::optional<SlotSnapshot> slots;     // source slots, when read with this sample
};

class SyncMonitor {
 public:
  struct Options {
    uint64_t lag_threshold_bytes = 16ull << 20;
    double lag_threshold_seconds = 5;
    int64_t sustain_ms = 30000;     // lag under both thresholds this long → LagSustained()
    int64_t rate_window_ms = 10000; // rates are averaged over this window
    SlotThresholds slot_thresholds;
  };

  explicit SyncMonitor(Options opts);

  // Reads the source and target and adds a sample taken at `now_ms`. A failed
  // read adds nothing and restarts the in-sync window (continuity unproven).
  Status Sample(PgConn& source, PgConn& target, int64_t now_ms);
  // Unit-test seam and the path Sample() ends in. Samples must come in time order.
  void AddSample(const SyncSample& s);
  // Restarts the in-sync window (e.g. after a failed read or a target restart).
  void MarkGap();

  bool LagSustained() const;
  int64_t InSyncMs() const;  // how long lag has been under both thresholds; 0 = not now
  uint64_t LagBytes() const;
  double LagSeconds() const;
  double SourceWalBps() const;
  double ReplayBps() const;
  double PeakSourceWalBps() const { return peak_source_bps_; }
  double PeakReplayBps() const { return peak_replay_bps_; }
  size_t SampleCount() const { return history_.size(); }
  const Options& options() const { return opts_; }

  // lag_sustained, wal_rate and slot_health (when slots were sampled).
  std::vector<Finding> Findings() const;
  // {"lag_bytes","lag_seconds","in_sync_ms","source_wal_bps","replay_bps",...} for progress.
  nlohmann::json ProgressJson() const;

 private:
  double LagSecondsAt(size_t idx) const;
  bool UnderThreshold(size_t idx) const;
  double WindowRate(bool source) const;
  void Trim();

  Options opts_;
  std::deque<SyncSample> history_;
  std::deque<double> lag_seconds_;  // parallel to history_
  std::optional<int64_t> in_sync_since_ms_;
  double peak_source_bps_ = 0;
  double peak_replay_bps_ = 0;
  std::optional<SlotSnapshot> last_slots_;
};

}  // namespace pgshift::checks
