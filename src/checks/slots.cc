#include "checks/slots.h"

#include "checks/server_scan.h"

namespace pgshift::checks {

Result<SlotSnapshot> ReadSlots(PgConn& source) {
  PGSHIFT_ASSIGN_OR_RETURN(
      Rows rows,
      source.Query("select pg_current_wal_lsn()::text as current_lsn, s.slot_name, s.slot_type, "
                   "coalesce(s.plugin, '') as plugin, coalesce(s.database, '') as database, "
                   "s.active, coalesce(s.wal_status, '') as wal_status, s.safe_wal_size, "
                   "s.restart_lsn::text as restart_lsn, "
                   "s.confirmed_flush_lsn::text as confirmed_flush_lsn "
                   "from (select 1) one left join pg_replication_slots s on true "
                   "order by s.slot_name"));
  SlotSnapshot snap;
  if (rows.empty()) return Internal("pg_current_wal_lsn() returned no row");
  PGSHIFT_ASSIGN_OR_RETURN(snap.current_lsn, Lsn::Parse(rows.Str(0, "current_lsn")));
  for (size_t i = 0; i < rows.size(); ++i) {
    if (!rows.Get(i, "slot_name")) continue;  // the left join's row when there are no slots
    SlotInfo s;
    s.name = rows.Str(i, "slot_name");
    s.slot_type = rows.Str(i, "slot_type");
    s.plugin = rows.Str(i, "plugin");
    s.database = rows.Str(i, "database");
    s.active = rows.Bool(i, "active");
    s.wal_status = rows.Str(i, "wal_status");
    if (rows.Get(i, "safe_wal_size")) s.safe_wal_size = rows.Int(i, "safe_wal_size");
    if (auto v = rows.Get(i, "restart_lsn")) {
      PGSHIFT_ASSIGN_OR_RETURN(s.restart_lsn, Lsn::Parse(*v));
    }
    if (auto v = rows.Get(i, "confirmed_flush_lsn")) {
      PGSHIFT_ASSIGN_OR_RETURN(s.confirmed_flush_lsn, Lsn::Parse(*v));
    }
    snap.slots.push_back(std::move(s));
  }
  return snap;
}

uint64_t RetainedBytes(const SlotInfo& s, Lsn current) {
  return s.restart_lsn ? LsnDiff(current, *s.restart_lsn) : 0;
}

std::optional<uint64_t> ConsumerLagBytes(const SlotInfo& s, Lsn current) {
  if (!s.confirmed_flush_lsn) return std::nullopt;
  return LsnDiff(current, *s.confirmed_flush_lsn);
}

std::string DropSlotStatement(const std::string& slot_name) {
  return "SELECT pg_drop_replication_slot(" + QuoteLiteral(slot_name) + ");";
}

namespace {

nlohmann::json SlotValue(const SlotInfo& s, Lsn current) {
  nlohmann::json v = {{"type", s.slot_type},
                      {"active", s.active},
                      {"wal_status", s.wal_status},
                      {"retained_bytes", RetainedBytes(s, current)}};
  v["safe_wal_size"] = s.safe_wal_size ? nlohmann::json(*s.safe_wal_size) : nlohmann::json();
  auto lag = ConsumerLagBytes(s, current);
  v["consumer_lag_bytes"] = lag ? nlohmann::json(*lag) : nlohmann::json();
  if (!s.plugin.empty()) v["plugin"] = s.plugin;
  if (!s.database.empty()) v["database"] = s.database;
  return v;
}

}  // namespace

std::vector<Finding> EvaluateSlots(const SlotSnapshot& snap, const SlotThresholds& t) {
  std::vector<Finding> out;
  const SlotInfo* oldest = nullptr;
  uint64_t oldest_bytes = 0;
  for (const SlotInfo& s : snap.slots) {
    const uint64_t retained = RetainedBytes(s, snap.current_lsn);
    if (!oldest || retained > oldest_bytes) {
      oldest = &s;
      oldest_bytes = retained;
    }
    Finding f;
    f.id = "slot_health";
    f.subject = s.name;
    f.value = SlotValue(s, snap.current_lsn);
    f.threshold = {{"inactive_retained_bytes", t.inactive_retained_bytes}};
    const std::string what = s.slot_type + " slot '" + s.name + "'";
    if (s.wal_status == "lost") {
      f.severity = Severity::kBlocking;
      f.message = what + " has lost required WAL; its consumer can no longer continue";
      f.remedy = "re-create the consumer's slot and resynchronise it, then drop the lost slot: " +
                 DropSlotStatement(s.name);
    } else if (!s.active && retained > t.inactive_retained_bytes) {
      f.severity = Severity::kWarning;
      f.message = what + " is inactive and retains " + std::to_string(retained) + " bytes (" +
                  FormatBytes(retained) + ") of WAL: the likely cause of WAL growth and lag";
      f.remedy = "reconnect its consumer, or if it is abandoned drop it: " +
                 DropSlotStatement(s.name) + " (pgshift drops a slot only on explicit request)";
    } else if (s.wal_status == "unreserved") {
      f.severity = Severity::kWarning;
      f.message = what + " is past max_slot_wal_keep_size and will lose WAL at the next checkpoint";
      f.remedy = "let its consumer catch up now, or raise max_slot_wal_keep_size";
    } else {
      f.severity = Severity::kOk;
      f.message = what + (s.active ? " is active" : " is inactive") + ", retains " +
                  FormatBytes(retained);
    }
    out.push_back(std::move(f));
  }
  Finding sum;
  sum.id = "slot_health";
  sum.severity = Severity::kOk;
  sum.threshold = {{"inactive_retained_bytes", t.inactive_retained_bytes}};
  if (oldest) {
    sum.value = {{"slots", snap.slots.size()},
                 {"oldest_slot", oldest->name},
                 {"oldest_slot_lag_bytes", oldest_bytes}};
    sum.message = std::to_string(snap.slots.size()) + " replication slot(s); oldest slot lag " +
                  std::to_string(oldest_bytes) + " bytes (" + FormatBytes(oldest_bytes) +
                  ") on '" + oldest->name + "'";
  } else {
    sum.value = {{"slots", 0}, {"oldest_slot_lag_bytes", 0}};
    sum.message = "no replication slots on the source";
  }
  out.push_back(std::move(sum));
  return out;
}

}  // namespace pgshift::checks
