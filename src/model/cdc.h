// CdcSlot: what pgshift knows and has done about one logical replication
// slot (one CDC pipeline) during a migration — the plan made at preflight,
// the position recorded at cdc_prepare, the position its consumer confirmed
// at the fence (drain), and the slot recreated on the target before any
// client write is released. Stored in the migration's result (cdc_slots);
// shown in status. Plain value types; thread-compatible.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

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
std::optional<CdcSlotState> ParseCdcSlotState(const std::string& s);

struct CdcConsumer {
  int pid = 0;  // the walsender serving it on the source (0: not connected)
  std::string application_name;
  std::string client_addr;      // as the source sees it ("" for a Unix socket)
  bool through_router = false;  // the router carries its connection (it moves with the route)
  nlohmann::json unknown = nlohmann::json::object();

  template <typename Self, typename Visit>
  static void Fields(Self& s, Visit& v) {
    v("pid", s.pid);
    v("application_name", s.application_name);
    v("client_addr", s.client_addr);
    v("through_router", s.through_router);
  }
};

// A record of model/json_fields.h (one list of keys, unknown keys kept).
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
  std::string target_confirmed_lsn;  // last seen on the target (verify)
  nlohmann::json unknown = nlohmann::json::object();

  template <typename Self, typename Visit>
  static void Fields(Self& s, Visit& v) {
    v("name", s.name);
    v("plugin", s.plugin);
    v("database", s.database);
    v("two_phase", s.two_phase);
    v("consumer", s.consumer);
    v("state", s.state);
    v("recorded_lsn", s.recorded_lsn);
    v("restart_lsn", s.restart_lsn);
    v("drained_lsn", s.drained_lsn);
    v("drain_ms", s.drain_ms);
    v("recreated_lsn", s.recreated_lsn);
    v("target_confirmed_lsn", s.target_confirmed_lsn);
  }

  nlohmann::json ToJson() const;
};

}  // namespace pgshift
