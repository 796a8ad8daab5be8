#include "store/state_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/clock.h"
#include "model/phase.h"
#include "store/sqlite_stmt.h"

namespace pgshift {

std::string LiveMigrationsWhere() {
  std::string terminal;
  for (const auto& p : kPhaseTable) {
    if (p.terminal) terminal += (terminal.empty() ? "'" : ", '") + std::string(p.name) + "'";
  }
  return "WHERE phase NOT IN (" + terminal + ")";
}

Status AlreadyMigrating(const std::string& database, const std::string& id,
                        const std::string& phase, const std::string& state) {
  return AlreadyExists("database " + database + " is already being migrated by " + id + " (phase " +
                       phase + ", state " + state +
                       "); finalize or roll it back before starting another");
}

Result<std::vector<MigrationRecord>> StateStore::ListLive() {
  PGSHIFT_ASSIGN_OR_RETURN(auto all, List());
  std::vector<MigrationRecord> live;
  for (auto& m : all) {
    bool terminal = false;
    for (const auto& p : kPhaseTable) terminal = terminal || (p.terminal && m.phase == p.name);
    if (!terminal) live.push_back(std::move(m));
  }
  return live;
}

namespace {

using store_internal::Stmt;

nlohmann::json ParseOr(const std::string& text, nlohmann::json fallback) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  return j.is_discarded() ? fallback : j;
}

const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS migrations (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  spec TEXT NOT NULL,
  phase TEXT NOT NULL,
  state TEXT NOT NULL,
  progress TEXT NOT NULL,
  result TEXT NOT NULL,
  findings TEXT NOT NULL,
  error TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  pending_action TEXT NOT NULL DEFAULT '',
  action_body TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  migration_id TEXT NOT NULL,
  at INTEGER NOT NULL,
  phase TEXT NOT NULL,
  kind TEXT NOT NULL,
  message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_migration ON events(migration_id, seq);
CREATE TABLE IF NOT EXISTS actions (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  migration_id TEXT NOT NULL,
  action TEXT NOT NULL,
  body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS actions_by_migration ON actions(migration_id, seq);
CREATE TABLE IF NOT EXISTS audit (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  at INTEGER NOT NULL,
  identity TEXT NOT NULL,
  action TEXT NOT NULL,
  database TEXT NOT NULL,
  migration TEXT NOT NULL,
  detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS migration_databases (
  migration_id TEXT PRIMARY KEY,
  database TEXT NOT NULL
);
)sql";

// Each entry brings the schema from its index (1-based version) to the next;
// schema_version records the newest applied. Version 1 is kSchema.
const char* kMigrations[] = {
    // 2: leases (fencing tokens) and who wrote each event.
    R"sql(
ALTER TABLE migrations ADD COLUMN lease_owner TEXT NOT NULL DEFAULT '';
ALTER TABLE migrations ADD COLUMN lease_token INTEGER NOT NULL DEFAULT 0;
ALTER TABLE migrations ADD COLUMN lease_expires INTEGER NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN owner TEXT NOT NULL DEFAULT '';
)sql",
    // 3: fleet runs (fleet_run_store.h), leased as migrations are.
    R"sql(
CREATE TABLE fleet_runs (
  id TEXT PRIMARY KEY,
  created_at INTEGER NOT NULL,
  doc TEXT NOT NULL,
  request TEXT NOT NULL DEFAULT '',
  request_seq INTEGER NOT NULL DEFAULT 0,
  lease_owner TEXT NOT NULL DEFAULT '',
  lease_token INTEGER NOT NULL DEFAULT 0,
  lease_expires INTEGER NOT NULL DEFAULT 0
);
)sql",
    // 4: idempotency keys of creates (MigrationLink), links by database.
    R"sql(
ALTER TABLE migration_databases ADD COLUMN start_key TEXT NOT NULL DEFAULT '';
CREATE UNIQUE INDEX migration_databases_by_key ON migration_databases(start_key)
  WHERE start_key != '';
CREATE INDEX migration_databases_by_database ON migration_databases(database);
)sql",
};

// A state file written before the queue kept one pending request in the
// migrations row (whose columns stay, unused): it moves into the queue.
const char* kQueueLegacyActions = R"sql(
INSERT INTO actions (migration_id, action, body)
  SELECT id, pending_action, action_body FROM migrations WHERE pending_action != '';
UPDATE migrations SET pending_action = '', action_body = '{}' WHERE pending_action != '';
)sql";

// The store holds specs whose conninfo may carry a source's password: only
// pgshiftd's user may read it (SQLite gives its -wal and -shm files the
// main file's mode).
Status MakePrivate(const std::string& path) {
  int fd = ::open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) return Status::OK();  // sqlite3_open reports the real problem
  const bool ok = ::fchmod(fd, 0600) == 0;
  ::close(fd);
  if (!ok) return Unavailable("cannot make the state store " + path + " private (chmod 600)");
  return Status::OK();
}

// The file's lock for the store's life: one pgshiftd per state file. An
// flock is not a POSIX record lock, so SQLite's own locking is unaffected.
Result<int> LockFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    return Unavailable("cannot open state store '" + path + "': " + std::strerror(errno));
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(fd);
    if (err == EWOULDBLOCK) {
      return FailedPrecondition(
          "state store '" + path +
          "' is in use by another pgshiftd (the file is locked to one process). Stop that one, "
          "give this one its own file, or share a PostgreSQL store between several pgshiftd "
          "(--store postgresql://...)");
    }
    return Unavailable("cannot lock state store '" + path + "': " + std::strerror(err));
  }
  return fd;
}

}  // namespace

Result<std::unique_ptr<SqliteStateStore>> SqliteStateStore::Open(const std::string& path) {
  int lock_fd = -1;
  if (path != ":memory:") {
    PGSHIFT_RETURN_IF_ERROR(MakePrivate(path));
    PGSHIFT_ASSIGN_OR_RETURN(lock_fd, LockFile(path));
  }
  sqlite3* db = nullptr;
  int rc =
      sqlite3_open_v2(path.c_str(), &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    if (lock_fd >= 0) ::close(lock_fd);
    return Unavailable("cannot open state store '" + path + "': " + msg +
                       " (check the directory exists and is writable)");
  }
  sqlite3_busy_timeout(db, 5000);
  std::unique_ptr<SqliteStateStore> store(new SqliteStateStore(db, lock_fd));
  std::lock_guard<std::mutex> lock(store->mu_);
  PGSHIFT_RETURN_IF_ERROR(store->ExecLocked("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"));
  PGSHIFT_RETURN_IF_ERROR(store->TransactionLocked([&] { return store->MigrateLocked(); }));
  PGSHIFT_RETURN_IF_ERROR(
      store->TransactionLocked([&] { return store->ExecLocked(kQueueLegacyActions); }));
  return store;
}

SqliteStateStore::~SqliteStateStore() {
  sqlite3_close(db_);
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

Status SqliteStateStore::MigrateLocked() {
  PGSHIFT_RETURN_IF_ERROR(ExecLocked(kSchema));
  PGSHIFT_RETURN_IF_ERROR(
      ExecLocked("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"));
  int64_t have = 0;
  {
    Stmt s(db_, "SELECT coalesce(max(version), 1) FROM schema_version");
    PGSHIFT_RETURN_IF_ERROR(s.status());
    if (s.Step() != SQLITE_ROW) return Internal("state store: cannot read the schema version");
    have = s.Int(0);
  }
  constexpr int64_t kNewest = static_cast<int64_t>(std::size(kMigrations)) + 1;
  if (have > kNewest) {
    return FailedPrecondition("the state store has schema version " + std::to_string(have) +
                              ", newer than this pgshiftd knows (" + std::to_string(kNewest) +
                              "): run the newer pgshiftd");
  }
  // Nothing is written when the schema is current: a pgshiftd restarted on a
  // full disk still opens its state.
  if (have == kNewest) return Status::OK();
  for (int64_t v = have; v < kNewest; ++v) PGSHIFT_RETURN_IF_ERROR(ExecLocked(kMigrations[v - 1]));
  return ExecLocked("DELETE FROM schema_version; INSERT INTO schema_version VALUES (" +
                    std::to_string(kNewest) + ")");
}

Status SqliteStateStore::ExecLocked(const std::string& sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    return Internal("state store: " + msg);
  }
  return Status::OK();
}

Status SqliteStateStore::TransactionLocked(const std::function<Status()>& body) {
  PGSHIFT_RETURN_IF_ERROR(ExecLocked("BEGIN IMMEDIATE"));
  Status st = body();
  if (st.ok()) st = ExecLocked("COMMIT");
  if (!st.ok() && !sqlite3_get_autocommit(db_)) (void)ExecLocked("ROLLBACK");
  return st;
}

namespace {

// Insert and Update share one parameter numbering.
void BindRecord(Stmt& s, const MigrationRecord& m) {
  s.Bind(1, m.id);
  s.Bind(2, m.name);
  s.Bind(3, m.spec.dump());
  s.Bind(4, m.phase);
  s.Bind(5, m.state);
  s.Bind(6, m.progress.dump());
  s.Bind(7, m.result.dump());
  s.Bind(8, m.findings.dump());
  s.Bind(9, m.error);
  s.Bind(10, m.created_at_ms);
  s.Bind(11, m.updated_at_ms);
}

}  // namespace

Status SqliteStateStore::Insert(const MigrationRecord& m) { return InsertLinked(m, {}); }

Status SqliteStateStore::InsertLinked(const MigrationRecord& m, const MigrationLink& link) {
  std::lock_guard<std::mutex> lock(mu_);
  return TransactionLocked([&]() -> Status {
    Stmt s(db_,
           "INSERT INTO migrations (id, name, spec, phase, state, progress, result, findings, "
           "error, created_at, updated_at) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)");
    PGSHIFT_RETURN_IF_ERROR(s.status());
    BindRecord(s, m);
    if (s.Step() != SQLITE_DONE) {
      return AlreadyExists("a migration with id '" + m.id + "' already exists");
    }
    return LinkLocked(m.id, link);
  });
}

Status SqliteStateStore::Update(const MigrationRecord& m) {
  std::lock_guard<std::mutex> lock(mu_);
  return UpdateLocked(m);
}

Status SqliteStateStore::UpdateLocked(const MigrationRecord& m) {
  // created_at (?10) never changes; the lease token (?12) fences the write.
  Stmt s(db_,
         "UPDATE migrations SET name=?2, spec=?3, phase=?4, state=?5, progress=?6, result=?7, "
         "findings=?8, error=?9, updated_at=?11 WHERE id=?1 AND created_at=?10 AND "
         "lease_token=?12");
  PGSHIFT_RETURN_IF_ERROR(s.status());
  BindRecord(s, m);
  s.Bind(12, m.lease.token);
  PGSHIFT_RETURN_IF_ERROR(s.Run());
  if (sqlite3_changes(db_) == 0) {
    PGSHIFT_RETURN_IF_ERROR(CheckFenceLocked(m.id, m.lease.token));
    return NotFound("no migration with id '" + m.id + "'");
  }
  return Status::OK();
}

Result<std::vector<MigrationRecord>> SqliteStateStore::Select(
    const std::string& where, const std::vector<std::string>& args) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_,
         "SELECT id, name, spec, phase, state, progress, result, findings, error, created_at, "
         "updated_at, lease_owner, lease_token, lease_expires FROM migrations " +
             where + " ORDER BY created_at, id");
  PGSHIFT_RETURN_IF_ERROR(s.status());
  for (size_t i = 0; i < args.size(); ++i) s.Bind(static_cast<int>(i + 1), args[i]);
  std::vector<MigrationRecord> out;
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) {
    MigrationRecord m;
    m.id = s.Text(0);
    m.name = s.Text(1);
    m.spec = ParseOr(s.Text(2), nlohmann::json::object());
    m.phase = s.Text(3);
    m.state = s.Text(4);
    m.progress = ParseOr(s.Text(5), nlohmann::json::object());
    m.result = ParseOr(s.Text(6), nlohmann::json::object());
    m.findings = ParseOr(s.Text(7), nlohmann::json::array());
    m.error = s.Text(8);
    m.created_at_ms = s.Int(9);
    m.updated_at_ms = s.Int(10);
    m.lease = {s.Text(11), s.Int(12), s.Int(13)};
    out.push_back(std::move(m));
  }
  if (rc != SQLITE_DONE) return Internal(std::string("state store: ") + sqlite3_errmsg(db_));
  for (auto& m : out) PGSHIFT_RETURN_IF_ERROR(ActionsLocked(m));
  return out;
}

Status SqliteStateStore::ActionsLocked(MigrationRecord& m) {
  Stmt s(db_, "SELECT seq, action, body FROM actions WHERE migration_id=?1 ORDER BY seq");
  PGSHIFT_RETURN_IF_ERROR(s.status());
  s.Bind(1, m.id);
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) {
    m.actions.push_back({s.Int(0), s.Text(1), ParseOr(s.Text(2), nlohmann::json::object())});
  }
  if (rc != SQLITE_DONE) return Internal(std::string("state store: ") + sqlite3_errmsg(db_));
  return Status::OK();
}

Result<MigrationRecord> SqliteStateStore::Get(const std::string& id) {
  PGSHIFT_ASSIGN_OR_RETURN(auto rows, Select("WHERE id = ?1", {id}));
  if (rows.empty()) {
    return NotFound("no migration with id '" + id + "' (list them with `pgshift migration list`)");
  }
  return std::move(rows.front());
}

Result<std::vector<MigrationRecord>> SqliteStateStore::List() { return Select("", {}); }

Result<std::vector<MigrationRecord>> SqliteStateStore::ListLive() {
  return Select(LiveMigrationsWhere(), {});
}

Status SqliteStateStore::RequestAction(const std::string& id, const std::string& action,
                                       const nlohmann::json& body) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt known(db_, "SELECT 1 FROM migrations WHERE id=?1");
  PGSHIFT_RETURN_IF_ERROR(known.status());
  known.Bind(1, id);
  if (known.Step() != SQLITE_ROW) return NotFound("no migration with id '" + id + "'");
  // A repeated request (a client retrying its POST) is queued once.
  Stmt s(db_,
         "INSERT INTO actions (migration_id, action, body) SELECT ?1, ?2, ?3 WHERE NOT EXISTS "
         "(SELECT 1 FROM actions WHERE migration_id=?1 AND action=?2 AND body=?3)");
  PGSHIFT_RETURN_IF_ERROR(s.status());
  s.Bind(1, id);
  s.Bind(2, action);
  s.Bind(3, body.dump());
  return s.Run();
}

Status SqliteStateStore::AppendEvent(const std::string& id, const MigrationEvent& e,
                                     int64_t fence) {
  std::lock_guard<std::mutex> lock(mu_);
  // One writer at a time (mu_, and the file lock): the check and the insert
  // cannot be separated by a takeover.
  PGSHIFT_RETURN_IF_ERROR(CheckFenceLocked(id, fence));
  return AppendEventLocked(id, e);
}

Status SqliteStateStore::UpdateWithEvents(const MigrationRecord& m,
                                          const std::vector<MigrationEvent>& events,
                                          const std::vector<int64_t>& applied_actions) {
  std::lock_guard<std::mutex> lock(mu_);
  return TransactionLocked([&] {
    PGSHIFT_RETURN_IF_ERROR(UpdateLocked(m));
    for (const auto& e : events) PGSHIFT_RETURN_IF_ERROR(AppendEventLocked(m.id, e));
    for (int64_t seq : applied_actions) {
      // Only the request that was applied: one queued since stays.
      Stmt s(db_, "DELETE FROM actions WHERE seq=?1 AND migration_id=?2");
      PGSHIFT_RETURN_IF_ERROR(s.status());
      s.Bind(1, seq);
      s.Bind(2, m.id);
      PGSHIFT_RETURN_IF_ERROR(s.Run());
    }
    return Status::OK();
  });
}

Status SqliteStateStore::AppendEventLocked(const std::string& id, const MigrationEvent& e) {
  Stmt s(db_,
         "INSERT INTO events (migration_id, at, phase, kind, message, owner) "
         "VALUES (?1,?2,?3,?4,?5,?6)");
  PGSHIFT_RETURN_IF_ERROR(s.status());
  s.Bind(1, id);
  s.Bind(2, e.at_ms);
  s.Bind(3, e.phase);
  s.Bind(4, e.kind);
  s.Bind(5, e.message);
  s.Bind(6, e.owner);
  return s.Run();
}

Result<std::vector<MigrationEvent>> SqliteStateStore::Events(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_,
         "SELECT seq, at, phase, kind, message, owner FROM events WHERE migration_id=?1 "
         "ORDER BY seq");
  PGSHIFT_RETURN_IF_ERROR(s.status());
  s.Bind(1, id);
  std::vector<MigrationEvent> out;
  while (s.Step() == SQLITE_ROW) {
    out.push_back({s.Int(0), s.Int(1), s.Text(2), s.Text(3), s.Text(4), s.Text(5)});
  }
  return out;
}

}  // namespace pgshift
