#include "store/pg_state_store.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>

#include "common/clock.h"
#include "store/pg_store_util.h"

namespace pgshift {
namespace {

using json = nlohmann::json;
using store_internal::LeaseOf;
using store_internal::ParseOr;
using store_internal::Str;

// Serializes schema migrations of pgshiftd starting at once (an arbitrary
// constant: "pgshift" in ASCII).
constexpr const char* kMigrationLock = "7070736869667400";

// Each entry brings the schema from its index (0-based version) to the
// next; pgshift.schema_version records the newest applied.
const char* kMigrations[] = {
    // 1: migrations with their leases, events with their writer, the
    // operator request queue, the audit log, migration → database links.
    R"sql(
CREATE TABLE pgshift.migrations (
  id text PRIMARY KEY,
  name text NOT NULL,
  spec text NOT NULL,
  phase text NOT NULL,
  state text NOT NULL,
  progress text NOT NULL,
  result text NOT NULL,
  findings text NOT NULL,
  error text NOT NULL,
  created_at bigint NOT NULL,
  updated_at bigint NOT NULL,
  lease_owner text NOT NULL DEFAULT '',
  lease_token bigint NOT NULL DEFAULT 0,
  lease_expires bigint NOT NULL DEFAULT 0
);
CREATE TABLE pgshift.events (
  seq bigserial PRIMARY KEY,
  migration_id text NOT NULL,
  at bigint NOT NULL,
  phase text NOT NULL,
  kind text NOT NULL,
  message text NOT NULL,
  owner text NOT NULL DEFAULT ''
);
CREATE INDEX events_by_migration ON pgshift.events (migration_id, seq);
CREATE TABLE pgshift.actions (
  seq bigserial PRIMARY KEY,
  migration_id text NOT NULL,
  action text NOT NULL,
  body text NOT NULL
);
CREATE INDEX actions_by_migration ON pgshift.actions (migration_id, seq);
CREATE TABLE pgshift.audit (
  seq bigserial PRIMARY KEY,
  at bigint NOT NULL,
  identity text NOT NULL,
  action text NOT NULL,
  database text NOT NULL,
  migration text NOT NULL,
  detail text NOT NULL
);
CREATE TABLE pgshift.migration_databases (
  migration_id text PRIMARY KEY,
  database text NOT NULL
);
)sql",
    // 2: fleet runs (fleet_run_store.h), leased as migrations are.
    R"sql(
CREATE TABLE pgshift.fleet_runs (
  id text PRIMARY KEY,
  created_at bigint NOT NULL,
  doc text NOT NULL,
  request text NOT NULL DEFAULT '',
  request_seq bigint NOT NULL DEFAULT 0,
  lease_owner text NOT NULL DEFAULT '',
  lease_token bigint NOT NULL DEFAULT 0,
  lease_expires bigint NOT NULL DEFAULT 0
);
)sql",
    // 3: idempotency keys of creates (MigrationLink), links by database.
    R"sql(
ALTER TABLE pgshift.migration_databases ADD COLUMN IF NOT EXISTS start_key text NOT NULL
  DEFAULT '';
CREATE UNIQUE INDEX IF NOT EXISTS migration_databases_by_key
  ON pgshift.migration_databases (start_key) WHERE start_key <> '';
CREATE INDEX IF NOT EXISTS migration_databases_by_database
  ON pgshift.migration_databases (database);
)sql",
};

constexpr int64_t kConnectBackoffBaseMs = 100;
constexpr int64_t kConnectBackoffMaxMs = 2000;
constexpr int kConnectTimeoutS = 5;

std::vector<std::string> RecordParams(const MigrationRecord& m) {
  return {m.id,
          m.name,
          m.spec.dump(),
          m.phase,
          m.state,
          m.progress.dump(),
          m.result.dump(),
          m.findings.dump(),
          m.error,
          Str(m.created_at_ms),
          Str(m.updated_at_ms)};
}

}  // namespace

Result<std::unique_ptr<PgStateStore>> PgStateStore::Open(const Options& opts) {
  if (opts.pool_size < 1) return InvalidArgument("the store's connection pool needs a size >= 1");
  std::unique_ptr<PgStateStore> store(new PgStateStore(opts));
  PGSHIFT_ASSIGN_OR_RETURN(
      store->conninfo_,
      WithSessionTimeouts(opts.conninfo, {.statement_timeout_ms = opts.statement_timeout_ms}));
  PGSHIFT_RETURN_IF_ERROR(store->Migrate());
  return store;
}

Result<std::unique_ptr<PgConn>> PgStateStore::Take() {
  {
    std::unique_lock<std::mutex> lock(mu_);
    freed_.wait(lock, [&] { return !idle_.empty() || open_ < opts_.pool_size; });
    if (!idle_.empty()) {
      auto c = std::move(idle_.back());
      idle_.pop_back();
      return c;
    }
    ++open_;  // a slot for the connection made below, outside the lock
  }
  const int64_t deadline = MonotonicMs() + opts_.retry_ms;
  for (int64_t backoff = kConnectBackoffBaseMs;;
       backoff = std::min(backoff * 2, kConnectBackoffMaxMs)) {
    auto c = PgConn::Connect(conninfo_, kConnectTimeoutS);
    if (c.ok()) return std::move(*c);
    if (MonotonicMs() + backoff > deadline) {
      std::lock_guard<std::mutex> lock(mu_);
      --open_;
      freed_.notify_one();
      return Unavailable("state store unreachable for " + Str(opts_.retry_ms) +
                         " ms: " + c.status().message());
    }
    spdlog::warn("state store: {}; retrying in {} ms", c.status().message(), backoff);
    DefaultClock().SleepMs(backoff);
  }
}

void PgStateStore::Give(std::unique_ptr<PgConn> c) {
  std::lock_guard<std::mutex> lock(mu_);
  if (c->Healthy()) {
    idle_.push_back(std::move(c));
  } else {
    --open_;  // dropped: the next Take connects anew
  }
  freed_.notify_one();
}

Status PgStateStore::WithConn(const ConnFn& fn, bool read_only) {
  for (int attempt = 0;; ++attempt) {
    PGSHIFT_ASSIGN_OR_RETURN(auto c, Take());
    Status st = fn(*c);
    const bool broke = !c->Healthy();
    Give(std::move(c));
    if (st.ok() || !broke || !read_only || attempt > 0) return st;
  }
}

Status PgStateStore::Transaction(const ConnFn& fn) {
  return WithConn([&](PgConn& c) {
    PGSHIFT_RETURN_IF_ERROR(c.Exec("BEGIN"));
    Status st = fn(c);
    if (st.ok()) st = c.Exec("COMMIT");
    if (!st.ok() && c.Healthy()) (void)c.Exec("ROLLBACK");
    return st;
  });
}

Status PgStateStore::Migrate() {
  return Transaction([](PgConn& c) -> Status {
    // "already exists, skipping" is no news in pgshiftd's log.
    PGSHIFT_RETURN_IF_ERROR(c.Exec("SET LOCAL client_min_messages = warning"));
    PGSHIFT_RETURN_IF_ERROR(
        c.Exec(std::string("SELECT pg_advisory_xact_lock(x'") + kMigrationLock + "'::bigint)"));
    PGSHIFT_RETURN_IF_ERROR(c.Exec("CREATE SCHEMA IF NOT EXISTS pgshift"));
    PGSHIFT_RETURN_IF_ERROR(
        c.Exec("CREATE TABLE IF NOT EXISTS pgshift.schema_version (version int NOT NULL)"));
    PGSHIFT_ASSIGN_OR_RETURN(
        Rows v, c.Query("SELECT coalesce(max(version), 0) AS v FROM pgshift.schema_version"));
    const int64_t have = v.Int(0, "v");
    constexpr int64_t kNewest = static_cast<int64_t>(std::size(kMigrations));
    if (have > kNewest) {
      return FailedPrecondition("the state store has schema version " + Str(have) +
                                ", newer than this pgshiftd knows (" + Str(kNewest) +
                                "): run the newer pgshiftd");
    }
    for (int64_t ver = have; ver < kNewest; ++ver) {
      // Several statements: the simple query protocol.
      PGSHIFT_RETURN_IF_ERROR(c.Send(kMigrations[ver]));
      PGSHIFT_RETURN_IF_ERROR(c.Collect().status());
      spdlog::info("state store: schema migrated to version {}", ver + 1);
    }
    if (have == kNewest) return Status::OK();
    PGSHIFT_RETURN_IF_ERROR(c.Exec("DELETE FROM pgshift.schema_version"));
    return c.Exec("INSERT INTO pgshift.schema_version VALUES ($1)", {Str(kNewest)});
  });
}

Status PgStateStore::Insert(const MigrationRecord& m) { return InsertLinked(m, {}); }

Status PgStateStore::InsertLinked(const MigrationRecord& m, const MigrationLink& link) {
  return Transaction([&](PgConn& c) -> Status {
    PGSHIFT_ASSIGN_OR_RETURN(
        Rows r, c.Query("INSERT INTO pgshift.migrations (id, name, spec, phase, state, progress, "
                        "result, findings, error, created_at, updated_at) VALUES "
                        "($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11) ON CONFLICT (id) DO NOTHING "
                        "RETURNING id",
                        RecordParams(m)));
    if (r.empty()) return AlreadyExists("a migration with id '" + m.id + "' already exists");
    return LinkOn(c, m.id, link);
  });
}

Status PgStateStore::WhyNotWritten(PgConn& c, const std::string& id, int64_t token) {
  PGSHIFT_ASSIGN_OR_RETURN(
      Rows r, c.Query("SELECT lease_owner, lease_token, lease_expires FROM pgshift.migrations "
                      "WHERE id=$1",
                      {id}));
  if (r.empty()) return NotFound("no migration with id '" + id + "'");
  return LeaseLost(id, LeaseOf(r, 0), token);
}

Status PgStateStore::UpdateOn(PgConn& c, const MigrationRecord& m) {
  // created_at ($10) never changes; the lease token ($12) fences the write,
  // and the row lock orders it against a takeover.
  auto params = RecordParams(m);
  params.push_back(Str(m.lease.token));
  PGSHIFT_ASSIGN_OR_RETURN(
      Rows r, c.Query("UPDATE pgshift.migrations SET name=$2, spec=$3, phase=$4, state=$5, "
                      "progress=$6, result=$7, findings=$8, error=$9, updated_at=$11 WHERE id=$1 "
                      "AND created_at=$10 AND lease_token=$12 RETURNING id",
                      params));
  if (r.empty()) return WhyNotWritten(c, m.id, m.lease.token);
  return Status::OK();
}

Status PgStateStore::Update(const MigrationRecord& m) {
  return WithConn([&](PgConn& c) { return UpdateOn(c, m); });
}

Result<std::vector<MigrationRecord>> PgStateStore::Select(const std::string& where,
                                                          const std::vector<std::string>& args) {
  std::vector<MigrationRecord> out;
  // One snapshot for the rows and their queues.
  PGSHIFT_RETURN_IF_ERROR(WithConn(
      [&](PgConn& c) -> Status {
        out.clear();
        PGSHIFT_RETURN_IF_ERROR(c.Exec("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"));
        auto rows = c.Query(
            "SELECT id, name, spec, phase, state, progress, result, findings, error, created_at, "
            "updated_at, lease_owner, lease_token, lease_expires FROM pgshift.migrations " +
                where + " ORDER BY created_at, id",
            args);
        // The queues of the rows selected: the same filter, the same args.
        auto actions = c.Query(
            "SELECT migration_id, seq, action, body FROM pgshift.actions " +
                (where.empty()
                     ? std::string()
                     : "WHERE migration_id IN (SELECT id FROM pgshift.migrations " + where + ")") +
                " ORDER BY seq",
            args);
        (void)c.Exec("COMMIT");
        PGSHIFT_RETURN_IF_ERROR(rows.status());
        PGSHIFT_RETURN_IF_ERROR(actions.status());
        std::map<std::string, std::vector<OperatorAction>> queued;
        for (size_t i = 0; i < actions->size(); ++i) {
          queued[actions->Str(i, "migration_id")].push_back(
              {actions->Int(i, "seq"), actions->Str(i, "action"),
               ParseOr(actions->Str(i, "body"), json::object())});
        }
        for (size_t i = 0; i < rows->size(); ++i) {
          MigrationRecord m;
          m.id = rows->Str(i, "id");
          m.name = rows->Str(i, "name");
          m.spec = ParseOr(rows->Str(i, "spec"), json::object());
          m.phase = rows->Str(i, "phase");
          m.state = rows->Str(i, "state");
          m.progress = ParseOr(rows->Str(i, "progress"), json::object());
          m.result = ParseOr(rows->Str(i, "result"), json::object());
          m.findings = ParseOr(rows->Str(i, "findings"), json::array());
          m.error = rows->Str(i, "error");
          m.created_at_ms = rows->Int(i, "created_at");
          m.updated_at_ms = rows->Int(i, "updated_at");
          m.lease = LeaseOf(*rows, i);
          m.actions = std::move(queued[m.id]);
          out.push_back(std::move(m));
        }
        return Status::OK();
      },
      /*read_only=*/true));
  return out;
}

Result<MigrationRecord> PgStateStore::Get(const std::string& id) {
  PGSHIFT_ASSIGN_OR_RETURN(auto rows, Select("WHERE id = $1", {id}));
  if (rows.empty()) {
    return NotFound("no migration with id '" + id + "' (list them with `pgshift migration list`)");
  }
  return std::move(rows.front());
}

Result<std::vector<MigrationRecord>> PgStateStore::List() { return Select("", {}); }

Result<std::vector<MigrationRecord>> PgStateStore::ListLive() {
  return Select(LiveMigrationsWhere(), {});
}

Status PgStateStore::RequestAction(const std::string& id, const std::string& action,
                                   const json& body) {
  return WithConn([&](PgConn& c) -> Status {
    PGSHIFT_ASSIGN_OR_RETURN(Rows known,
                             c.Query("SELECT 1 FROM pgshift.migrations WHERE id=$1", {id}));
    if (known.empty()) return NotFound("no migration with id '" + id + "'");
    // A repeated request (a client retrying its POST) is queued once.
    return c.Exec(
        "INSERT INTO pgshift.actions (migration_id, action, body) SELECT $1, $2, $3 WHERE NOT "
        "EXISTS (SELECT 1 FROM pgshift.actions WHERE migration_id=$1 AND action=$2 AND body=$3)",
        {id, action, body.dump()});
  });
}

namespace {

// Inserts `e` when the migration's lease token is `fence` (or kNoFence),
// holding the row's share lock: a takeover waits for it, or it for the
// takeover and then finds the new token. Returns the rows inserted.
Result<size_t> InsertEvent(PgConn& c, const std::string& id, const MigrationEvent& e,
                           int64_t fence) {
  PGSHIFT_ASSIGN_OR_RETURN(
      Rows r, c.Query("INSERT INTO pgshift.events (migration_id, at, phase, kind, message, owner) "
                      "SELECT $1, $2, $3, $4, $5, $6 FROM (SELECT 1 FROM pgshift.migrations "
                      "WHERE id=$1 AND ($7::bigint = -1 OR lease_token=$7::bigint) FOR SHARE) f "
                      "RETURNING seq",
                      {id, Str(e.at_ms), e.phase, e.kind, e.message, e.owner, Str(fence)}));
  return r.size();
}

}  // namespace

Status PgStateStore::AppendEvent(const std::string& id, const MigrationEvent& e, int64_t fence) {
  static_assert(kNoFence == -1, "InsertEvent's SQL spells kNoFence as -1");
  return WithConn([&](PgConn& c) -> Status {
    PGSHIFT_ASSIGN_OR_RETURN(size_t n, InsertEvent(c, id, e, fence));
    return n == 1 ? Status::OK() : WhyNotWritten(c, id, fence);
  });
}

Status PgStateStore::UpdateWithEvents(const MigrationRecord& m,
                                      const std::vector<MigrationEvent>& events,
                                      const std::vector<int64_t>& applied_actions) {
  return Transaction([&](PgConn& c) -> Status {
    // First: the fenced update takes the row lock until COMMIT.
    PGSHIFT_RETURN_IF_ERROR(UpdateOn(c, m));
    for (const auto& e : events)
      PGSHIFT_RETURN_IF_ERROR(InsertEvent(c, m.id, e, kNoFence).status());
    for (int64_t seq : applied_actions) {
      // Only the request that was applied: one queued since stays.
      PGSHIFT_RETURN_IF_ERROR(
          c.Exec("DELETE FROM pgshift.actions WHERE seq=$1 AND migration_id=$2", {Str(seq), m.id}));
    }
    return Status::OK();
  });
}

Result<std::vector<MigrationEvent>> PgStateStore::Events(const std::string& id) {
  std::vector<MigrationEvent> out;
  PGSHIFT_RETURN_IF_ERROR(WithConn(
      [&](PgConn& c) -> Status {
        PGSHIFT_ASSIGN_OR_RETURN(
            Rows r, c.Query("SELECT seq, at, phase, kind, message, owner FROM pgshift.events "
                            "WHERE migration_id=$1 ORDER BY seq",
                            {id}));
        out.clear();
        for (size_t i = 0; i < r.size(); ++i) {
          out.push_back({r.Int(i, "seq"), r.Int(i, "at"), r.Str(i, "phase"), r.Str(i, "kind"),
                         r.Str(i, "message"), r.Str(i, "owner")});
        }
        return Status::OK();
      },
      /*read_only=*/true));
  return out;
}

}  // namespace pgshift
