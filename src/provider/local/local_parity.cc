// Data parity after promotion (DESIGN.md §2 `snapshot`): one REPEATABLE READ
// session per database on the target exports a snapshot at the promotion
// point; after the verify window a background thread compares each database
// with the fenced source through those snapshots while traffic runs on the
// target (the source read at a snapshot of its own exported at the same
// point, as reverse replication writes to it afterwards).
#include <algorithm>
#include <map>

#include "checks/parity.h"
#include "checks/server_scan.h"
#include "common/clock.h"
#include "provider/local/local_env.h"

namespace pgshift {

Status LocalEnv::StartParityCheck() {
  if (parity_) return Status::OK();
  // Sessions opened before the hold survive promotion; open any missing one now.
  std::vector<std::pair<std::string, std::unique_ptr<PgConn>>> sessions;
  sessions.swap(standby_sessions_);
  if (sessions.empty()) {
    PGSHIFT_ASSIGN_OR_RETURN(PgConn * target, Target());
    PGSHIFT_ASSIGN_OR_RETURN(std::vector<std::string> dbs, checks::ListDatabases(*target));
    for (const auto& db : dbs) sessions.emplace_back(db, nullptr);
  }
  for (auto& [db, session] : sessions) {
    if (!session || !session->Healthy()) {
      PGSHIFT_ASSIGN_OR_RETURN(std::string ci, TargetConninfo(db));
      PGSHIFT_ASSIGN_OR_RETURN(session, OpenSession(ci));
    }
  }
  // Traffic is held: every database exports at once, then the answers are read.
  for (auto& [db, session] : sessions) PGSHIFT_RETURN_IF_ERROR(session->Send(kExportSnapshot));
  auto job = std::make_unique<ParityJob>();
  std::vector<std::pair<std::string, std::string>> work;  // database, snapshot id
  Status first_error;
  for (auto& [db, session] : sessions) {
    Result<Rows> r = session->Collect();
    if (!r.ok() || r->empty()) {
      if (first_error.ok())
        first_error = r.ok() ? Internal("no snapshot exported in " + db) : r.status();
      continue;
    }
    work.emplace_back(db, r->Str(0, "s"));
    job->snapshot_sessions.push_back(std::move(session));
  }
  PGSHIFT_RETURN_IF_ERROR(first_error);
  // The source is frozen now, but reverse replication (set up next, before
  // traffic is released) applies the target's writes to it: its side is
  // read at a snapshot exported now too.
  std::map<std::string, std::string> source_snapshots;  // database → snapshot id
  if (spec_.options.reverse_replication) {
    for (const auto& [db, snapshot] : work) {
      PGSHIFT_ASSIGN_OR_RETURN(std::string ci, SourceConninfo(db));
      PGSHIFT_ASSIGN_OR_RETURN(auto session, OpenSession(ci));
      PGSHIFT_RETURN_IF_ERROR(session->Send(kExportSnapshot));
      PGSHIFT_ASSIGN_OR_RETURN(Rows r, session->Collect());
      if (r.empty()) return Internal("no snapshot exported on the source in " + db);
      source_snapshots[db] = r.Str(0, "s");
      job->snapshot_sessions.push_back(std::move(session));
    }
  }
  job->state.started = true;
  ParityJob* j = job.get();
  PGSHIFT_ASSIGN_OR_RETURN(const std::string source_ci, SourceConninfo());
  PGSHIFT_ASSIGN_OR_RETURN(const std::string target_ci, TargetConninfo());
  // The snapshots are taken now; the scans wait until the post-cutover
  // health window has passed, so they do not compete with the switch.
  const int64_t delay_ms = spec_.options.verify_ms;
  const int64_t poll_ms = options_.parity_wait_poll_ms;
  const checks::ParityOptions scan{.load_pct = spec_.options.parity_load_pct};
  job->thread =
      std::thread([j, work, source_snapshots, source_ci, target_ci, delay_ms, poll_ms, scan] {
        for (int64_t waited = 0; waited < delay_ms && !j->cancel; waited += poll_ms) {
          DefaultClock().SleepMs(poll_ms);
        }
        std::vector<checks::Finding> all;
        int done_before = 0;
        for (const auto& [db, snapshot] : work) {
          auto s = WithConninfo(source_ci, {{"dbname", db}});
          auto t = WithConninfo(target_ci, {{"dbname", db}});
          checks::ParityOptions at = scan;
          if (auto it = source_snapshots.find(db); it != source_snapshots.end()) {
            at.source_snapshot = it->second;
          }
          auto found = checks::RunDataParity(
              s.ok() ? *s : source_ci, t.ok() ? *t : target_ci, snapshot,
              [j, db = db, done_before](const checks::ParityProgress& p) {
                std::lock_guard<std::mutex> lock(j->mu);
                j->state.tables_total =
                    std::max(j->state.tables_total, done_before + p.tables_total);
                j->state.tables_done = done_before + p.tables_done;
                j->state.current = p.current.empty() ? "" : db + ":" + p.current;
              },
              &j->cancel, at);
          if (!found.ok()) {
            all.push_back({.id = "data_parity",
                           .severity = checks::Severity::kBlocking,
                           .subject = db,
                           .message = "the parity check of database " + db +
                                      " could not finish: " + found.status().message(),
                           .remedy = "compare this database by hand, then override with a reason"});
          } else {
            for (auto& f : *found) {
              if (!f.subject.empty()) f.subject = db + ":" + f.subject;
              all.push_back(std::move(f));
            }
          }
          std::lock_guard<std::mutex> lock(j->mu);
          done_before = j->state.tables_done;
        }
        std::lock_guard<std::mutex> lock(j->mu);
        j->state.findings = std::move(all);
        j->state.done = true;
        j->state.current.clear();
        j->snapshot_sessions.clear();  // ends the snapshot transactions
      });
  parity_ = std::move(job);
  return Status::OK();
}

Result<std::vector<checks::Finding>> LocalEnv::QuickParity(int64_t budget_ms) {
  // The standby has replayed the final LSN of a fenced source: both are
  // frozen, so plain reads compare the same state.
  PGSHIFT_ASSIGN_OR_RETURN(PgConn * target, Target());
  PGSHIFT_ASSIGN_OR_RETURN(std::vector<std::string> dbs, checks::ListDatabases(*target));
  std::vector<checks::Finding> all;
  const int64_t deadline = MonotonicMs() + budget_ms;
  for (const auto& db : dbs) {
    PGSHIFT_ASSIGN_OR_RETURN(std::string s, SourceConninfo(db));
    PGSHIFT_ASSIGN_OR_RETURN(std::string t, TargetConninfo(db));
    const int64_t left = deadline - MonotonicMs();
    PGSHIFT_ASSIGN_OR_RETURN(
        auto found,
        checks::RunDataParity(s, t, "", nullptr, nullptr,
                              checks::ParityOptions{.time_budget_ms = std::max<int64_t>(left, 1)}));
    for (auto& f : found) {
      if (!f.subject.empty()) f.subject = db + ":" + f.subject;
      all.push_back(std::move(f));
    }
  }
  return all;
}

ParityState LocalEnv::Parity() {
  if (!parity_) return ParityState{};
  std::lock_guard<std::mutex> lock(parity_->mu);
  return parity_->state;
}

}  // namespace pgshift
