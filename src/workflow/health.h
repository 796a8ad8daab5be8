// Route traffic for the post-cutover health window: readings of a router's
// cumulative counters, the traffic between two of them (TrafficSample,
// model/traffic.h), and the judgement of post-cutover traffic against the
// pre-migration baseline with the tolerances of MigrationOptions.
// Pure functions and plain values; thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "model/migration.h"
#include "router/router.h"

namespace pgshift {

namespace health_defaults {
// A p99 (or average) latency is compared with the baseline's, but with at
// least this much: against a sub-millisecond baseline, scheduling noise on a
// busy machine would otherwise read as a many-fold slowdown.
inline constexpr double kLatencyFloorMs = 50;
// The window's readings start this long after verify begins, so the
// transactions held across the switch (their wait is the cutover's, reported
// as its hold) are not judged as post-cutover latency.
inline constexpr int64_t kSettleMs = 1000;
// A stretch of the window is judged once it is this long (and holds
// options.health_min_samples transactions): a p99 over a few hundred
// milliseconds of traffic is one stall, not a trend.
inline constexpr int64_t kMinStretchMs = 2000;
// An anomaly counts once this many stretches of the window in a row show it:
// one stretch can be a passing stall (a checkpoint, a busy neighbour).
// A reverse-replication failure counts at once.
inline constexpr int kAnomalyStreak = 2;
// How often sync and ready read the router for the baseline.
inline constexpr int64_t kBaselineSampleMs = 1000;
}  // namespace health_defaults

// The reverse stream (the promoted target replicating back to the fenced
// source, so a rollback after writes loses none) as the post-cutover health
// window sees it.
struct ReverseReplicationHealth {
  bool in_use = false;  // no reverse replication: nothing to judge
  bool healthy = true;
  std::string detail;  // when not healthy: what is wrong (for the anomaly's reason)
};

// One reading of a router's counters, and when it was taken (epoch ms).
struct RouterReading {
  RouteStats stats;
  int64_t at_ms = 0;
};

// The traffic between two readings of the same router (`kind`). nullopt
// when a counter went down (the router restarted in between).
std::optional<TrafficSample> TrafficBetween(const std::string& kind, const RouterReading& from,
                                            const RouterReading& to);

// The verdict on a stretch of post-cutover traffic.
struct HealthVerdict {
  bool judged = false;  // enough transactions here and in the baseline
  std::string anomaly;  // "" within tolerances; else what is wrong, with its numbers
  std::string note;     // when not judged: why
};
HealthVerdict JudgeTraffic(const std::optional<TrafficSample>& baseline,
                           const TrafficSample& window, const MigrationOptions& options);

// "1234 transactions, 410.2/s, errors 0.1%, p50/p95/p99 1.2/3.4/8.9 ms", for events.
std::string DescribeTraffic(const TrafficSample& t);

}  // namespace pgshift
