// The post-cutover health window against the pre-migration baseline: the
// arithmetic (workflow/health.h) and the runner's decisions with the fake
// env (an anomaly rolls back or alerts; traffic within tolerance finalizes).
#include "workflow/health.h"

#include <gtest/gtest.h>

#include <string>

#include "workflow/engine_test_util.h"

namespace pgshift {
namespace {

using testing_util::EngineTest;
using testing_util::json;
using testing_util::Spec;

// A health window long enough to judge several stretches after the settle time.
json HealthSpec(const std::string& on_anomaly) {
  json s = Spec(true, true);
  s["options"]["verify_seconds"] = 10;
  s["options"]["on_anomaly"] = on_anomaly;
  return s;
}

bool HasEventContaining(const json& events, const std::string& text) {
  for (const auto& e : events)
    if (e["message"].get<std::string>().find(text) != std::string::npos) return true;
  return false;
}

const json* FindingById(const json& m, const std::string& id) {
  for (const auto& f : m["findings"])
    if (f["id"] == id) return &f;
  return nullptr;
}

RouteStats Reading(int64_t txns, int64_t failed, double latency_ms) {
  RouteStats s{.transactions = txns, .failed_transactions = failed};
  s.latency = LatencyHistogram::ProxyLayout();
  const int64_t us = static_cast<int64_t>(latency_ms * 1000);
  s.latency.counts[LatencyBucketOf(us)] = txns;
  s.timed_transactions = txns;
  s.latency_sum_us = us * txns;
  return s;
}

TEST(LatencyHistogramTest, QuantilesInterpolateWithinTheirBucket) {
  LatencyHistogram h = LatencyHistogram::ProxyLayout();
  h.counts[LatencyBucketOf(800)] = 99;    // (0.5, 1] ms
  h.counts[LatencyBucketOf(40'000)] = 1;  // (25, 50] ms
  ASSERT_EQ(h.Total(), 100);
  EXPECT_GT(*h.QuantileMs(0.5), 0.5);
  EXPECT_LE(*h.QuantileMs(0.5), 1.0);
  EXPECT_LE(*h.QuantileMs(0.99), 1.0);
  EXPECT_GT(*h.QuantileMs(1.0), 25.0);
  EXPECT_FALSE(LatencyHistogram::ProxyLayout().QuantileMs(0.99));
  // Past the last bound: reported as at least that bound.
  LatencyHistogram slow = LatencyHistogram::ProxyLayout();
  slow.counts.back() = 5;
  EXPECT_DOUBLE_EQ(*slow.QuantileMs(0.99), kLatencyBoundsUs.back() / 1000.0);
}

TEST(LatencyHistogramTest, MinusRefusesACounterThatWentDown) {
  LatencyHistogram a = LatencyHistogram::ProxyLayout(), b = a;
  a.counts[3] = 5;
  b.counts[3] = 7;
  EXPECT_EQ(b.Minus(a)->counts[3], 2);
  EXPECT_FALSE(a.Minus(b));
}

TEST(HealthTest, TrafficBetweenTwoReadings) {
  auto t = TrafficBetween("proxy", {Reading(1000, 10, 2), 1000}, {Reading(3000, 30, 2), 3000});
  ASSERT_TRUE(t);
  EXPECT_EQ(t->transactions, 2000);
  EXPECT_DOUBLE_EQ(t->tps, 1000);
  EXPECT_EQ(t->failed_transactions, 20);
  EXPECT_DOUBLE_EQ(*t->error_rate, 0.01);
  EXPECT_NEAR(*t->avg_ms, 2, 1e-9);
  EXPECT_GT(*t->p99_ms, 1.0);
  EXPECT_LE(*t->p99_ms, 2.5);
  // A restarted router: its counters went down.
  EXPECT_FALSE(TrafficBetween("proxy", {Reading(3000, 0, 2), 0}, {Reading(10, 0, 2), 1}));
  // PgBouncer: no error count, no distribution; the average only.
  RouteStats pgb{.transactions = 100, .timed_transactions = 100, .latency_sum_us = 400'000};
  auto p = TrafficBetween("pgbouncer", {RouteStats{}, 0}, {pgb, 1000});
  ASSERT_TRUE(p);
  EXPECT_FALSE(p->error_rate);
  EXPECT_FALSE(p->p99_ms);
  EXPECT_DOUBLE_EQ(*p->avg_ms, 4);
}

TEST(HealthTest, JudgeAgainstTheBaselineWithTolerances) {
  MigrationOptions o;
  auto sample = [](int64_t txns, int64_t failed, double latency_ms) {
    return *TrafficBetween("proxy", {RouteStats{.failed_transactions = 0}, 0},
                           {Reading(txns, failed, latency_ms), 1000});
  };
  const TrafficSample baseline = sample(1000, 1, 2);
  EXPECT_TRUE(JudgeTraffic(baseline, sample(100, 0, 2), o).anomaly.empty());
  EXPECT_TRUE(JudgeTraffic(baseline, sample(100, 0, 2), o).judged);
  HealthVerdict errors = JudgeTraffic(baseline, sample(100, 20, 2), o);
  EXPECT_NE(errors.anomaly.find("error rate 20.00%"), std::string::npos) << errors.anomaly;
  // Latency against at least the floor: 2 ms → 40 ms is within 3 × 50 ms.
  EXPECT_TRUE(JudgeTraffic(baseline, sample(100, 0, 40), o).anomaly.empty());
  HealthVerdict slow = JudgeTraffic(baseline, sample(100, 0, 400), o);
  EXPECT_NE(slow.anomaly.find("p99 latency"), std::string::npos) << slow.anomaly;
  // Too few transactions, or no baseline: not judged, and said why.
  HealthVerdict few = JudgeTraffic(baseline, sample(o.health_min_samples - 1, 40, 400), o);
  EXPECT_FALSE(few.judged);
  EXPECT_FALSE(few.note.empty());
  EXPECT_FALSE(JudgeTraffic(std::nullopt, sample(100, 50, 400), o).judged);
}

TEST_F(EngineTest, BaselineIsSampledBeforeTheCutover) {
  std::string id = Create(Spec(false, false));
  Run(id);
  json m = Get(id);
  ASSERT_EQ(m["phase"], "ready");
  const json& b = m["progress"]["baseline"];
  ASSERT_TRUE(b.is_object()) << m["progress"].dump();
  EXPECT_EQ(b["router"], "fake");
  EXPECT_GE(b["transactions"].get<int64_t>(), 100);
  EXPECT_GT(b["tps"].get<double>(), 0);
  EXPECT_DOUBLE_EQ(b["error_rate"].get<double>(), 0);
  EXPECT_GT(b["p99_ms"].get<double>(), 1.0);
  EXPECT_LE(b["p99_ms"].get<double>(), 2.5);
}

TEST_F(EngineTest, ErrorRateAnomalyRollsBackWithTheReason) {
  world_->target_traffic.error_rate = 0.5;
  std::string id = Create(HealthSpec("rollback"));
  Run(id);
  json m = Get(id);
  EXPECT_EQ(m["phase"], "rolled_back");
  EXPECT_EQ(m["state"], "rolled_back");
  EXPECT_EQ(m["result"]["rollback_from"], "verify");
  const std::string failure = m["result"]["verify_failure"];
  EXPECT_NE(failure.find("error rate 50.00%"), std::string::npos) << failure;
  const json& h = m["result"]["health"];
  EXPECT_EQ(h["action"], "rollback");
  EXPECT_EQ(h["matched_baseline"], false);
  EXPECT_EQ(h["anomaly"], failure);
  const json* f = FindingById(m, "post_cutover_anomaly");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ((*f)["message"], failure);
  EXPECT_TRUE(HasEventContaining(Events(id), "rolling back automatically: error rate"));
  EXPECT_EQ(world_->routed, world_->source_ep) << "traffic is back on the source";
  EXPECT_FALSE(world_->fenced);
}

TEST_F(EngineTest, LatencyAnomalyRollsBack) {
  world_->target_traffic.latency_ms = 600;
  std::string id = Create(HealthSpec("rollback"));
  Run(id);
  json m = Get(id);
  EXPECT_EQ(m["phase"], "rolled_back");
  EXPECT_NE(m["result"]["verify_failure"].get<std::string>().find("p99 latency"),
            std::string::npos);
  EXPECT_EQ(world_->routed, world_->source_ep);
}

TEST_F(EngineTest, AnomalyWithAlertOnlyKeepsTrafficOnTheTarget) {
  world_->target_traffic.error_rate = 0.5;
  std::string id = Create(HealthSpec("alert"));
  Run(id);
  json m = Get(id);
  EXPECT_EQ(m["phase"], "finalized");
  const json& h = m["result"]["health"];
  EXPECT_EQ(h["action"], "alert");
  EXPECT_EQ(h["matched_baseline"], false);
  EXPECT_NE(h["anomaly"].get<std::string>().find("error rate"), std::string::npos);
  EXPECT_FALSE(m["result"].contains("verify_failure"));
  ASSERT_NE(FindingById(m, "post_cutover_anomaly"), nullptr);
  json events = Events(id);
  EXPECT_TRUE(HasEventContaining(events, "on_anomaly: alert, traffic stays on the target"));
  EXPECT_TRUE(HasEventContaining(events,
                                 "post-cutover report at finalize: traffic on the target "
                                 "did not match the baseline"));
  EXPECT_EQ(world_->routed, world_->target_ep);
}

TEST_F(EngineTest, TrafficWithinToleranceFinalizesWithAMatchingReport) {
  world_->target_traffic.latency_ms = 3;  // a little slower, well within 3x
  std::string id = Create(HealthSpec("rollback"));
  Run(id);
  json m = Get(id);
  EXPECT_EQ(m["phase"], "finalized");
  const json& h = m["result"]["health"];
  EXPECT_EQ(h["matched_baseline"], true) << h.dump();
  EXPECT_GE(h["intervals_judged"].get<int>(), 2);
  EXPECT_FALSE(h.contains("anomaly"));
  EXPECT_GE(h["window"]["transactions"].get<int64_t>(), 100);
  EXPECT_EQ(FindingById(m, "post_cutover_anomaly"), nullptr);
  EXPECT_TRUE(HasEventContaining(Events(id),
                                 "post-cutover report at finalize: traffic on the "
                                 "target matched the baseline"));
}

// The reverse stream broken after the switch (the source's apply worker
// fails): an anomaly, and since a lossless rollback needs that stream, the
// automatic rollback cannot finish: traffic stays on the target, nothing is
// discarded, and the migration stops naming the apply failure for an
// operator (who may roll back with discard_target_writes).
TEST_F(EngineTest, UnhealthyReverseReplicationIsAnAnomalyAndNothingIsDiscarded) {
  world_->reverse_apply_stuck = true;
  std::string id = Create(HealthSpec("rollback"));
  Run(id);
  json m = Get(id);
  EXPECT_NE(m["phase"], "rolled_back") << m.dump();
  EXPECT_NE(m["result"]["verify_failure"].get<std::string>().find("apply worker failing"),
            std::string::npos)
      << m.dump();
  EXPECT_NE(FindingById(m, "post_cutover_anomaly"), nullptr);
  EXPECT_EQ(world_->routed, world_->target_ep) << "traffic stays where the writes are";
}

TEST_F(EngineTest, UnreadableRouterStatsDoNotRollBack) {
  world_->stats_fail = true;
  std::string id = Create(HealthSpec("rollback"));
  Run(id);
  json m = Get(id);
  EXPECT_EQ(m["phase"], "finalized");
  EXPECT_FALSE(m["result"]["health"].contains("matched_baseline"));
  EXPECT_TRUE(m["result"]["health"].contains("note"));
}

TEST_F(EngineTest, HealthOptionsAreValidated) {
  for (const auto& [key, bad] :
       std::vector<std::pair<std::string, json>>{{"on_anomaly", "page"},
                                                 {"health_max_error_rate", 2},
                                                 {"health_max_p99_ratio", 0.5},
                                                 {"health_min_samples", 0}}) {
    json s = Spec();
    s["options"][key] = bad;
    auto m = engine_->Create(s);
    EXPECT_EQ(m.status().code(), Code::kInvalidArgument) << key;
    EXPECT_NE(m.status().message().find(key), std::string::npos) << m.status().message();
  }
  json s = Spec();
  s["options"]["on_anomaly"] = "alert";
  s["options"]["health_max_p99_ratio"] = 5;
  auto m = engine_->Create(s);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ((*m)["spec"]["options"]["on_anomaly"], "alert");
  EXPECT_EQ((*m)["spec"]["options"]["health_max_p99_ratio"], 5.0);
}

}  // namespace
}  // namespace pgshift
