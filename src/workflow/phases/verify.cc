// Verify: traffic runs on the target; it is watched before the source is
// retired.
//
//   verify  probes a write on the target, checks the route and judges the
//           traffic through the router against the pre-migration baseline
//           (WatchHealth, phases/health.cc: an anomaly rolls back or alerts,
//           options.on_anomaly) for the health window (options.verify_ms);
//           then waits for the data
//           parity check started in snapshot (ParitySettled) and for every
//           carried CDC slot to advance on the target (CdcSettled); then waits for
//           `finalize` (state waiting), or finalizes at once with
//           options.auto_finalize. A failed probe rolls back (runner.cc). A
//           parity difference blocks finalize until overridden or rolled
//           back. Leaves result.verify_started_ms, verify_probes, health, verified,
//           parity_done, parity_blocked, progress.parity and the
//           data_parity findings.
//
// A route served by several router instances (router/multi_router.h) is
// reconciled at every verify step until finalize, and once more when the
// migration ends (Transition): each instance that routes elsewhere than
// the migration's side (the target; the source after a rollback) and is
// not held is repointed, with an event and result.route_repoints; each
// instance's view is kept in progress.route_instances for the status.
// After that pgshiftd no longer drives the migration: the proxies save a
// switched route in their config, so only an instance down from the hold
// until the end comes back on the old side, whose writes the fenced (or,
// finalized, retired) source refuses; the status names it.
#include "workflow/runner.h"

namespace pgshift {

Status MigrationRunner::Verify() {
  if (!result_.verified.value_or(false)) {
    if (!result_.verify_started_ms) {
      result_.verify_started_ms = clock_.NowMs();
      PGSHIFT_RETURN_IF_ERROR(Save());
    }
    PGSHIFT_RETURN_IF_ERROR(env_->ProbeTargetWrite());
    PGSHIFT_RETURN_IF_ERROR(RouteOnTarget());
    result_.verify_probes = result_.verify_probes.value_or(0) + 1;
    PGSHIFT_RETURN_IF_ERROR(WatchHealth());
    if (phase_ != Phase::kVerify) return Status::OK();  // an anomaly started the rollback
    const int64_t elapsed = clock_.NowMs() - *result_.verify_started_ms;
    if (elapsed < spec_.options.verify_ms) {
      idle_ = true;
      return Save();
    }
    result_.verified = true;
    Note("info", "post-cutover health window passed (" + std::to_string(*result_.verify_probes) +
                     " write probes)");
    CloseHealthWindow();
    PGSHIFT_RETURN_IF_ERROR(Save());
  }
  // Until finalize, an instance of the route that comes back with an old
  // route is repointed (in the window, RouteOnTarget did it).
  bool changed = false;
  ReconcileRoute(env_->TargetEndpoint(), &changed);
  if (changed) PGSHIFT_RETURN_IF_ERROR(Save());
  if (!ParitySettled() || !CdcSettled()) {
    idle_ = true;
    return Status::OK();
  }
  if (const OperatorAction* requested = Requested("finalize")) {
    Consume(*requested);  // removed with the transition, in one commit
  } else if (!spec_.options.auto_finalize) {
    idle_ = true;
    return WaitForOperator();
  }
  return Transition(Phase::kFinalize, "finalizing: dropping the source's slot and retiring it");
}

Status MigrationRunner::RouteOnTarget() {
  if (env_->router().Kind() == "none") return Status::OK();
  const Endpoint target = env_->TargetEndpoint();
  if (!ReconcileRoute(target)) {
    PGSHIFT_ASSIGN_OR_RETURN(Endpoint cur, env_->router().Current());
    if (!(cur == target)) {
      return FailedPrecondition("the route points at " + cur.ToString() + ", not the target " +
                                target.ToString());
    }
    return Status::OK();
  }
  // Several instances: traffic is on the target once one of them routes
  // there. The others are down, unreachable or could not be moved yet; each
  // was reported and is tried again at the next step, and until then its
  // clients can only fail against the fenced source.
  std::string seen;
  for (const auto& i : progress_.route_instances.value_or(std::vector<RouteInstanceStatus>{})) {
    if (i.upstream == target.ToString()) return Status::OK();
    seen += (seen.empty() ? "" : "; ") + i.name + ": " +
            (i.reachable ? "routes to " + i.upstream.value_or("?") : i.error.value_or("?"));
  }
  return FailedPrecondition("no instance of the route points at the target " + target.ToString() +
                            " (" + seen + ")");
}

bool MigrationRunner::ReconcileRoute(const Endpoint& desired, bool* changed) {
  auto report = env_->router().Reconcile(desired);
  if (!report.ok()) {
    Log("warning", "could not reconcile the route's instances: " + report.status().message());
    return false;
  }
  if (report->instances.empty()) return false;  // a router of one instance
  std::vector<RouteInstanceStatus> seen;
  for (const auto& v : report->instances) {
    RouteInstanceStatus s{.name = v.name, .reachable = v.reachable};
    if (v.reachable) {
      s.upstream = v.view.upstream.ToString();
      s.held = v.view.held;
    }
    if (!v.error.empty()) s.error = v.error;
    seen.push_back(std::move(s));
  }
  if (changed != nullptr)
    *changed = !report->repointed.empty() || progress_.route_instances != seen;
  progress_.route_instances = std::move(seen);
  progress_.route_seen_ms = clock_.NowMs();
  for (const auto& r : report->repointed) {
    result_.route_repoints = result_.route_repoints.value_or(0) + 1;
    Note("warning", "router instance " + r.name + " routed to " + r.from.ToString() + ", not " +
                        desired.ToString() +
                        " (down at the switch, or restarted with an old route): repointed it");
  }
  return true;
}

bool MigrationRunner::ParitySettled() {
  if (!spec_.options.parity || result_.parity_done.value_or(false)) {
    return !result_.parity_blocked.value_or(false) || BlockingSummary(m_.findings).empty();
  }
  if (!result_.parity_started.value_or(false)) return true;
  ParityState ps = env_->Parity();
  if (!ps.started) {
    MergeFindings({{.id = "data_parity",
                    .severity = checks::Severity::kWarning,
                    .message = "the data parity check was interrupted (pgshiftd restarted) and "
                               "the promotion snapshot is gone",
                    .remedy = "compare the source and target by hand before finalizing"}});
    result_.parity_done = true;
    return Save().ok();
  }
  if (!ps.done) {
    progress_.parity = ParityProgress{
        .tables_total = ps.tables_total, .tables_done = ps.tables_done, .current = ps.current};
    (void)Save();  // only progress; a failure is kept in commit_ and ends the step
    return false;
  }
  MergeFindings(ps.findings);
  result_.parity_done = true;
  progress_.parity = ParityProgress{.tables_total = ps.tables_total, .tables_done = ps.tables_done};
  std::string blocking = BlockingSummary(m_.findings);
  if (!blocking.empty()) {
    result_.parity_blocked = true;
    (void)Block("finalize refused: " + blocking +
                " (roll back with discard_target_writes, or override with a reason)");
    return false;
  }
  Note("info",
       "data parity: source and target match (" + std::to_string(ps.tables_done) + " tables)");
  return Save().ok();
}

}  // namespace pgshift
