#include "common/latency.h"

#include <algorithm>

namespace pgshift {

size_t LatencyBucketOf(int64_t us) {
  auto it = std::lower_bound(kLatencyBoundsUs.begin(), kLatencyBoundsUs.end(), us);
  return static_cast<size_t>(it - kLatencyBoundsUs.begin());
}

LatencyHistogram LatencyHistogram::ProxyLayout() {
  LatencyHistogram h;
  for (int64_t b : kLatencyBoundsUs) h.upper_ms.push_back(static_cast<double>(b) / 1000.0);
  h.counts.assign(kLatencyBuckets, 0);
  return h;
}

int64_t LatencyHistogram::Total() const {
  int64_t n = 0;
  for (int64_t c : counts) n += c;
  return n;
}

std::optional<LatencyHistogram> LatencyHistogram::Minus(const LatencyHistogram& earlier) const {
  if (earlier.empty()) return *this;
  if (upper_ms != earlier.upper_ms || counts.size() != earlier.counts.size()) return std::nullopt;
  LatencyHistogram d = *this;
  for (size_t i = 0; i < counts.size(); i++) {
    d.counts[i] -= earlier.counts[i];
    if (d.counts[i] < 0) return std::nullopt;
  }
  return d;
}

std::optional<double> LatencyHistogram::QuantileMs(double q) const {
  const int64_t total = Total();
  if (total <= 0 || counts.size() != upper_ms.size() + 1) return std::nullopt;
  // The rank of the quantile, 1-based: the smallest count whose share reaches q.
  const double rank = std::max(1.0, q * static_cast<double>(total));
  int64_t below = 0;
  for (size_t i = 0; i < counts.size(); i++) {
    if (counts[i] == 0 || static_cast<double>(below + counts[i]) < rank) {
      below += counts[i];
      continue;
    }
    const double lower = i == 0 ? 0.0 : upper_ms[i - 1];
    if (i == upper_ms.size()) return lower;
    const double share = (rank - static_cast<double>(below)) / static_cast<double>(counts[i]);
    return lower + (upper_ms[i] - lower) * share;
  }
  return upper_ms.empty() ? std::nullopt : std::optional<double>(upper_ms.back());
}

}  // namespace pgshift
