#include "provider/env.h"

namespace pgshift {

Result<ReplicaProgress> MigrationEnv::EnsureReplica(const std::string& slot,
                                                    std::function<void(int)> progress) {
  PGSHIFT_RETURN_IF_ERROR(CreateReplica(slot, std::move(progress)));
  return ReplicaProgress{.complete = true, .percent = 100};
}

namespace {
Status NoReverse() {
  return FailedPrecondition("this provider does not implement reverse replication");
}
}  // namespace

Result<std::vector<checks::Finding>> MigrationEnv::ReverseReplicationFindings() {
  return NoReverse();
}
Status MigrationEnv::EnsureReverseReplication() { return NoReverse(); }
Result<ReverseReplicationState> MigrationEnv::InspectReverseReplication(bool) {
  return ReverseReplicationState{};
}
Status MigrationEnv::DropReverseReplication() { return Status::OK(); }
Result<int> MigrationEnv::SyncSequencesToSource() { return NoReverse(); }
Result<int> MigrationEnv::AlignSequencesWithSource() { return 0; }
Result<Lsn> MigrationEnv::AdvanceSourceSlot(const std::string&, Lsn) { return NoReverse(); }

}  // namespace pgshift
