// Leases: which pgshiftd drives a migration. Several pgshiftd may share one
// store; each migration is owned by at most one of them through a lease that
// expires unless its owner renews it. The token increases each time the
// lease changes hands and is the fencing token: the store applies a
// migration's state write only while the writer's token is the stored one,
// so a pgshiftd that lost its lease (paused, partitioned, presumed dead) is
// refused and stops driving that migration.
// Plain values and pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace pgshift {

struct Lease {
  std::string owner;          // the holder's owner id; "" when never held
  int64_t token = 0;          // fencing token: +1 at each change of owner
  int64_t expires_at_ms = 0;  // on the store's clock (epoch ms)

  bool HeldBy(const std::string& who) const { return !owner.empty() && owner == who; }
};

// The lease `owner` gets from `stored` at `now_ms` (the store's clock), for
// `ttl_ms`: its own lease is extended under the same token; a free or
// expired one is taken with the next token. FailedPrecondition, naming the
// holder, while someone else's lease stands.
Result<Lease> NextLease(const Lease& stored, const std::string& owner, int64_t now_ms,
                        int64_t ttl_ms);

// Renewal: extends `held` when it is still the stored lease. Aborted (the
// code of a refused fenced write) when another owner took it over since or
// it expired and was taken; an expired lease nobody took is renewed.
Result<Lease> RenewedLease(const Lease& stored, const Lease& held, int64_t now_ms, int64_t ttl_ms);

// The refusal of a write (or renewal) whose token is no longer the stored one;
// `noun` names what the lease is of.
Status LeaseLost(const std::string& migration_id, const Lease& stored, int64_t writer_token,
                 const std::string& noun = "migration");
inline bool IsLeaseLost(const Status& st) { return st.code() == Code::kAborted; }

// A table whose rows carry a lease (columns lease_owner, lease_token,
// lease_expires): the stores share their lease code between migrations and
// fleet runs.
struct LeaseTable {
  const char* table;
  const char* noun;  // in messages
};
inline constexpr LeaseTable kMigrationLeases{"migrations", "migration"};
inline constexpr LeaseTable kFleetRunLeases{"fleet_runs", "fleet run"};

// This process's owner id: host name and pid, unique among live pgshiftd.
std::string DefaultOwnerId();

}  // namespace pgshift
