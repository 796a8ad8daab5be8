// Replication slot health: every slot on the source with its type, state,
// WAL retained (current LSN − restart_lsn) and consumer lag (current LSN −
// confirmed_flush_lsn). Inactive slots that retain WAL are named as the
// likely cause of lag, with the statement to drop them; pgshift never drops
// a slot by itself. Free functions; EvaluateSlots is pure.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "checks/finding.h"
#include "common/lsn.h"
#include "pg/conn.h"

namespace pgshift::checks {

struct SlotInfo {
  std::string name;
  std::string slot_type;  // physical | logical
  std::string plugin;     // logical only
  std::string database;   // logical only
  bool active = false;
  std::string wal_status;                 // reserved | extended | unreserved | lost | ""
  std::optional<int64_t> safe_wal_size;   // bytes before the slot is lost; NULL = unlimited
  std::optional<Lsn> restart_lsn;
  std::optional<Lsn> confirmed_flush_lsn;  // logical only
};

struct SlotThresholds {
  // An inactive slot retaining more than this is flagged (warning) as the likely cause of lag.
  uint64_t inactive_retained_bytes = 16ull << 20;
};

struct SlotSnapshot {
  Lsn current_lsn;  // source pg_current_wal_lsn() at the time of reading
  std::vector<SlotInfo> slots;
};

Result<SlotSnapshot> ReadSlots(PgConn& source);

// WAL a slot holds back, and how far its consumer is behind (logical slots).
uint64_t RetainedBytes(const SlotInfo& s, Lsn current);
std::optional<uint64_t> ConsumerLagBytes(const SlotInfo& s, Lsn current);

// Findings with id "slot_health": one per slot (ok / warning / blocking) and
// one cluster summary (subject "") carrying the oldest-slot lag.
std::vector<Finding> EvaluateSlots(const SlotSnapshot& snap, const SlotThresholds& t);

// The statement that drops the slot (quoted), for remedies.
std::string DropSlotStatement(const std::string& slot_name);

}  // namespace pgshift::checks
