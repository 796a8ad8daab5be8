#include "store/lease.h"

#include <unistd.h>

namespace pgshift {

Result<Lease> NextLease(const Lease& stored, const std::string& owner, int64_t now_ms,
                        int64_t ttl_ms) {
  if (owner.empty()) return InvalidArgument("a lease needs an owner id");
  if (ttl_ms <= 0) return InvalidArgument("a lease needs a positive duration");
  if (stored.HeldBy(owner)) return Lease{owner, stored.token, now_ms + ttl_ms};
  if (!stored.owner.empty() && stored.expires_at_ms > now_ms) {
    return FailedPrecondition("driven by " + stored.owner + " (lease token " +
                              std::to_string(stored.token) + ", expires in " +
                              std::to_string(stored.expires_at_ms - now_ms) + " ms)");
  }
  return Lease{owner, stored.token + 1, now_ms + ttl_ms};
}

Result<Lease> RenewedLease(const Lease& stored, const Lease& held, int64_t now_ms, int64_t ttl_ms) {
  if (stored.token != held.token || !stored.HeldBy(held.owner)) {
    return LeaseLost("", stored, held.token);
  }
  return Lease{held.owner, held.token, now_ms + ttl_ms};
}

Status LeaseLost(const std::string& migration_id, const Lease& stored, int64_t writer_token,
                 const std::string& noun) {
  return Aborted((migration_id.empty() ? "the " + noun : noun + " " + migration_id) +
                 " is now driven by " + (stored.owner.empty() ? "nobody" : stored.owner) +
                 " (lease token " + std::to_string(stored.token) + ", this writer held " +
                 std::to_string(writer_token) + "): write refused");
}

std::string DefaultOwnerId() {
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0) host[0] = '\0';
  return std::string(host[0] ? host : "pgshiftd") + ":" + std::to_string(getpid());
}

}  // namespace pgshift
