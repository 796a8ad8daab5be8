// PgStateStore's leases (of migrations and of fleet runs) and its
// FleetRunStore half: the pgshift.fleet_runs table (schema in
// pg_state_store.cc).
#include "store/pg_state_store.h"
#include "store/pg_store_util.h"

namespace pgshift {

using store_internal::kServerNowMs;
using store_internal::LeaseOf;
using store_internal::ParseOr;
using store_internal::Str;

Result<Lease> PgStateStore::ChangeLease(
    const LeaseTable& t, const std::string& id,
    const std::function<Result<Lease>(const Lease&, int64_t)>& decide) {
  const std::string table = std::string("pgshift.") + t.table;
  Lease next;
  PGSHIFT_RETURN_IF_ERROR(Transaction([&](PgConn& c) -> Status {
    PGSHIFT_ASSIGN_OR_RETURN(
        Rows r, c.Query(std::string("SELECT lease_owner, lease_token, lease_expires, ") +
                            kServerNowMs + " AS now FROM " + table + " WHERE id=$1 FOR UPDATE",
                        {id}));
    if (r.empty()) return NotFound(std::string("no ") + t.noun + " with id '" + id + "'");
    PGSHIFT_ASSIGN_OR_RETURN(next, decide(LeaseOf(r, 0), r.Int(0, "now")));
    return c.Exec(
        "UPDATE " + table + " SET lease_owner=$2, lease_token=$3, lease_expires=$4 WHERE id=$1",
        {id, next.owner, Str(next.token), Str(next.expires_at_ms)});
  }));
  return next;
}

Result<Lease> PgStateStore::AcquireIn(const LeaseTable& t, const std::string& id,
                                      const std::string& owner, int64_t ttl_ms) {
  return ChangeLease(t, id, [&](const Lease& stored, int64_t now) {
    return NextLease(stored, owner, now, ttl_ms);
  });
}

Result<Lease> PgStateStore::RenewIn(const LeaseTable& t, const std::string& id, const Lease& held,
                                    int64_t ttl_ms) {
  return ChangeLease(t, id, [&](const Lease& stored, int64_t now) -> Result<Lease> {
    auto renewed = RenewedLease(stored, held, now, ttl_ms);
    if (!renewed.ok()) return LeaseLost(id, stored, held.token, t.noun);
    return renewed;
  });
}

Status PgStateStore::ReleaseIn(const LeaseTable& t, const std::string& id, const Lease& held) {
  return WithConn([&](PgConn& c) {
    return c.Exec(std::string("UPDATE pgshift.") + t.table +
                      " SET lease_expires=0 WHERE id=$1 AND lease_token=$2",
                  {id, Str(held.token)});
  });
}

Result<Lease> PgStateStore::AcquireLease(const std::string& id, const std::string& owner,
                                         int64_t ttl_ms) {
  return AcquireIn(kMigrationLeases, id, owner, ttl_ms);
}

Result<Lease> PgStateStore::RenewLease(const std::string& id, const Lease& held, int64_t ttl_ms) {
  return RenewIn(kMigrationLeases, id, held, ttl_ms);
}

Status PgStateStore::ReleaseLease(const std::string& id, const Lease& held) {
  return ReleaseIn(kMigrationLeases, id, held);
}

Result<std::vector<FleetRunRecord>> PgStateStore::SelectFleetRuns(
    const std::string& where, const std::vector<std::string>& args) {
  std::vector<FleetRunRecord> out;
  PGSHIFT_RETURN_IF_ERROR(WithConn(
      [&](PgConn& c) -> Status {
        PGSHIFT_ASSIGN_OR_RETURN(
            Rows r, c.Query("SELECT id, created_at, doc, lease_owner, lease_token, lease_expires, "
                            "request, request_seq FROM pgshift.fleet_runs " +
                                where + " ORDER BY created_at, id",
                            args));
        out.clear();
        for (size_t i = 0; i < r.size(); ++i) {
          out.push_back({.id = r.Str(i, "id"),
                         .created_at_ms = r.Int(i, "created_at"),
                         .doc = ParseOr(r.Str(i, "doc"), nlohmann::json::object()),
                         .lease = LeaseOf(r, i),
                         .request = r.Str(i, "request"),
                         .request_seq = r.Int(i, "request_seq")});
        }
        return Status::OK();
      },
      /*read_only=*/true));
  return out;
}

Status PgStateStore::InsertFleetRun(const FleetRunRecord& r) {
  return WithConn([&](PgConn& c) -> Status {
    PGSHIFT_ASSIGN_OR_RETURN(Rows done,
                             c.Query("INSERT INTO pgshift.fleet_runs (id, created_at, doc) VALUES "
                                     "($1, $2, $3) ON CONFLICT (id) DO NOTHING RETURNING id",
                                     {r.id, Str(r.created_at_ms), r.doc.dump()}));
    if (done.empty()) return AlreadyExists("a fleet run with id '" + r.id + "' exists");
    return Status::OK();
  });
}

Status PgStateStore::UpdateFleetRun(const FleetRunRecord& r, int64_t applied_request) {
  return WithConn([&](PgConn& c) -> Status {
    // The lease token fences the write; the row lock orders it against a takeover.
    PGSHIFT_ASSIGN_OR_RETURN(
        Rows done,
        c.Query("UPDATE pgshift.fleet_runs SET doc=$2, request=CASE WHEN request_seq=$4 THEN '' "
                "ELSE request END WHERE id=$1 AND lease_token=$3 RETURNING id",
                {r.id, r.doc.dump(), Str(r.lease.token), Str(applied_request)}));
    if (!done.empty()) return Status::OK();
    PGSHIFT_ASSIGN_OR_RETURN(
        Rows now, c.Query("SELECT lease_owner, lease_token, lease_expires FROM pgshift.fleet_runs "
                          "WHERE id=$1",
                          {r.id}));
    if (now.empty()) return NotFound("fleet run '" + r.id + "' not found");
    return LeaseLost(r.id, LeaseOf(now, 0), r.lease.token, kFleetRunLeases.noun);
  });
}

Result<FleetRunRecord> PgStateStore::GetFleetRun(const std::string& id) {
  PGSHIFT_ASSIGN_OR_RETURN(auto rows, SelectFleetRuns("WHERE id = $1", {id}));
  if (rows.empty()) return NotFound("fleet run '" + id + "' not found");
  return std::move(rows.front());
}

Result<std::vector<FleetRunRecord>> PgStateStore::ListFleetRuns() {
  return SelectFleetRuns("", {});
}

Status PgStateStore::RequestFleetRun(const std::string& id, const std::string& request) {
  return WithConn([&](PgConn& c) -> Status {
    PGSHIFT_ASSIGN_OR_RETURN(
        Rows done, c.Query("UPDATE pgshift.fleet_runs SET request=$2, request_seq=request_seq+1 "
                           "WHERE id=$1 RETURNING id",
                           {id, request}));
    if (done.empty()) return NotFound("fleet run '" + id + "' not found");
    return Status::OK();
  });
}

Result<Lease> PgStateStore::AcquireFleetLease(const std::string& id, const std::string& owner,
                                              int64_t ttl_ms) {
  return AcquireIn(kFleetRunLeases, id, owner, ttl_ms);
}

Result<Lease> PgStateStore::RenewFleetLease(const std::string& id, const Lease& held,
                                            int64_t ttl_ms) {
  return RenewIn(kFleetRunLeases, id, held, ttl_ms);
}

Status PgStateStore::ReleaseFleetLease(const std::string& id, const Lease& held) {
  return ReleaseIn(kFleetRunLeases, id, held);
}

}  // namespace pgshift
