// SqliteStateStore's leases (store/lease.h) of migrations and fleet runs,
// and the fence its migration writes check (schema in state_store.cc).
#include <sqlite3.h>

#include "common/clock.h"
#include "store/sqlite_stmt.h"
#include "store/state_store.h"

namespace pgshift {

using store_internal::Stmt;

Result<Lease> SqliteStateStore::LeaseLocked(const LeaseTable& t, const std::string& id) {
  Stmt s(db_, std::string("SELECT lease_owner, lease_token, lease_expires FROM ") + t.table +
                  " WHERE id=?1");
  PGSHIFT_RETURN_IF_ERROR(s.status());
  s.Bind(1, id);
  if (s.Step() != SQLITE_ROW)
    return NotFound(std::string("no ") + t.noun + " with id '" + id + "'");
  return Lease{s.Text(0), s.Int(1), s.Int(2)};
}

Status SqliteStateStore::CheckFenceLocked(const std::string& id, int64_t token) {
  if (token == kNoFence) return Status::OK();
  PGSHIFT_ASSIGN_OR_RETURN(Lease stored, LeaseLocked(kMigrationLeases, id));
  if (stored.token != token) return LeaseLost(id, stored, token);
  return Status::OK();
}

Status SqliteStateStore::WriteLeaseLocked(const LeaseTable& t, const std::string& id,
                                          const Lease& l) {
  Stmt s(db_, std::string("UPDATE ") + t.table +
                  " SET lease_owner=?2, lease_token=?3, lease_expires=?4 WHERE id=?1");
  PGSHIFT_RETURN_IF_ERROR(s.status());
  s.Bind(1, id);
  s.Bind(2, l.owner);
  s.Bind(3, l.token);
  s.Bind(4, l.expires_at_ms);
  return s.Run();
}

Result<Lease> SqliteStateStore::AcquireIn(const LeaseTable& t, const std::string& id,
                                          const std::string& owner, int64_t ttl_ms) {
  std::lock_guard<std::mutex> lock(mu_);
  Lease next;
  PGSHIFT_RETURN_IF_ERROR(TransactionLocked([&]() -> Status {
    PGSHIFT_ASSIGN_OR_RETURN(Lease stored, LeaseLocked(t, id));
    // The file lock proves the process that took a lease not through this
    // store gone: its lease is free.
    if (!live_owners_.count(stored.owner)) stored.expires_at_ms = 0;
    PGSHIFT_ASSIGN_OR_RETURN(next, NextLease(stored, owner, DefaultClock().NowMs(), ttl_ms));
    return WriteLeaseLocked(t, id, next);
  }));
  live_owners_.insert(owner);
  return next;
}

Result<Lease> SqliteStateStore::RenewIn(const LeaseTable& t, const std::string& id,
                                        const Lease& held, int64_t ttl_ms) {
  std::lock_guard<std::mutex> lock(mu_);
  Lease next;
  PGSHIFT_RETURN_IF_ERROR(TransactionLocked([&]() -> Status {
    PGSHIFT_ASSIGN_OR_RETURN(Lease stored, LeaseLocked(t, id));
    auto renewed = RenewedLease(stored, held, DefaultClock().NowMs(), ttl_ms);
    if (!renewed.ok()) return LeaseLost(id, stored, held.token, t.noun);
    next = *renewed;
    return WriteLeaseLocked(t, id, next);
  }));
  return next;
}

Status SqliteStateStore::ReleaseIn(const LeaseTable& t, const std::string& id, const Lease& held) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_,
         std::string("UPDATE ") + t.table + " SET lease_expires=0 WHERE id=?1 AND lease_token=?2");
  PGSHIFT_RETURN_IF_ERROR(s.status());
  s.Bind(1, id);
  s.Bind(2, held.token);
  return s.Run();
}

Result<Lease> SqliteStateStore::AcquireLease(const std::string& id, const std::string& owner,
                                             int64_t ttl_ms) {
  return AcquireIn(kMigrationLeases, id, owner, ttl_ms);
}

Result<Lease> SqliteStateStore::RenewLease(const std::string& id, const Lease& held,
                                           int64_t ttl_ms) {
  return RenewIn(kMigrationLeases, id, held, ttl_ms);
}

Status SqliteStateStore::ReleaseLease(const std::string& id, const Lease& held) {
  return ReleaseIn(kMigrationLeases, id, held);
}

}  // namespace pgshift
