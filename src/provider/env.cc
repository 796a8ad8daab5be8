#include "provider/env.h"

namespace pgshift {

Result<ReplicaProgress> MigrationEnv::EnsureReplica(const std::string& slot,
                                                    std::function<void(int)> progress) {
  PGSHIFT_RETURN_IF_ERROR(CreateReplica(slot, std::move(progress)));
  return ReplicaProgress{.complete = true, .percent = 100};
}

}  // namespace pgshift
