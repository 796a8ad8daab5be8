// The held part of the cutover and its preparation (DESIGN.md §2 quiesce to
// promote): sessions opened on the standby ahead of the hold, the pg_hba
// fence, the final WAL marker, promotion, and the write probe after it.
#include <algorithm>

#include "checks/server_scan.h"
#include "common/clock.h"
#include "provider/local/local_env.h"

namespace pgshift {

void LocalEnv::PrepareCutover() {
  auto target = Target();
  if (!target.ok()) return;
  auto dbs = checks::ListDatabases(**target);
  if (!dbs.ok()) return;
  std::vector<std::pair<std::string, std::unique_ptr<PgConn>>> kept;
  kept.swap(standby_sessions_);
  for (const auto& db : *dbs) {
    // Kept if the server still answers (it may have closed an idle session).
    auto open = std::find_if(kept.begin(), kept.end(), [&](const auto& s) {
      return s.first == db && s.second && s.second->Exec("select 1").ok();
    });
    if (open != kept.end()) {
      standby_sessions_.push_back(std::move(*open));
      continue;
    }
    auto ci = TargetConninfo(db);
    if (!ci.ok()) return;
    auto session = OpenSession(*ci);
    if (!session.ok()) continue;
    // A first export here warms the session's caches, so the one inside the
    // hold costs a round trip and nothing more (a standby exports too).
    if ((*session)->Send(std::string(kExportSnapshot) + "; rollback").ok()) {
      (void)(*session)->Collect();
    }
    standby_sessions_.emplace_back(db, std::move(session).value());
  }
}

Result<FenceResult> LocalEnv::FenceSource(const HeldBackends& held) {
  PGSHIFT_ASSIGN_OR_RETURN(PgConn * c, Source());
  FenceExemption exempt;
  if (held.server == source_ep_) exempt = {.database = held.database, .pids = held.pids};
  PGSHIFT_ASSIGN_OR_RETURN(FenceOutcome out, fence_.Fence(*c, exempt));
  return FenceResult{.terminated = out.terminated, .exempted = out.exempted};
}

Status LocalEnv::UnfenceSource() {
  if (!SourceUp()) {
    return Unavailable("the source " + source_ep_.ToString() + " is not accepting connections; " +
                       "it must be up to be unfenced");
  }
  PGSHIFT_ASSIGN_OR_RETURN(PgConn * c, Source());
  return fence_.Unfence(*c);
}

Result<Lsn> LocalEnv::WriteFinalMarker(const std::string& text) {
  PGSHIFT_ASSIGN_OR_RETURN(PgConn * c, Source());
  // A transactional message commits, and a synchronous commit flushes the WAL
  // at once instead of at the WAL writer's next cycle (up to 200 ms of held
  // traffic). Its end LSN follows every transaction committed before the fence.
  // One round trip: the setting is in force before the statement commits.
  PGSHIFT_ASSIGN_OR_RETURN(
      Rows r, c->Query("select pg_logical_emit_message(true, 'pgshift', $1)::text as lsn "
                       "from (select set_config('synchronous_commit', 'on', false)) s",
                       {text}));
  PGSHIFT_ASSIGN_OR_RETURN(Lsn lsn, Lsn::Parse(r.Str(0, "lsn")));
  const int64_t deadline = MonotonicMs() + options_.final_flush_timeout_ms;
  while (true) {
    PGSHIFT_ASSIGN_OR_RETURN(
        Rows f,
        c->Query("select pg_current_wal_flush_lsn() >= $1::pg_lsn as flushed", {lsn.ToString()}));
    if (f.Bool(0, "flushed")) return lsn;
    if (MonotonicMs() > deadline) {
      return Timeout("the source did not flush its final WAL record within " +
                     std::to_string(options_.final_flush_timeout_ms) + " ms");
    }
    DefaultClock().SleepMs(options_.final_flush_poll_ms);
  }
}

Result<int> LocalEnv::PromoteTarget() {
  PGSHIFT_ASSIGN_OR_RETURN(TargetState t, InspectTarget());
  if (!t.running) return FailedPrecondition("the target is not running; it cannot be promoted");
  if (t.in_recovery) {
    // A tablespace the source created since the last sync sample would leave
    // the promoted target sharing the source's files: refuse, the cutover
    // is rolled back to the source.
    PGSHIFT_RETURN_IF_ERROR(GuardTablespaces());
    // pg_promote(wait => true) checks only every 100 ms; traffic is held, so
    // ask without waiting and watch for the end of recovery ourselves.
    PGSHIFT_ASSIGN_OR_RETURN(PgConn * c, Target());
    PGSHIFT_RETURN_IF_ERROR(c->Exec("select pg_promote(false)"));
    const int64_t deadline = MonotonicMs() + options_.promote_timeout_ms;
    // Polled every few ms while the target promotes: no pg_control read (as
    // InspectTarget does in recovery), and the new timeline in the same answer.
    const std::string poll =
        std::string("select pg_is_in_recovery() as rec, case when not pg_is_in_recovery() then ") +
        kPrimaryTimeline + " end as tli";
    while (true) {
      PGSHIFT_ASSIGN_OR_RETURN(Rows r, c->Query(poll));
      if (!r.Bool(0, "rec")) {
        t.in_recovery = false;
        t.timeline = static_cast<int>(r.Int(0, "tli"));
        break;
      }
      if (MonotonicMs() > deadline) {
        return Timeout("the target did not finish promotion within " +
                       std::to_string(options_.promote_timeout_ms) + " ms");
      }
      DefaultClock().SleepMs(options_.promote_poll_ms);
    }
  }
  return t.timeline;
}

Status LocalEnv::ProbeTargetWrite() {
  PGSHIFT_ASSIGN_OR_RETURN(PgConn * c, Target());
  Status st = c->Exec("select txid_current()");
  if (!st.ok() && !c->Healthy()) target_conn_.reset();
  return st.Wrap("write probe on the target");
}

}  // namespace pgshift
