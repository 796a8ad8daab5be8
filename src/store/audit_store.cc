// SqliteStateStore's AuditStore half: the audit table and the
// migration → database links with their idempotency keys (schema in
// state_store.cc).
#include "store/sqlite_stmt.h"
#include "store/state_store.h"

namespace pgshift {

using store_internal::Stmt;

Status SqliteStateStore::AppendAudit(const AuditEntry& e) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_,
         "INSERT INTO audit (at, identity, action, database, migration, detail) "
         "VALUES (?1,?2,?3,?4,?5,?6)");
  PGSHIFT_RETURN_IF_ERROR(s.status());
  s.Bind(1, e.at_ms);
  s.Bind(2, e.identity);
  s.Bind(3, e.action);
  s.Bind(4, e.database);
  s.Bind(5, e.migration);
  s.Bind(6, e.detail);
  return s.Run();
}

Result<std::vector<AuditEntry>> SqliteStateStore::ListAudit(int64_t limit) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_,
         "SELECT seq, at, identity, action, database, migration, detail FROM "
         "(SELECT * FROM audit ORDER BY seq DESC LIMIT ?1) ORDER BY seq");
  PGSHIFT_RETURN_IF_ERROR(s.status());
  s.Bind(1, limit);
  std::vector<AuditEntry> out;
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) {
    out.push_back({s.Int(0), s.Int(1), s.Text(2), s.Text(3), s.Text(4), s.Text(5), s.Text(6)});
  }
  if (rc != SQLITE_DONE) return Internal(std::string("state store: ") + sqlite3_errmsg(db_));
  return out;
}

Status SqliteStateStore::LinkDatabase(const std::string& migration_id,
                                      const std::string& database) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_, "INSERT OR REPLACE INTO migration_databases (migration_id, database) VALUES (?1,?2)");
  PGSHIFT_RETURN_IF_ERROR(s.status());
  s.Bind(1, migration_id);
  s.Bind(2, database);
  return s.Run();
}

Status SqliteStateStore::LinkLocked(const std::string& id, const MigrationLink& link) {
  if (link.database.empty() && link.key.empty()) return Status::OK();
  if (!link.key.empty()) {
    Stmt used(db_, "SELECT migration_id FROM migration_databases WHERE start_key=?1");
    PGSHIFT_RETURN_IF_ERROR(used.status());
    used.Bind(1, link.key);
    if (used.Step() == SQLITE_ROW) {
      return AlreadyExists("migration " + used.Text(0) + " was created with key " + link.key);
    }
  }
  if (!link.database.empty()) {
    // Inside the insert's BEGIN IMMEDIATE: no other writer between the
    // check and the link.
    Stmt live(db_, "SELECT id, phase, state FROM migrations " + LiveMigrationsWhere() +
                       " AND id != ?2 AND id IN (SELECT migration_id FROM migration_databases "
                       "WHERE database=?1)");
    PGSHIFT_RETURN_IF_ERROR(live.status());
    live.Bind(1, link.database);
    live.Bind(2, id);
    if (live.Step() == SQLITE_ROW) {
      return AlreadyMigrating(link.database, live.Text(0), live.Text(1), live.Text(2));
    }
  }
  Stmt s(db_,
         "INSERT INTO migration_databases (migration_id, database, start_key) VALUES (?1,?2,?3)");
  PGSHIFT_RETURN_IF_ERROR(s.status());
  s.Bind(1, id);
  s.Bind(2, link.database);
  s.Bind(3, link.key);
  return s.Run();
}

Result<std::string> SqliteStateStore::MigrationWithKey(const std::string& key) {
  if (key.empty()) return std::string();
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_, "SELECT migration_id FROM migration_databases WHERE start_key=?1");
  PGSHIFT_RETURN_IF_ERROR(s.status());
  s.Bind(1, key);
  const int rc = s.Step();
  if (rc == SQLITE_ROW) return s.Text(0);
  if (rc != SQLITE_DONE) return Internal(std::string("state store: ") + sqlite3_errmsg(db_));
  return std::string();
}

Result<std::map<std::string, std::string>> SqliteStateStore::MigrationDatabases() {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_, "SELECT migration_id, database FROM migration_databases");
  PGSHIFT_RETURN_IF_ERROR(s.status());
  std::map<std::string, std::string> out;
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) out[s.Text(0)] = s.Text(1);
  if (rc != SQLITE_DONE) return Internal(std::string("state store: ") + sqlite3_errmsg(db_));
  return out;
}

}  // namespace pgshift
