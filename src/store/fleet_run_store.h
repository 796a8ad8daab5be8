// FleetRunStore: where fleet runs (fleet/run_state.h) are kept, in the same
// store as the migrations, so every pgshiftd on a shared store sees every run
// and one of them drives each.
//
// A run is driven by the holder of its lease (store/lease.h, the same rules
// as a migration's): the runner's writes of the run's document are fenced by
// the lease token, so a pgshiftd that lost a run cannot overwrite it. An
// operator's pause or resume made on a pgshiftd that does not drive the run
// waits in the run's row (`request`) until the driver applies it. The store
// keeps the document opaque (the fleet runner's JSON). Implementations are
// thread-safe.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"
#include "store/lease.h"

namespace pgshift {

struct FleetRunRecord {
  std::string id;
  int64_t created_at_ms = 0;
  nlohmann::json doc = nlohmann::json::object();
  // As read; UpdateFleetRun writes only while the stored token is lease.token.
  Lease lease;
  // An operator's request waiting for the driver ("" when none) and its
  // number, which grows with each request.
  std::string request;
  int64_t request_seq = 0;
};

class FleetRunStore {
 public:
  virtual ~FleetRunStore() = default;
  // A new run starts with no lease. AlreadyExists for a known id.
  virtual Status InsertFleetRun(const FleetRunRecord& r) = 0;
  // Writes r.doc while the stored lease token is r.lease.token (Aborted
  // otherwise); clears the waiting request when its number is
  // `applied_request` (0: none applied), so one made since stays.
  virtual Status UpdateFleetRun(const FleetRunRecord& r, int64_t applied_request) = 0;
  // NotFound for an unknown id.
  virtual Result<FleetRunRecord> GetFleetRun(const std::string& id) = 0;
  // Oldest first.
  virtual Result<std::vector<FleetRunRecord>> ListFleetRuns() = 0;
  // Leaves `request` for the driver (replacing one not applied yet).
  virtual Status RequestFleetRun(const std::string& id, const std::string& request) = 0;
  // Leases of runs: as StateStore's of migrations.
  virtual Result<Lease> AcquireFleetLease(const std::string& id, const std::string& owner,
                                          int64_t ttl_ms) = 0;
  virtual Result<Lease> RenewFleetLease(const std::string& id, const Lease& held,
                                        int64_t ttl_ms) = 0;
  virtual Status ReleaseFleetLease(const std::string& id, const Lease& held) = 0;
};

}  // namespace pgshift
