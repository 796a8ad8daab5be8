// Transaction latency histograms: the fixed log-scale bucket layout that
// pgshift-proxy counts into, and what pgshiftd reads from bucket counts
// (the difference of two cumulative readings, percentiles).
//
// A histogram as read is self-describing (its bucket bounds travel with the
// counts), so a reader never assumes the proxy's layout. Plain value types
// and pure functions; thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <vector>

namespace pgshift {

// The proxy's buckets: bucket i counts latencies up to kLatencyBoundsUs[i]
// (inclusive); one more bucket counts the rest. A 1-2.5-5 series, so a
// percentile is known within a factor of about 2.5.
inline constexpr std::array<int64_t, 21> kLatencyBoundsUs = {
    10,    25,     50,     100,    250,     500,     1000,    2500,     5000,     10000,   25000,
    50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000, 30000000, 60000000};
inline constexpr size_t kLatencyBuckets = kLatencyBoundsUs.size() + 1;

// The bucket of a latency of `us` microseconds in the proxy's layout.
size_t LatencyBucketOf(int64_t us);

// Bucket counts with their bounds: counts[i] for latencies up to upper_ms[i],
// counts.back() for the rest (counts.size() == upper_ms.size() + 1). Empty
// when the router measures no latency distribution.
struct LatencyHistogram {
  std::vector<double> upper_ms;
  std::vector<int64_t> counts;

  // The proxy's layout with every count 0.
  static LatencyHistogram ProxyLayout();
  bool empty() const { return counts.empty(); }
  int64_t Total() const;
  // this − earlier, bucket by bucket: what was counted between two cumulative
  // readings. nullopt when the layouts differ or a count went down (the
  // router restarted in between).
  std::optional<LatencyHistogram> Minus(const LatencyHistogram& earlier) const;
  // The q-quantile (0 < q <= 1) in ms, linear inside its bucket; a quantile
  // in the open last bucket is reported as that bucket's lower bound (at
  // least that). nullopt when nothing was counted.
  std::optional<double> QuantileMs(double q) const;
};

}  // namespace pgshift
