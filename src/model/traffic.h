// The typed records of a route's traffic as the router saw it: the
// pre-migration baseline (sampled during sync and validate) and the
// post-cutover health report (verify, then finalize), stored in a
// migration's "progress" and "result" (progress.h). Plain value types;
// thread-compatible.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace pgshift {

// Traffic through the router between two readings of its counters.
struct TrafficSample {
  std::string router;  // the router's kind ("proxy", "pgbouncer")
  int64_t started_ms = 0;
  int64_t ended_ms = 0;
  int64_t transactions = 0;
  double tps = 0;
  // Absent when the router keeps no error count (PgBouncer).
  std::optional<int64_t> failed_transactions;
  std::optional<double> error_rate;  // failed / transactions
  // The transactions whose latency the router measured (the proxy: those it
  // forwarded in user space, not the ones the kernel splice carried).
  int64_t timed_transactions = 0;
  std::optional<double> avg_ms;
  // Absent when the router has no distribution (PgBouncer: average only).
  std::optional<double> p50_ms;
  std::optional<double> p95_ms;
  std::optional<double> p99_ms;
  nlohmann::json unknown = nlohmann::json::object();

  template <typename Self, typename Visit>
  static void Fields(Self& s, Visit& v) {
    v("router", s.router);
    v("started_ms", s.started_ms);
    v("ended_ms", s.ended_ms);
    v("transactions", s.transactions);
    v("tps", s.tps);
    v("failed_transactions", s.failed_transactions);
    v("error_rate", s.error_rate);
    v("timed_transactions", s.timed_transactions);
    v("avg_ms", s.avg_ms);
    v("p50_ms", s.p50_ms);
    v("p95_ms", s.p95_ms);
    v("p99_ms", s.p99_ms);
  }
};

// The post-cutover health window against the baseline. Written by verify
// (the window) and again by finalize (traffic up to the retirement of the
// source, the last report).
struct HealthReport {
  std::optional<TrafficSample> window;  // post-cutover traffic
  // Whether the post-cutover traffic stayed within the tolerances of the
  // baseline; absent when it could not be judged (no baseline, or fewer
  // transactions than options.health_min_samples).
  std::optional<bool> matched_baseline;
  std::optional<std::string> anomaly;  // the first anomaly seen, with its numbers
  std::optional<std::string> action;   // what the anomaly caused: "rollback" or "alert"
  std::optional<int64_t> anomaly_at_ms;
  std::optional<int> intervals_judged;  // stretches of >= min_samples transactions compared
  std::optional<std::string> note;      // why something was not judged
  nlohmann::json unknown = nlohmann::json::object();

  template <typename Self, typename Visit>
  static void Fields(Self& s, Visit& v) {
    v("window", s.window);
    v("matched_baseline", s.matched_baseline);
    v("anomaly", s.anomaly);
    v("action", s.action);
    v("anomaly_at_ms", s.anomaly_at_ms);
    v("intervals_judged", s.intervals_judged);
    v("note", s.note);
  }
};

}  // namespace pgshift
