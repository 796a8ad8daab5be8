// Health: the route's traffic through the router, before and after the
// cutover (workflow/health.h has the arithmetic and the judgement).
//
//   baseline  sync and ready read the router every kBaselineSampleMs; the
//             traffic since the first reading (on the source, before any
//             cutover) is progress.baseline.
//   window    each verify step, once kSettleMs have passed: the traffic
//             since the last judged stretch is judged against the baseline
//             when it holds options.health_min_samples transactions and
//             spans kMinStretchMs;
//             kAnomalyStreak anomalous stretches in a row, or an unhealthy
//             reverse replication (at once), are an anomaly. It is recorded
//             (result.health, a post_cutover_anomaly finding, an event) and,
//             with options.on_anomaly = rollback, starts the rollback an
//             operator's request starts (StartRollback).
//   report    the end of the window records whether its traffic matched the
//             baseline (result.health.matched_baseline); finalize records
//             the last report, over everything since the window began.
#include "workflow/runner.h"

namespace pgshift {

using health_defaults::kAnomalyStreak;

std::optional<RouterReading> MigrationRunner::ReadRouter() {
  Router& router = env_->router();
  if (router.Kind() == "none") return std::nullopt;
  auto stats = router.Stats();
  if (!stats.ok()) {
    Log("warning", "could not read the router's traffic counters: " + stats.status().message());
    return std::nullopt;
  }
  return RouterReading{.stats = *stats, .at_ms = clock_.NowMs()};
}

void MigrationRunner::SampleBaseline() {
  const int64_t now = clock_.NowMs();
  if (baseline_from_ && now - baseline_read_ms_ < health_defaults::kBaselineSampleMs) return;
  auto reading = ReadRouter();
  if (!reading) return;
  baseline_read_ms_ = now;
  if (!baseline_from_) {
    baseline_from_ = reading;
    return;
  }
  auto t = TrafficBetween(env_->router().Kind(), *baseline_from_, *reading);
  if (!t) {  // the router restarted: start over
    baseline_from_ = reading;
    return;
  }
  // A span begun before a restart of pgshiftd stays until this one is larger.
  const auto& kept = progress_.baseline;
  if (kept && kept->started_ms < baseline_from_->at_ms && kept->transactions > t->transactions)
    return;
  progress_.baseline = *t;
}

Status MigrationRunner::WatchHealth() {
  if (!result_.health) result_.health = HealthReport{};
  auto reverse = ReverseHealth();
  if (!reverse.ok()) {
    Log("warning", "could not look at the reverse replication: " + reverse.status().message());
  } else if (reverse->in_use && !reverse->healthy) {
    return OnAnomaly("reverse replication to the source is not healthy: " + reverse->detail);
  }
  if (clock_.NowMs() < result_.verify_started_ms.value_or(0) + health_defaults::kSettleMs)
    return Status::OK();
  auto reading = ReadRouter();
  if (!reading) return Status::OK();
  const std::string kind = env_->router().Kind();
  if (!window_from_) {
    window_from_ = checkpoint_ = reading;
    return Status::OK();
  }
  auto stretch = TrafficBetween(kind, *checkpoint_, *reading);
  auto window = TrafficBetween(kind, *window_from_, *reading);
  if (!stretch || !window) {  // the router restarted: the window starts again
    window_from_ = checkpoint_ = reading;
    anomaly_streak_ = 0;
    return Status::OK();
  }
  HealthReport& h = *result_.health;
  h.window = *window;
  if (stretch->transactions < spec_.options.health_min_samples ||
      reading->at_ms - checkpoint_->at_ms < health_defaults::kMinStretchMs)
    return Status::OK();
  checkpoint_ = reading;
  HealthVerdict v = JudgeTraffic(progress_.baseline, *stretch, spec_.options);
  if (!v.judged) {
    h.note = v.note;
    return Status::OK();
  }
  h.intervals_judged = h.intervals_judged.value_or(0) + 1;
  if (v.anomaly.empty()) {
    anomaly_streak_ = 0;
    return Status::OK();
  }
  if (++anomaly_streak_ < kAnomalyStreak) {
    Log("warning", "post-cutover traffic outside the tolerance (" +
                       std::to_string(anomaly_streak_) + " of " + std::to_string(kAnomalyStreak) +
                       " stretches in a row): " + v.anomaly);
    return Status::OK();
  }
  return OnAnomaly(v.anomaly);
}

Result<ReverseReplicationHealth> MigrationRunner::ReverseHealth() {
  ReverseReplicationHealth h;
  if (!result_.reverse_replication_on.value_or(false)) return h;  // nothing to judge
  h.in_use = true;
  PGSHIFT_ASSIGN_OR_RETURN(ReverseReplicationState st,
                           env_->InspectReverseReplication(/*mark=*/false));
  if (!st.in_place) {
    h.healthy = false;
    h.detail = "the source's subscription or the target's publication or slot is gone";
  } else if (!st.apply_error.empty()) {
    h.healthy = false;
    h.detail = st.apply_error;
  }
  return h;
}

Status MigrationRunner::OnAnomaly(const std::string& reason) {
  HealthReport& h = *result_.health;
  const bool rollback = spec_.options.on_anomaly == OnAnomaly::kRollback;
  const bool first = !h.anomaly;
  if (first) {
    h.anomaly = reason;
    h.action = OnAnomalyName(spec_.options.on_anomaly);
    h.anomaly_at_ms = clock_.NowMs();
    h.matched_baseline = false;
    MergeFindings({{.id = "post_cutover_anomaly",
                    .severity = checks::Severity::kWarning,
                    .message = reason,
                    .remedy = rollback ? "traffic was routed back to the source automatically "
                                         "(options.on_anomaly: rollback)"
                                       : "look at the target and the application; `pgshift "
                                         "migration rollback` routes traffic back"}});
  }
  if (rollback) {
    result_.verify_failure = reason;
    return StartRollback("post-cutover anomaly, rolling back automatically: " + reason);
  }
  if (first) {
    Note(
        "warning",
        "post-cutover anomaly (options.on_anomaly: alert, traffic stays on the target): " + reason);
  }
  return Status::OK();
}

namespace {

// The window so far against the baseline, as one line; sets matched_baseline
// unless an anomaly already decided it.
std::string Verdict(HealthReport& h, const std::optional<TrafficSample>& baseline,
                    const MigrationOptions& options) {
  if (!h.window) {
    h.note = h.note.value_or("no traffic reading after the cutover");
    return "not judged: " + *h.note;
  }
  const std::string traffic =
      DescribeTraffic(*h.window) + (baseline ? "; baseline " + DescribeTraffic(*baseline) : "");
  if (h.anomaly) return "did not match the baseline (" + *h.anomaly + "): " + traffic;
  HealthVerdict v = JudgeTraffic(baseline, *h.window, options);
  if (!v.judged) {
    h.note = v.note;
    return "not judged (" + v.note + "): " + traffic;
  }
  h.matched_baseline = v.anomaly.empty();
  if (!v.anomaly.empty()) return "did not match the baseline (" + v.anomaly + "): " + traffic;
  return "matched the baseline: " + traffic;
}

}  // namespace

void MigrationRunner::CloseHealthWindow() {
  if (env_->router().Kind() == "none") return;
  if (!result_.health) result_.health = HealthReport{};
  Note("info", "post-cutover health window: traffic " +
                   Verdict(*result_.health, progress_.baseline, spec_.options));
}

void MigrationRunner::FinalHealthReport() {
  if (env_->router().Kind() == "none") return;
  if (!result_.health) result_.health = HealthReport{};
  HealthReport& h = *result_.health;
  if (window_from_) {
    if (auto reading = ReadRouter()) {
      if (auto t = TrafficBetween(env_->router().Kind(), *window_from_, *reading)) h.window = *t;
    }
  }
  Note("info", "post-cutover report at finalize: traffic on the target " +
                   Verdict(h, progress_.baseline, spec_.options));
}

}  // namespace pgshift
