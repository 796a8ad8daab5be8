// Data parity after promotion (DESIGN.md §2 `snapshot`): one REPEATABLE READ
// session per database on the target exports a snapshot at the promotion
// point; after the verify window a background thread compares each database
// with the fenced source through those snapshots while traffic runs on the
// target.
#include <algorithm>

#include "checks/parity.h"
#include "checks/server_scan.h"
#include "common/clock.h"
#include "provider/local/local_env.h"

namespace pgshift {

LocalEnv::~LocalEnv() {
  if (parity_) {
    parity_->cancel = true;
    if (parity_->thread.joinable()) parity_->thread.join();
  }
}

namespace {

// Opens a session's REPEATABLE READ transaction and exports its snapshot in one
// round trip.
constexpr const char* kExportSnapshot =
    "begin isolation level repeatable read read only; select pg_export_snapshot() as s";

}  // namespace

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
    auto ci = WithConninfo(TargetConninfo(), {{"dbname", db}});
    if (!ci.ok()) return;
    auto session = PgConn::Connect(*ci);
    if (!session.ok()) continue;
    // A first export here warms the session's caches, so the one inside the
    // hold costs a round trip and nothing more (a standby exports too).
    if ((*session)->Send(std::string(kExportSnapshot) + "; rollback").ok()) {
      (void)(*session)->Collect();
    }
    standby_sessions_.emplace_back(db, std::move(session).value());
  }
}

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
      PGSHIFT_ASSIGN_OR_RETURN(std::string ci, WithConninfo(TargetConninfo(), {{"dbname", db}}));
      PGSHIFT_ASSIGN_OR_RETURN(session, PgConn::Connect(ci));
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
  job->state.started = true;
  ParityJob* j = job.get();
  const std::string source_ci = spec_.source_conninfo;
  const std::string target_ci = TargetConninfo();
  // The snapshots are taken now; the scans wait until the post-cutover
  // health window has passed, so they do not compete with the switch.
  const int64_t delay_ms = spec_.options.verify_ms;
  const checks::ParityOptions scan{.load_pct = spec_.options.parity_load_pct};
  job->thread = std::thread([j, work, source_ci, target_ci, delay_ms, scan] {
    for (int64_t waited = 0; waited < delay_ms && !j->cancel; waited += 50) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    std::vector<checks::Finding> all;
    int done_before = 0;
    for (const auto& [db, snapshot] : work) {
      auto s = WithConninfo(source_ci, {{"dbname", db}});
      auto t = WithConninfo(target_ci, {{"dbname", db}});
      auto found = checks::RunDataParity(
          s.ok() ? *s : source_ci, t.ok() ? *t : target_ci, snapshot,
          [j, db = db, done_before](const checks::ParityProgress& p) {
            std::lock_guard<std::mutex> lock(j->mu);
            j->state.tables_total = std::max(j->state.tables_total, done_before + p.tables_total);
            j->state.tables_done = done_before + p.tables_done;
            j->state.current = p.current.empty() ? "" : db + ":" + p.current;
          },
          &j->cancel, scan);
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
    PGSHIFT_ASSIGN_OR_RETURN(std::string s, WithConninfo(spec_.source_conninfo, {{"dbname", db}}));
    PGSHIFT_ASSIGN_OR_RETURN(std::string t, WithConninfo(TargetConninfo(), {{"dbname", db}}));
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
