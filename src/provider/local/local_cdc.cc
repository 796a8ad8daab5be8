// LocalEnv's logical slots: reading them (with their consumers) on the
// source, and carrying them to the promoted target.
#include "provider/local/local_env.h"

namespace pgshift {
namespace {

std::vector<LogicalSlot> SlotsFrom(const Rows& r) {
  std::vector<LogicalSlot> out;
  for (size_t i = 0; i < r.size(); ++i) {
    LogicalSlot s{.name = r.Str(i, "slot_name"),
                  .plugin = r.Str(i, "plugin"),
                  .database = r.Str(i, "database"),
                  .confirmed_flush_lsn = r.Str(i, "cf"),
                  .restart_lsn = r.Str(i, "rl"),
                  .active = r.Bool(i, "active")};
    s.two_phase = r.Bool(i, "two_phase");
    s.active_pid = static_cast<int>(r.Int(i, "active_pid"));
    s.consumer_application_name = r.Str(i, "application_name");
    s.consumer_client_addr = r.Str(i, "client_addr");
    out.push_back(std::move(s));
  }
  return out;
}

// The consumer is the walsender's client (pg_stat_replication, keyed by pid).
constexpr const char* kLogicalSlotsSql =
    "select s.slot_name, s.plugin, s.database, s.confirmed_flush_lsn::text as cf, "
    "s.restart_lsn::text as rl, s.active, s.two_phase, coalesce(s.active_pid, 0) as active_pid, "
    "coalesce(r.application_name, '') as application_name, "
    "coalesce(host(r.client_addr) || ':' || r.client_port, '') as client_addr "
    "from pg_replication_slots s left join pg_stat_replication r on r.pid = s.active_pid "
    "where s.slot_type = 'logical' order by s.slot_name";

}  // namespace

Result<std::vector<LogicalSlot>> LocalEnv::LogicalSlots() {
  return OnSource<std::vector<LogicalSlot>>([](PgConn& c) -> Result<std::vector<LogicalSlot>> {
    PGSHIFT_ASSIGN_OR_RETURN(Rows r, c.Query(kLogicalSlotsSql));
    return SlotsFrom(r);
  });
}

Result<std::vector<LogicalSlot>> LocalEnv::TargetLogicalSlots() {
  PGSHIFT_ASSIGN_OR_RETURN(PgConn * c, Target());
  PGSHIFT_ASSIGN_OR_RETURN(Rows r, c->Query(kLogicalSlotsSql));
  return SlotsFrom(r);
}

Result<Lsn> LocalEnv::EnsureTargetLogicalSlot(const LogicalSlot& slot) {
  // A logical slot belongs to a database: create it from a session there.
  PGSHIFT_ASSIGN_OR_RETURN(std::string ci, TargetConninfo(slot.database));
  auto conn = OpenSession(ci);
  if (!conn.ok()) return conn.status().Wrap("target database " + slot.database);
  PgConn& c = **conn;
  PGSHIFT_ASSIGN_OR_RETURN(Rows have,
                           c.Query("select plugin, database, confirmed_flush_lsn::text as cf "
                                   "from pg_replication_slots where slot_name = $1",
                                   {slot.name}));
  if (!have.empty()) {
    if (have.Str(0, "plugin") != slot.plugin || have.Str(0, "database") != slot.database) {
      return FailedPrecondition("the target already has a slot named " + slot.name +
                                " with plugin " + have.Str(0, "plugin") + " in database " +
                                have.Str(0, "database") + ", not " + slot.plugin + " in " +
                                slot.database + "; drop it on the target, then retry");
    }
    return Lsn::Parse(have.Str(0, "cf"));
  }
  PGSHIFT_ASSIGN_OR_RETURN(
      Rows made, c.Query("select lsn::text as lsn from pg_create_logical_replication_slot("
                         "$1, $2, false, $3::boolean)",
                         {slot.name, slot.plugin, slot.two_phase ? "true" : "false"}));
  return Lsn::Parse(made.Str(0, "lsn"));
}

}  // namespace pgshift
