// PgStateStore: the state store in a PostgreSQL database, shared by several
// pgshiftd (docs/store.md). Same contract as SqliteStateStore
// (state_store.h); leases expire on the database server's clock, so the
// pgshiftd hosts' clocks do not matter.
//
// pgshiftd creates and migrates its tables itself, in schema `pgshift`, under
// an advisory lock (several starting at once migrate once); the version is
// in pgshift.schema_version. Every fenced write checks the lease token in
// the statement that writes the migration's row (row-locked), so it is
// ordered against a takeover: a write lands before the takeover or is refused.
//
// Connections come from a small pool; one that cannot be made is retried
// with back-off for up to Options::retry_ms (the store's PostgreSQL
// restarting or failing over behind a stable address), after which the call
// fails Unavailable. A statement that fails on a broken connection is not
// retried, except a read: a write's outcome is unknown, and the engine
// reloads and re-runs its step after a failed commit anyway.
// Thread-safe; no lock is held across a database call.
#pragma once

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "pg/conn.h"
#include "store/state_store.h"

namespace pgshift {

class PgStateStore : public Store {
 public:
  struct Options {
    std::string conninfo;  // libpq key=value or postgresql:// URI
    int pool_size = 4;
    int64_t retry_ms = 15000;  // how long to keep trying to connect
    int64_t statement_timeout_ms = 30000;
  };
  static Result<std::unique_ptr<PgStateStore>> Open(const Options& opts);
  ~PgStateStore() override = default;

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
  Result<Lease> AcquireLease(const std::string& id, const std::string& owner,
                             int64_t ttl_ms) override;
  Result<Lease> RenewLease(const std::string& id, const Lease& held, int64_t ttl_ms) override;
  Status ReleaseLease(const std::string& id, const Lease& held) override;

  // pg_audit_store.cc
  Status AppendAudit(const AuditEntry& e) override;
  Result<std::vector<AuditEntry>> ListAudit(int64_t limit) override;
  Status LinkDatabase(const std::string& migration_id, const std::string& database) override;
  Result<std::map<std::string, std::string>> MigrationDatabases() override;
  Result<std::string> MigrationWithKey(const std::string& key) override;

  // pg_state_store_fleet.cc
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
  explicit PgStateStore(Options opts) : opts_(std::move(opts)) {}
  using ConnFn = std::function<Status(PgConn&)>;
  // Runs `fn` on a pooled connection; `read_only` calls are run once more
  // on a new connection when theirs broke.
  Status WithConn(const ConnFn& fn, bool read_only = false);
  // `fn` between BEGIN and COMMIT on a pooled connection (ROLLBACK on failure).
  Status Transaction(const ConnFn& fn);
  Result<std::unique_ptr<PgConn>> Take();
  void Give(std::unique_ptr<PgConn> c);
  Status Migrate();
  Status UpdateOn(PgConn& c, const MigrationRecord& m);
  // Inside an insert's transaction: refuses `link` (AlreadyExists) when its
  // key was used or its database has a live migration, then records it for
  // migration `id` (pg_audit_store.cc).
  Status LinkOn(PgConn& c, const std::string& id, const MigrationLink& link);
  // NotFound, or LeaseLost when the stored token is not `token`.
  Status WhyNotWritten(PgConn& c, const std::string& id, int64_t token);
  Result<std::vector<MigrationRecord>> Select(const std::string& where,
                                              const std::vector<std::string>& args);
  // `decide` maps the stored lease of row `id` of `t` and the server's now
  // to the new lease.
  Result<Lease> ChangeLease(const LeaseTable& t, const std::string& id,
                            const std::function<Result<Lease>(const Lease&, int64_t)>& decide);
  // The lease operations, on the rows of `t`.
  Result<Lease> AcquireIn(const LeaseTable& t, const std::string& id, const std::string& owner,
                          int64_t ttl_ms);
  Result<Lease> RenewIn(const LeaseTable& t, const std::string& id, const Lease& held,
                        int64_t ttl_ms);
  Status ReleaseIn(const LeaseTable& t, const std::string& id, const Lease& held);
  Result<std::vector<FleetRunRecord>> SelectFleetRuns(const std::string& where,
                                                      const std::vector<std::string>& args);

  Options opts_;
  std::string conninfo_;  // opts_.conninfo with the session timeouts
  std::mutex mu_;
  std::condition_variable freed_;
  std::vector<std::unique_ptr<PgConn>> idle_;  // guarded by mu_
  int open_ = 0;                               // connections made and not dropped; mu_
};

}  // namespace pgshift
