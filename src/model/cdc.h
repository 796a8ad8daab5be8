// CdcSlot: what pgshift knows and has done about one logical replication
// slot (one CDC pipeline) during a migration — the plan made at preflight,
// the position recorded at cdc_prepare, the position its consumer confirmed
// at the fence (drain), and the slot recreated on the target before any
// client write is released. Stored with the migration; shown in status.
// Plain value type; thread-compatible.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"

namespace pgshift {

// Where a slot stands in the cutover, in order.
enum class CdcSlotState {
  kPlanned,    // seen on the source; will be carried
  kRecorded,   // position recorded at cdc_prepare
  kDrained,    // its consumer confirmed the final LSN; consumer paused
  kRecreated,  // the same slot exists on the target
  kAdvanced,   // its consumer confirmed a position past the recreated one on the target
};
const char* CdcSlotStateName(CdcSlotState s);
Result<CdcSlotState> ParseCdcSlotState(const std::string& s);

struct CdcConsumer {
  int pid = 0;  // the walsender serving it on the source (0: not connected)
  std::string application_name;
  std::string client_addr;      // as the source sees it ("" for a Unix socket)
  bool through_router = false;  // the router carries its connection (it moves with the route)
};

struct CdcSlot {
  std::string name;
  std::string plugin;
  std::string database;
  bool two_phase = false;
  CdcConsumer consumer;
  CdcSlotState state = CdcSlotState::kPlanned;
  std::string recorded_lsn;          // confirmed_flush_lsn at cdc_prepare
  std::string restart_lsn;           // restart_lsn at cdc_prepare
  std::string drained_lsn;           // confirmed_flush_lsn once it reached the final LSN
  int64_t drain_ms = -1;             // how long the drain waited for it (-1: not yet)
  std::string recreated_lsn;         // the target slot's consistent point
  std::string target_confirmed_lsn;  // last seen on the target (verify/finalize)

  nlohmann::json ToJson() const;
  static Result<CdcSlot> FromJson(const nlohmann::json& j);
};

nlohmann::json CdcSlotsToJson(const std::vector<CdcSlot>& slots);
// A stored array (or nothing) back into slots; a malformed entry is an error naming it.
Result<std::vector<CdcSlot>> CdcSlotsFromJson(const nlohmann::json& j);

}  // namespace pgshift
