// StateStore: the durable record of every migration and its event timeline.
//
// The workflow engine writes a migration's phase and results before it moves
// on, so a pgshiftd killed at any instant resumes from here. Operator
// requests (cutover, rollback, ...) wait in their own queue: the API appends
// to it and the engine removes exactly the requests it applied, in the commit
// that records their effect, so a request made while the engine works is
// neither overwritten nor cleared unseen.
// The AuditStore (same file) keeps who did what through the API.
//
// Several pgshiftd may share one store (PgStateStore, pg_state_store.h):
// each migration is driven by the holder of its lease (store/lease.h), and
// every write of the driver's (Update, UpdateWithEvents, a fenced
// AppendEvent) checks the lease's token in the same statement or
// transaction, so a pgshiftd that lost its lease is refused (kAborted).
// SqliteStateStore is thread-safe (one connection behind a mutex; WAL mode,
// synchronous=FULL); its file is locked to one process for the store's life,
// so its leases change hands only between that process's owner ids.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "common/status.h"
#include "store/fleet_run_store.h"
#include "store/lease.h"

struct sqlite3;

namespace pgshift {

// An operator's request, queued by the API until the engine applies it.
struct OperatorAction {
  int64_t seq = 0;  // the store's id of this request (UpdateWithEvents removes it by this)
  std::string action;
  nlohmann::json body = nlohmann::json::object();
};

struct MigrationRecord {
  std::string id;
  std::string name;
  nlohmann::json spec = nlohmann::json::object();
  std::string phase;
  std::string state;
  nlohmann::json progress = nlohmann::json::object();
  nlohmann::json result = nlohmann::json::object();
  nlohmann::json findings = nlohmann::json::array();
  std::string error;
  int64_t created_at_ms = 0;
  int64_t updated_at_ms = 0;
  // The queued operator requests, oldest first: appended by the API
  // (RequestAction), removed by the engine once applied (UpdateWithEvents).
  std::vector<OperatorAction> actions;
  // The lease as read; Update and UpdateWithEvents write only while the
  // stored token is still lease.token (the writer's own). Never written by them.
  Lease lease;
};

struct MigrationEvent {
  int64_t seq = 0;
  int64_t at_ms = 0;
  std::string phase;
  std::string kind;  // info | warning | error
  std::string message;
  std::string owner;  // the owner id of the pgshiftd that wrote it; "" for the API
};

// AppendEvent's fence for a write that is no migration driver's (the API's
// note of an operator request): never refused for a lease.
inline constexpr int64_t kNoFence = -1;

// "WHERE phase NOT IN (<the terminal phases>)": ListLive's filter in SQL.
std::string LiveMigrationsWhere();

// What a migration is created for, written in the commit that inserts it:
// a creator that dies right after the insert leaves nothing half-recorded
// (before, the link followed in a commit of its own, and a fleet run taken
// over between the two started its database a second time).
struct MigrationLink {
  // The inventory database it migrates ("" for none). One live migration
  // per database, across every pgshiftd on the store: an insert for a
  // database that has one is refused (AlreadyExists).
  std::string database;
  // The creator's idempotency key ("" for none): an insert with a key used
  // before is refused (AlreadyExists), and AuditStore::MigrationWithKey
  // finds the migration made with it.
  std::string key;
};

// The refusal of a second live migration of `database` (the store's and
// the by-name starter's words).
Status AlreadyMigrating(const std::string& database, const std::string& id,
                        const std::string& phase, const std::string& state);

class StateStore {
 public:
  virtual ~StateStore() = default;
  // A new migration starts with no lease (token 0).
  virtual Status Insert(const MigrationRecord& m) = 0;
  // Insert, with `link` (MigrationLink) checked and recorded in the same commit.
  virtual Status InsertLinked(const MigrationRecord& m, const MigrationLink& link) = 0;
  // Writes everything but the queued actions and the lease; Aborted when the
  // stored lease token is no longer m.lease.token.
  virtual Status Update(const MigrationRecord& m) = 0;
  virtual Result<MigrationRecord> Get(const std::string& id) = 0;
  virtual Result<std::vector<MigrationRecord>> List() = 0;
  // The migrations not in a terminal phase: what the engine's scans and a
  // new migration's checks need. A fleet leaves hundreds of finalized ones
  // behind, and reading (parsing) each on every scan made pgshiftd's CPU per
  // migration grow with the fleet (bench/fleet). Default: List(), filtered.
  virtual Result<std::vector<MigrationRecord>> ListLive();
  // Queues a request behind those pending; a request identical to one still
  // queued (the same action and body) is not queued twice.
  virtual Status RequestAction(const std::string& id, const std::string& action,
                               const nlohmann::json& body) = 0;
  // Aborted when `fence` (a lease token) is not the stored one; kNoFence
  // never is.
  virtual Status AppendEvent(const std::string& id, const MigrationEvent& e, int64_t fence) = 0;
  // Update, AppendEvent of each event and the removal of each applied queued
  // action (by OperatorAction::seq; requests queued since stay) in one
  // durable commit: a phase change with its events costs one fsync, not one
  // per row, and a request is gone exactly when its effect is recorded.
  // Fenced like Update: nothing is written when the lease moved on.
  virtual Status UpdateWithEvents(const MigrationRecord& m,
                                  const std::vector<MigrationEvent>& events,
                                  const std::vector<int64_t>& applied_actions) = 0;
  virtual Result<std::vector<MigrationEvent>> Events(const std::string& id) = 0;

  // Leases (store/lease.h), on the store's clock. AcquireLease takes or
  // extends the lease of migration `id` for `owner` (NextLease);
  // FailedPrecondition while another owner's stands, NotFound for no such
  // migration.
  virtual Result<Lease> AcquireLease(const std::string& id, const std::string& owner,
                                     int64_t ttl_ms) = 0;
  // Extends `held` (RenewedLease); Aborted once it changed hands.
  virtual Result<Lease> RenewLease(const std::string& id, const Lease& held, int64_t ttl_ms) = 0;
  // Lets `held` expire now so another pgshiftd may take the migration at
  // once; nothing when it already changed hands.
  virtual Status ReleaseLease(const std::string& id, const Lease& held) = 0;
  // True when no other process can hold a lease of this store (the SQLite
  // file is locked to this one): a lease not taken by this process is free
  // at once, so a restarted pgshiftd resumes without waiting for expiry
  // (inside a cutover's hold, before the router's hold lease lapses).
  virtual bool SingleProcess() const { return false; }
};

// One audited act: who did what, when, to which database and migration,
// and why (the request's reason or options, never a secret).
struct AuditEntry {
  int64_t seq = 0;
  int64_t at_ms = 0;
  std::string identity;
  std::string action;     // e.g. migration.create, migration.cutover
  std::string database;   // "" when none
  std::string migration;  // "" when none
  std::string detail;
};

// The audit log and which database each migration was created for.
class AuditStore {
 public:
  virtual ~AuditStore() = default;
  virtual Status AppendAudit(const AuditEntry& e) = 0;
  // Oldest first; at most `limit` of the newest.
  virtual Result<std::vector<AuditEntry>> ListAudit(int64_t limit) = 0;
  // Records that `migration_id` migrates `database` (a link made after the
  // insert; StateStore::InsertLinked makes it with the insert).
  virtual Status LinkDatabase(const std::string& migration_id, const std::string& database) = 0;
  // migration id → database, for every linked migration.
  virtual Result<std::map<std::string, std::string>> MigrationDatabases() = 0;
  // The migration inserted with idempotency key `key` (MigrationLink), ""
  // when none was.
  virtual Result<std::string> MigrationWithKey(const std::string& key) = 0;
};

// A whole store: what pgshiftd opens (store/open_store.h).
class Store : public StateStore, public AuditStore, public FleetRunStore {};

// The file is made private (mode 0600) at open: specs may carry a password.
// It is locked (flock) for the store's life: a second Open of the same file,
// in this process or another, fails with FailedPrecondition. Since no other
// process can hold a lease on it, a lease left by an earlier process is free
// (a pgshiftd restarted after a crash resumes at once); leases taken through
// this store expire as anywhere else.
class SqliteStateStore : public Store {
 public:
  // path ":memory:" gives a private in-memory database (unit tests).
  static Result<std::unique_ptr<SqliteStateStore>> Open(const std::string& path);
  ~SqliteStateStore() override;

  Status Insert(const MigrationRecord& m) override;
  Status InsertLinked(const MigrationRecord& m, const MigrationLink& link) override;
  Status Update(const MigrationRecord& m) override;
  Result<MigrationRecord> Get(const std::string& id) override;
  Result<std::vector<MigrationRecord>> List() override;
  Result<std::vector<MigrationRecord>> ListLive() override;
  Status RequestAction(const std::string& id, const std::string& action,
                       const nlohmann::json& body) override;
  Status AppendEvent(const std::string& id, const MigrationEvent& e, int64_t fence) override;
  Status UpdateWithEvents(const MigrationRecord& m, const std::vector<MigrationEvent>& events,
                          const std::vector<int64_t>& applied_actions) override;
  Result<std::vector<MigrationEvent>> Events(const std::string& id) override;
  // state_store_lease.cc
  Result<Lease> AcquireLease(const std::string& id, const std::string& owner,
                             int64_t ttl_ms) override;
  Result<Lease> RenewLease(const std::string& id, const Lease& held, int64_t ttl_ms) override;
  Status ReleaseLease(const std::string& id, const Lease& held) override;
  bool SingleProcess() const override { return true; }

  // audit_store.cc
  Status AppendAudit(const AuditEntry& e) override;
  Result<std::vector<AuditEntry>> ListAudit(int64_t limit) override;
  Status LinkDatabase(const std::string& migration_id, const std::string& database) override;
  Result<std::map<std::string, std::string>> MigrationDatabases() override;
  Result<std::string> MigrationWithKey(const std::string& key) override;

  // state_store_fleet.cc
  Status InsertFleetRun(const FleetRunRecord& r) override;
  Status UpdateFleetRun(const FleetRunRecord& r, int64_t applied_request) override;
  Result<FleetRunRecord> GetFleetRun(const std::string& id) override;
  Result<std::vector<FleetRunRecord>> ListFleetRuns() override;
  Status RequestFleetRun(const std::string& id, const std::string& request) override;
  Result<Lease> AcquireFleetLease(const std::string& id, const std::string& owner,
                                  int64_t ttl_ms) override;
  Result<Lease> RenewFleetLease(const std::string& id, const Lease& held, int64_t ttl_ms) override;
  Status ReleaseFleetLease(const std::string& id, const Lease& held) override;

 private:
  Status UpdateLocked(const MigrationRecord& m);
  // Refuses `link` (AlreadyExists) when its key was used or its database
  // has a live migration; then records it for migration `id` (audit_store.cc).
  Status LinkLocked(const std::string& id, const MigrationLink& link);
  Status AppendEventLocked(const std::string& id, const MigrationEvent& e);
  // The stored lease of row `id` of `t`; NotFound for no such row.
  Result<Lease> LeaseLocked(const LeaseTable& t, const std::string& id);
  // Aborted (LeaseLost) unless `token` is the migration's stored one.
  Status CheckFenceLocked(const std::string& id, int64_t token);
  Status WriteLeaseLocked(const LeaseTable& t, const std::string& id, const Lease& l);
  // The lease operations, on the rows of `t`.
  Result<Lease> AcquireIn(const LeaseTable& t, const std::string& id, const std::string& owner,
                          int64_t ttl_ms);
  Result<Lease> RenewIn(const LeaseTable& t, const std::string& id, const Lease& held,
                        int64_t ttl_ms);
  Status ReleaseIn(const LeaseTable& t, const std::string& id, const Lease& held);
  // Brings the schema to the newest version (schema_version table).
  Status MigrateLocked();
  SqliteStateStore(sqlite3* db, int lock_fd) : db_(db), lock_fd_(lock_fd) {}
  Status ExecLocked(const std::string& sql);
  // Runs `body` inside BEGIN IMMEDIATE ... COMMIT; rolls back when it or the
  // COMMIT fails (a COMMIT that failed, e.g. on a full disk, may leave the
  // transaction open, and every later BEGIN would fail).
  Status TransactionLocked(const std::function<Status()>& body);
  Status ActionsLocked(MigrationRecord& m);
  Result<std::vector<MigrationRecord>> Select(const std::string& where,
                                              const std::vector<std::string>& args);

  std::mutex mu_;
  sqlite3* db_;
  int lock_fd_;  // holds the file's flock; -1 for ":memory:"
  // The owner ids that took a lease through this store: only their leases
  // can belong to a live pgshiftd.
  std::set<std::string> live_owners_;
};

}  // namespace pgshift
