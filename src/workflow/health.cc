#include "workflow/health.h"

#include <algorithm>
#include <cstdio>

namespace pgshift {
namespace {

std::string Fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

std::string Percent(double share) { return Fixed(share * 100, 2) + "%"; }

}  // namespace

std::optional<TrafficSample> TrafficBetween(const std::string& kind, const RouterReading& from,
                                            const RouterReading& to) {
  const RouteStats& a = from.stats;
  const RouteStats& b = to.stats;
  TrafficSample t{.router = kind, .started_ms = from.at_ms, .ended_ms = to.at_ms};
  t.transactions = b.transactions - a.transactions;
  t.timed_transactions = b.timed_transactions - a.timed_transactions;
  const int64_t sum_us = b.latency_sum_us - a.latency_sum_us;
  if (t.transactions < 0 || t.timed_transactions < 0 || sum_us < 0) return std::nullopt;
  const int64_t elapsed_ms = std::max<int64_t>(to.at_ms - from.at_ms, 1);
  t.tps = static_cast<double>(t.transactions) * 1000.0 / static_cast<double>(elapsed_ms);
  if (a.failed_transactions && b.failed_transactions) {
    const int64_t failed = *b.failed_transactions - *a.failed_transactions;
    if (failed < 0) return std::nullopt;
    t.failed_transactions = failed;
    if (t.transactions > 0)
      t.error_rate = static_cast<double>(failed) / static_cast<double>(t.transactions);
  }
  if (t.timed_transactions > 0)
    t.avg_ms = static_cast<double>(sum_us) / 1000.0 / static_cast<double>(t.timed_transactions);
  if (!b.latency.empty()) {
    auto d = b.latency.Minus(a.latency);
    if (!d) return std::nullopt;
    t.p50_ms = d->QuantileMs(0.50);
    t.p95_ms = d->QuantileMs(0.95);
    t.p99_ms = d->QuantileMs(0.99);
  }
  return t;
}

HealthVerdict JudgeTraffic(const std::optional<TrafficSample>& baseline,
                           const TrafficSample& window, const MigrationOptions& options) {
  const int64_t need = options.health_min_samples;
  HealthVerdict v;
  if (!baseline || baseline->transactions < need) {
    v.note = "no baseline of at least " + std::to_string(need) +
             " transactions through the router before the cutover";
    return v;
  }
  if (window.transactions < need) {
    v.note = "fewer than " + std::to_string(need) + " transactions after the cutover";
    return v;
  }
  v.judged = true;
  if (window.error_rate && baseline->error_rate &&
      *window.error_rate > *baseline->error_rate + options.health_max_error_rate) {
    v.anomaly = "error rate " + Percent(*window.error_rate) + " through the router (" +
                std::to_string(window.failed_transactions.value_or(0)) + " of " +
                std::to_string(window.transactions) + " transactions), baseline " +
                Percent(*baseline->error_rate) + ", tolerance +" +
                Percent(options.health_max_error_rate);
    return v;
  }
  // Latency: the p99 where the router has a distribution, else the average.
  if (window.timed_transactions < need || baseline->timed_transactions < need) return v;
  const bool p99 = window.p99_ms && baseline->p99_ms;
  const std::optional<double> now = p99 ? window.p99_ms : window.avg_ms;
  const std::optional<double> before = p99 ? baseline->p99_ms : baseline->avg_ms;
  if (!now || !before) return v;
  const double reference = std::max(*before, health_defaults::kLatencyFloorMs);
  if (*now > reference * options.health_max_p99_ratio) {
    const std::string what = p99 ? "p99" : "average";
    v.anomaly = what + " latency " + Fixed(*now, 1) + " ms through the router, baseline " +
                Fixed(*before, 1) + " ms, tolerance " + Fixed(options.health_max_p99_ratio, 1) +
                "x (of at least " + Fixed(health_defaults::kLatencyFloorMs, 0) + " ms)";
  }
  return v;
}

std::string DescribeTraffic(const TrafficSample& t) {
  std::string s = std::to_string(t.transactions) + " transactions, " + Fixed(t.tps, 1) + "/s";
  if (t.error_rate) s += ", errors " + Percent(*t.error_rate);
  if (t.p50_ms && t.p95_ms && t.p99_ms) {
    s += ", p50/p95/p99 " + Fixed(*t.p50_ms, 1) + "/" + Fixed(*t.p95_ms, 1) + "/" +
         Fixed(*t.p99_ms, 1) + " ms";
  } else if (t.avg_ms) {
    s += ", avg " + Fixed(*t.avg_ms, 1) + " ms";
  }
  if (t.timed_transactions < t.transactions)
    s += " (" + std::to_string(t.timed_transactions) + " timed)";
  return s;
}

}  // namespace pgshift
