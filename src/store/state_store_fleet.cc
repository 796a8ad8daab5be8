// SqliteStateStore's FleetRunStore half: the fleet_runs table (schema in
// state_store.cc), leased through the same code as migrations.
#include "store/sqlite_stmt.h"
#include "store/state_store.h"

namespace pgshift {

using store_internal::Stmt;

namespace {

constexpr const char* kFleetColumns =
    "SELECT id, created_at, doc, lease_owner, lease_token, lease_expires, request, request_seq "
    "FROM fleet_runs";

FleetRunRecord ReadFleetRun(Stmt& s) {
  FleetRunRecord r;
  r.id = s.Text(0);
  r.created_at_ms = s.Int(1);
  auto doc = nlohmann::json::parse(s.Text(2), nullptr, false);
  r.doc = doc.is_discarded() ? nlohmann::json::object() : doc;
  r.lease = {s.Text(3), s.Int(4), s.Int(5)};
  r.request = s.Text(6);
  r.request_seq = s.Int(7);
  return r;
}

Status NoFleetRun(const std::string& id) { return NotFound("fleet run '" + id + "' not found"); }

}  // namespace

Status SqliteStateStore::InsertFleetRun(const FleetRunRecord& r) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_, "INSERT INTO fleet_runs (id, created_at, doc) VALUES (?1, ?2, ?3)");
  PGSHIFT_RETURN_IF_ERROR(s.status());
  s.Bind(1, r.id);
  s.Bind(2, r.created_at_ms);
  s.Bind(3, r.doc.dump());
  if (s.Step() != SQLITE_DONE) return AlreadyExists("a fleet run with id '" + r.id + "' exists");
  return Status::OK();
}

Status SqliteStateStore::UpdateFleetRun(const FleetRunRecord& r, int64_t applied_request) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_,
         "UPDATE fleet_runs SET doc=?2, request=CASE WHEN request_seq=?4 THEN '' ELSE request END "
         "WHERE id=?1 AND lease_token=?3");
  PGSHIFT_RETURN_IF_ERROR(s.status());
  s.Bind(1, r.id);
  s.Bind(2, r.doc.dump());
  s.Bind(3, r.lease.token);
  s.Bind(4, applied_request);
  PGSHIFT_RETURN_IF_ERROR(s.Run());
  if (sqlite3_changes(db_) == 1) return Status::OK();
  PGSHIFT_ASSIGN_OR_RETURN(Lease stored, LeaseLocked(kFleetRunLeases, r.id));
  return LeaseLost(r.id, stored, r.lease.token, kFleetRunLeases.noun);
}

Result<FleetRunRecord> SqliteStateStore::GetFleetRun(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_, std::string(kFleetColumns) + " WHERE id=?1");
  PGSHIFT_RETURN_IF_ERROR(s.status());
  s.Bind(1, id);
  if (s.Step() != SQLITE_ROW) return NoFleetRun(id);
  return ReadFleetRun(s);
}

Result<std::vector<FleetRunRecord>> SqliteStateStore::ListFleetRuns() {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_, std::string(kFleetColumns) + " ORDER BY created_at, id");
  PGSHIFT_RETURN_IF_ERROR(s.status());
  std::vector<FleetRunRecord> out;
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) out.push_back(ReadFleetRun(s));
  if (rc != SQLITE_DONE) return Internal(std::string("state store: ") + sqlite3_errmsg(db_));
  return out;
}

Status SqliteStateStore::RequestFleetRun(const std::string& id, const std::string& request) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_, "UPDATE fleet_runs SET request=?2, request_seq=request_seq+1 WHERE id=?1");
  PGSHIFT_RETURN_IF_ERROR(s.status());
  s.Bind(1, id);
  s.Bind(2, request);
  PGSHIFT_RETURN_IF_ERROR(s.Run());
  return sqlite3_changes(db_) == 1 ? Status::OK() : NoFleetRun(id);
}

Result<Lease> SqliteStateStore::AcquireFleetLease(const std::string& id, const std::string& owner,
                                                  int64_t ttl_ms) {
  return AcquireIn(kFleetRunLeases, id, owner, ttl_ms);
}

Result<Lease> SqliteStateStore::RenewFleetLease(const std::string& id, const Lease& held,
                                                int64_t ttl_ms) {
  return RenewIn(kFleetRunLeases, id, held, ttl_ms);
}

Status SqliteStateStore::ReleaseFleetLease(const std::string& id, const Lease& held) {
  return ReleaseIn(kFleetRunLeases, id, held);
}

}  // namespace pgshift
