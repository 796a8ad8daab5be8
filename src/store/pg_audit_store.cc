// PgStateStore's AuditStore half: the audit log and the migration →
// database links with their idempotency keys (schema in pg_state_store.cc).
#include "store/pg_state_store.h"
#include "store/pg_store_util.h"

namespace pgshift {

using store_internal::Str;

namespace {

// Serializes the inserts linked to one database (or key) among every
// pgshiftd on the store, so that two cannot both find it free: a
// transaction-scoped advisory lock in a key space of its own.
constexpr const char* kLinkLockSpace = "pgshift.link:";

}  // namespace

Status PgStateStore::LinkOn(PgConn& c, const std::string& id, const MigrationLink& link) {
  if (link.database.empty() && link.key.empty()) return Status::OK();
  const std::string subject = link.database.empty() ? "key:" + link.key : link.database;
  PGSHIFT_RETURN_IF_ERROR(c.Exec("SELECT pg_advisory_xact_lock(hashtext($1))",
                                 {std::string(kLinkLockSpace) + subject}));
  if (!link.key.empty()) {
    PGSHIFT_ASSIGN_OR_RETURN(Rows used,
                             c.Query("SELECT migration_id FROM pgshift.migration_databases "
                                     "WHERE start_key=$1",
                                     {link.key}));
    if (!used.empty()) {
      return AlreadyExists("migration " + used.Str(0, "migration_id") + " was created with key " +
                           link.key);
    }
  }
  if (!link.database.empty()) {
    PGSHIFT_ASSIGN_OR_RETURN(
        Rows live,
        c.Query("SELECT id, phase, state FROM pgshift.migrations " + LiveMigrationsWhere() +
                    " AND id <> $2 AND id IN (SELECT migration_id FROM "
                    "pgshift.migration_databases WHERE database=$1)",
                {link.database, id}));
    if (!live.empty()) {
      return AlreadyMigrating(link.database, live.Str(0, "id"), live.Str(0, "phase"),
                              live.Str(0, "state"));
    }
  }
  return c.Exec(
      "INSERT INTO pgshift.migration_databases (migration_id, database, start_key) "
      "VALUES ($1,$2,$3)",
      {id, link.database, link.key});
}

Result<std::string> PgStateStore::MigrationWithKey(const std::string& key) {
  std::string out;
  if (key.empty()) return out;
  PGSHIFT_RETURN_IF_ERROR(WithConn(
      [&](PgConn& c) -> Status {
        PGSHIFT_ASSIGN_OR_RETURN(Rows r,
                                 c.Query("SELECT migration_id FROM pgshift.migration_databases "
                                         "WHERE start_key=$1",
                                         {key}));
        out = r.empty() ? "" : r.Str(0, "migration_id");
        return Status::OK();
      },
      /*read_only=*/true));
  return out;
}

Status PgStateStore::AppendAudit(const AuditEntry& e) {
  return WithConn([&](PgConn& c) {
    return c.Exec(
        "INSERT INTO pgshift.audit (at, identity, action, database, migration, detail) VALUES "
        "($1,$2,$3,$4,$5,$6)",
        {Str(e.at_ms), e.identity, e.action, e.database, e.migration, e.detail});
  });
}

Result<std::vector<AuditEntry>> PgStateStore::ListAudit(int64_t limit) {
  std::vector<AuditEntry> out;
  PGSHIFT_RETURN_IF_ERROR(WithConn(
      [&](PgConn& c) -> Status {
        PGSHIFT_ASSIGN_OR_RETURN(
            Rows r, c.Query("SELECT * FROM (SELECT seq, at, identity, action, database, "
                            "migration, detail FROM pgshift.audit ORDER BY seq DESC LIMIT $1) n "
                            "ORDER BY seq",
                            {Str(limit)}));
        out.clear();
        for (size_t i = 0; i < r.size(); ++i) {
          out.push_back({r.Int(i, "seq"), r.Int(i, "at"), r.Str(i, "identity"), r.Str(i, "action"),
                         r.Str(i, "database"), r.Str(i, "migration"), r.Str(i, "detail")});
        }
        return Status::OK();
      },
      /*read_only=*/true));
  return out;
}

Status PgStateStore::LinkDatabase(const std::string& migration_id, const std::string& database) {
  return WithConn([&](PgConn& c) {
    return c.Exec(
        "INSERT INTO pgshift.migration_databases (migration_id, database) VALUES ($1,$2) "
        "ON CONFLICT (migration_id) DO UPDATE SET database = EXCLUDED.database",
        {migration_id, database});
  });
}

Result<std::map<std::string, std::string>> PgStateStore::MigrationDatabases() {
  std::map<std::string, std::string> out;
  PGSHIFT_RETURN_IF_ERROR(WithConn(
      [&](PgConn& c) -> Status {
        PGSHIFT_ASSIGN_OR_RETURN(
            Rows r, c.Query("SELECT migration_id, database FROM pgshift.migration_databases"));
        out.clear();
        for (size_t i = 0; i < r.size(); ++i) out[r.Str(i, "migration_id")] = r.Str(i, "database");
        return Status::OK();
      },
      /*read_only=*/true));
  return out;
}

}  // namespace pgshift
