// LocalEnv's reverse replication (DESIGN.md §2, rollback after writes): in
// each database the promoted target publishes every table (publication
// pgshift_reverse) over a logical slot of its own, and the fenced source
// subscribes to it, so writes made on the target flow back to the source
// until a rollback or finalize.
//
// Why the fence lets the subscription write and nobody else: the fence
// (fence.h) rejects every login role but pgshift's in pg_hba.conf and
// terminates client backends. The subscription's apply worker is a
// background worker of the source's own postmaster: it never logs in to
// the source (pg_hba.conf does not see it), it runs as the subscription's
// owner, pgshift's role (the session that creates it), its backend_type is
// not 'client backend' (the fence's sweep leaves it alone), and it connects
// out to the target, whose pg_hba.conf is the target's own.
#include <set>

#include "checks/hazards.h"
#include "checks/params.h"
#include "checks/server_scan.h"
#include "common/clock.h"
#include "common/faults.h"
#include "provider/local/local_env.h"

namespace pgshift {
namespace {

constexpr const char* kPublication = "pgshift_reverse";
// The output plugin the subscription reads with.
constexpr const char* kReversePlugin = "pgoutput";
// Every database a client can use (templates are not).
constexpr const char* kDatabasesSql =
    "select oid::text as oid, datname from pg_database where datallowconn and not datistemplate "
    "order by datname";
// Every column of every user table, as the subscription applies into them.
constexpr const char* kColumnsSql =
    "select c.oid::regclass::text || '.' || quote_ident(a.attname) || ' ' || "
    "format_type(a.atttypid, a.atttypmod) as col from pg_class c "
    "join pg_namespace n on n.oid = c.relnamespace join pg_attribute a on a.attrelid = c.oid "
    "where c.relkind in ('r', 'p') and n.nspname not in ('pg_catalog', 'information_schema') "
    "and n.nspname not like 'pg_toast%' and n.nspname not like 'pg_temp%' and a.attnum > 0 "
    "and not a.attisdropped order by 1";
// AdvanceSourceSlot pads the source's WAL a segment (16 MB by default) at a
// time; this many more rounds than the distance needs mean something else
// is wrong.
constexpr uint64_t kWalSegmentBytes = 16 * 1024 * 1024;
constexpr int kExtraPadRounds = 4;

checks::Finding Obstacle(const std::string& subject, const std::string& message,
                         const std::string& remedy) {
  return {.id = "reverse_replication",
          .severity = checks::Severity::kBlocking,
          .subject = subject,
          .message = message,
          .remedy = remedy};
}

std::set<std::string> Column(const Rows& r, const std::string& name) {
  std::set<std::string> out;
  for (size_t i = 0; i < r.size(); ++i) out.insert(r.Str(i, name));
  return out;
}

}  // namespace

std::string LocalEnv::ReverseName(const std::string& db_oid) const {
  return SlotNameFor(id_) + "_rev_" + db_oid;
}

Result<std::vector<LocalEnv::ReverseDb>> LocalEnv::ReverseDatabases() {
  PGSHIFT_ASSIGN_OR_RETURN(PgConn * t, Target());
  PGSHIFT_ASSIGN_OR_RETURN(Rows r, t->Query(kDatabasesSql));
  std::vector<ReverseDb> out;
  for (size_t i = 0; i < r.size(); ++i) out.push_back({r.Str(i, "oid"), r.Str(i, "datname")});
  return out;
}

Result<std::vector<checks::Finding>> LocalEnv::ReverseReplicationFindings() {
  PGSHIFT_ASSIGN_OR_RETURN(PgConn * t, Target());
  std::vector<checks::Finding> out;
  PGSHIFT_ASSIGN_OR_RETURN(Rows facts, t->Query("select current_setting('wal_level') as wl"));
  if (facts.Str(0, "wl") != "logical") {
    out.push_back(Obstacle("wal_level",
                           "the target runs with wal_level " + facts.Str(0, "wl") +
                               ": it cannot publish its writes to the source",
                           "set wal_level = logical on the source (the target inherits it)"));
  }
  // A subscription per database must fit the source's settings, besides
  // what it runs already: short, CREATE SUBSCRIPTION would succeed and its
  // apply worker never start.
  PGSHIFT_ASSIGN_OR_RETURN(
      auto capacity,
      OnSource<std::vector<checks::Finding>>(
          [&](PgConn& c) -> Result<std::vector<checks::Finding>> {
            PGSHIFT_ASSIGN_OR_RETURN(checks::Settings settings, checks::ReadSettings(c));
            PGSHIFT_ASSIGN_OR_RETURN(checks::ReverseReplicationLoad load,
                                     checks::ReadReverseReplicationLoad(c, ReverseName("")));
            return checks::ReverseReplicationCapacity(settings, load, checks::Severity::kBlocking);
          }));
  for (const auto& f : capacity) {
    if (f.severity != checks::Severity::kOk)
      out.push_back(Obstacle(f.subject, f.message, f.remedy));
  }
  // The same scans as preflight's, on the target as it is now.
  PGSHIFT_ASSIGN_OR_RETURN(auto nopk, checks::CheckNoPrimaryKey(*t));
  for (const auto& f : nopk) {
    if (f.severity == checks::Severity::kOk) continue;
    out.push_back(Obstacle(f.subject,
                           "table " + f.subject +
                               " has no primary key or replica identity: published to the "
                               "source, the target would refuse its UPDATE and DELETE",
                           f.remedy));
  }
  PGSHIFT_ASSIGN_OR_RETURN(auto unlogged, checks::CheckUnloggedTables(*t));
  for (const auto& f : unlogged) {
    if (f.severity == checks::Severity::kOk) continue;
    out.push_back(Obstacle(
        f.subject,
        "table " + f.subject + " is UNLOGGED: logical replication does not carry its writes",
        f.remedy));
  }
  PGSHIFT_ASSIGN_OR_RETURN(auto lobs, checks::CheckLargeObjects(*t));
  for (const auto& f : lobs) {
    if (f.severity == checks::Severity::kOk) continue;
    out.push_back(Obstacle(f.subject, f.message, f.remedy));
  }
  // DDL since the cutover: the subscription applies into the source's tables
  // by name, so every column the target has must be on the source as it is.
  PGSHIFT_ASSIGN_OR_RETURN(auto dbs, ReverseDatabases());
  for (const auto& db : dbs) {
    PGSHIFT_ASSIGN_OR_RETURN(std::string tci, TargetConninfo(db.name));
    PGSHIFT_ASSIGN_OR_RETURN(std::string sci, SourceConninfo(db.name));
    PGSHIFT_ASSIGN_OR_RETURN(auto tc, OpenSession(tci));
    auto sc = OpenSession(sci);
    if (!sc.ok()) {
      out.push_back(Obstacle(db.name,
                             "database " + db.name +
                                 " on the target cannot be reached on the "
                                 "source (created after the cutover?): " +
                                 sc.status().message(),
                             "create it on the source, or roll back discarding the target's "
                             "writes"));
      continue;
    }
    PGSHIFT_ASSIGN_OR_RETURN(Rows tcols, tc->Query(kColumnsSql));
    PGSHIFT_ASSIGN_OR_RETURN(Rows scols, (*sc)->Query(kColumnsSql));
    const std::set<std::string> on_target = Column(tcols, "col");
    const std::set<std::string> on_source = Column(scols, "col");
    for (const auto& c : on_target) {
      if (on_source.count(c)) continue;
      out.push_back(Obstacle(db.name + "." + c,
                             "the target's column " + c + " (database " + db.name +
                                 ") is not on the source as it is: schema changed since the "
                                 "cutover, and the source cannot apply the target's writes to it",
                             "apply the same DDL on the source, or roll back discarding the "
                             "target's writes"));
    }
    for (const auto& c : on_source) {
      if (on_target.count(c)) continue;
      out.push_back(Obstacle(db.name + "." + c,
                             "the source's column " + c + " (database " + db.name +
                                 ") is gone from the target or changed: schema changed since "
                                 "the cutover",
                             "apply the same DDL on the source, or roll back discarding the "
                             "target's writes"));
    }
  }
  return out;
}

Status LocalEnv::EnsureReverseReplication() {
  PGSHIFT_ASSIGN_OR_RETURN(auto dbs, ReverseDatabases());
  for (const auto& db : dbs) {
    const std::string name = ReverseName(db.oid);
    PGSHIFT_ASSIGN_OR_RETURN(std::string tci, TargetConninfo(db.name));
    PGSHIFT_ASSIGN_OR_RETURN(auto tc, OpenSession(tci));
    PGSHIFT_ASSIGN_OR_RETURN(
        Rows have,
        tc->Query("select exists(select 1 from pg_publication where pubname = $1) as pub, "
                  "exists(select 1 from pg_replication_slots where slot_name = $2) as slot",
                  {kPublication, name}));
    if (!have.Bool(0, "pub")) {
      PGSHIFT_RETURN_IF_ERROR(tc->Exec(std::string("create publication ") +
                                       QuoteIdent(kPublication) + " for all tables"));
    }
    if (!have.Bool(0, "slot")) {
      // Made before any client write is released: its consistent point
      // follows the promotion, so every client write on the target is
      // decoded and nothing the source already has is.
      PGSHIFT_RETURN_IF_ERROR(
          tc->Exec("select pg_create_logical_replication_slot($1, $2)", {name, kReversePlugin}));
    }
    PGSHIFT_ASSIGN_OR_RETURN(std::string sci, SourceConninfo(db.name));
    auto sc = OpenSession(sci);
    if (!sc.ok()) return sc.status().Wrap("source database " + db.name);
    PGSHIFT_ASSIGN_OR_RETURN(
        Rows sub, (*sc)->Query("select exists(select 1 from pg_subscription where subname = $1 "
                               "and subdbid = (select oid from pg_database where datname = "
                               "current_database())) as sub",
                               {name}));
    if (!sub.Bool(0, "sub")) {
      PGSHIFT_ASSIGN_OR_RETURN(std::string conn, WithConninfo(tci, {{"application_name", name}}));
      // synchronous_commit on: the source reports a transaction applied
      // once it is durable there, so a rollback's wait ends at once
      // instead of at the WAL writer's next cycle.
      PGSHIFT_RETURN_IF_ERROR((*sc)->Exec(
          "create subscription " + QuoteIdent(name) + " connection " + QuoteLiteral(conn) +
          " publication " + QuoteIdent(kPublication) +
          " with (copy_data = false, create_slot = false, slot_name = " + QuoteLiteral(name) +
          ", enabled = true, synchronous_commit = 'on')"));
    }
    PGSHIFT_RETURN_IF_ERROR(FaultPoint("reverse_replication_db"));
  }
  return Status::OK();
}

Result<ReverseReplicationState> LocalEnv::InspectReverseReplication(bool mark) {
  ReverseReplicationState st;
  const std::string prefix = ReverseName("");
  PGSHIFT_ASSIGN_OR_RETURN(auto dbs, ReverseDatabases());
  PGSHIFT_ASSIGN_OR_RETURN(
      Rows sub, OnSource<Rows>([&](PgConn& c) {
        return c.Query(
            "select count(*) as n, coalesce(sum(x.apply_error_count), 0) as errors "
            "from pg_subscription s left join pg_stat_subscription_stats x on x.subid = s.oid "
            "where left(s.subname, length($1)) = $1 and s.subenabled",
            {prefix});
      }));
  PGSHIFT_ASSIGN_OR_RETURN(PgConn * t, Target());
  // Marked: a committed transaction whose message record follows every
  // transaction the target committed before it; its end LSN is what the
  // source must have applied. Committed synchronously, so the walsender can
  // send it at once. (pgoutput, the subscription's, skips it as empty.)
  PGSHIFT_ASSIGN_OR_RETURN(
      Rows at, t->Query(mark ? "select pg_logical_emit_message(true, 'pgshift', 'rollback')::text "
                               "as lsn from (select set_config('synchronous_commit', 'on', "
                               "false)) s"
                             : "select pg_current_wal_flush_lsn()::text as lsn"));
  PGSHIFT_ASSIGN_OR_RETURN(st.target_lsn, Lsn::Parse(at.Str(0, "lsn")));
  PGSHIFT_ASSIGN_OR_RETURN(
      Rows slots, t->Query("select count(*) as n, coalesce(min(confirmed_flush_lsn), '0/0')::text "
                           "as applied from pg_replication_slots "
                           "where left(slot_name, length($1)) = $1",
                           {prefix}));
  PGSHIFT_ASSIGN_OR_RETURN(st.applied_lsn, Lsn::Parse(slots.Str(0, "applied")));
  const auto n = static_cast<int64_t>(dbs.size());
  st.in_place = n > 0 && sub.Int(0, "n") == n && slots.Int(0, "n") == n;
  if (sub.Int(0, "errors") > 0) {
    st.apply_error = std::to_string(sub.Int(0, "errors")) +
                     " apply error(s) on the source's subscriptions (pg_stat_subscription_stats; "
                     "the source's server log names them)";
  }
  return st;
}

Status LocalEnv::DropReverseReplication() {
  const std::string prefix = ReverseName("");
  const bool target_up = target_.Running();
  if (SourceUp()) {
    PGSHIFT_ASSIGN_OR_RETURN(
        Rows subs, OnSource<Rows>([&](PgConn& c) {
          return c.Query(
              "select s.subname, d.datname from pg_subscription s join pg_database d on "
              "d.oid = s.subdbid where left(s.subname, length($1)) = $1",
              {prefix});
        }));
    for (size_t i = 0; i < subs.size(); ++i) {
      const std::string name = QuoteIdent(subs.Str(i, "subname"));
      PGSHIFT_ASSIGN_OR_RETURN(std::string sci, SourceConninfo(subs.Str(i, "datname")));
      PGSHIFT_ASSIGN_OR_RETURN(auto sc, OpenSession(sci));
      if (!target_up) {
        // DROP SUBSCRIPTION would try to drop the slot on a target that
        // is gone: detach it from its slot first.
        PGSHIFT_RETURN_IF_ERROR(sc->Exec("alter subscription " + name + " disable"));
        PGSHIFT_RETURN_IF_ERROR(sc->Exec("alter subscription " + name + " set (slot_name = none)"));
      }
      PGSHIFT_RETURN_IF_ERROR(sc->Exec("drop subscription if exists " + name));
    }
  }
  if (!target_up) return Status::OK();
  PGSHIFT_ASSIGN_OR_RETURN(auto dbs, ReverseDatabases());
  for (const auto& db : dbs) {
    PGSHIFT_ASSIGN_OR_RETURN(std::string tci, TargetConninfo(db.name));
    PGSHIFT_ASSIGN_OR_RETURN(auto tc, OpenSession(tci));
    PGSHIFT_RETURN_IF_ERROR(
        tc->Exec("select pg_drop_replication_slot(slot_name) from "
                 "pg_replication_slots where slot_name = $1 and not active",
                 {ReverseName(db.oid)}));
    PGSHIFT_RETURN_IF_ERROR(
        tc->Exec(std::string("drop publication if exists ") + QuoteIdent(kPublication)));
  }
  return Status::OK();
}

Result<int> LocalEnv::SyncSequencesToSource() { return CopySequences(/*onto_source=*/true); }

Result<int> LocalEnv::AlignSequencesWithSource() { return CopySequences(/*onto_source=*/false); }

Result<int> LocalEnv::CopySequences(bool onto_source) {
  PGSHIFT_ASSIGN_OR_RETURN(auto dbs, ReverseDatabases());
  int moved = 0;
  for (const auto& db : dbs) {
    PGSHIFT_ASSIGN_OR_RETURN(std::string tci, TargetConninfo(db.name));
    PGSHIFT_ASSIGN_OR_RETURN(std::string sci, SourceConninfo(db.name));
    PGSHIFT_ASSIGN_OR_RETURN(auto from, OpenSession(onto_source ? tci : sci));
    PGSHIFT_ASSIGN_OR_RETURN(
        Rows seqs, from->Query("select coalesce(json_agg(json_build_object('s', schemaname, 'q', "
                               "sequencename, 'v', last_value)), '[]')::text as j from "
                               "pg_sequences where last_value is not null"));
    if (seqs.Str(0, "j") == "[]") continue;
    PGSHIFT_ASSIGN_OR_RETURN(auto onto, OpenSession(onto_source ? sci : tci));
    // One statement per database: each sequence set to the other side's
    // last value, as used. Onto the source only those behind (or never
    // used): behind is below for an ascending sequence and above for a
    // descending one (increment < 0), so its next value is past every value
    // used. Onto the target every one that differs (it may be ahead).
    const std::string which = onto_source ? "p.last_value is null or (p.increment_by > 0 and "
                                            "p.last_value < t.v) or (p.increment_by < 0 and "
                                            "p.last_value > t.v)"
                                          : "p.last_value is distinct from t.v";
    PGSHIFT_ASSIGN_OR_RETURN(
        Rows set,
        onto->Query("select count(setval(format('%I.%I', t.s, t.q)::regclass, t.v, true)) as n "
                    "from json_to_recordset($1::json) as t(s text, q text, v bigint) "
                    "join pg_sequences p on p.schemaname = t.s and p.sequencename = t.q "
                    "where " +
                        which,
                    {seqs.Str(0, "j")}));
    moved += static_cast<int>(set.Int(0, "n"));
  }
  return moved;
}

Result<Lsn> LocalEnv::AdvanceSourceSlot(const std::string& slot, Lsn past) {
  PGSHIFT_ASSIGN_OR_RETURN(
      Rows where, OnSource<Rows>([&](PgConn& c) {
        return c.Query(
            "select database, pg_current_wal_flush_lsn()::text as flush "
            "from pg_replication_slots where slot_name = $1 and slot_type = 'logical'",
            {slot});
      }));
  if (where.empty()) return NotFound("no logical slot " + slot + " on the source");
  // A slot is advanced from a session in its own database.
  PGSHIFT_ASSIGN_OR_RETURN(std::string sci, SourceConninfo(where.Str(0, "database")));
  PGSHIFT_ASSIGN_OR_RETURN(auto sc, OpenSession(sci));
  PGSHIFT_ASSIGN_OR_RETURN(Lsn flush, Lsn::Parse(where.Str(0, "flush")));
  // Past `past` by WAL no decoder emits: a segment switch (flushed at once),
  // after a non-transactional message so that the switch always moves; the
  // slot is advanced past the message below.
  const int64_t rounds =
      static_cast<int64_t>(LsnDiff(past, flush) / kWalSegmentBytes) + kExtraPadRounds;
  for (int64_t i = 0; flush <= past; ++i) {
    if (i >= rounds) {
      return Internal("the source's WAL did not move past " + past.ToString() + " (at " +
                      flush.ToString() + ")");
    }
    PGSHIFT_RETURN_IF_ERROR(sc->Exec("select pg_logical_emit_message(false, 'pgshift', 'pad')"));
    PGSHIFT_ASSIGN_OR_RETURN(Rows sw, sc->Query("select pg_switch_wal()::text as s, "
                                                "pg_current_wal_flush_lsn()::text as flush"));
    PGSHIFT_ASSIGN_OR_RETURN(flush, Lsn::Parse(sw.Str(0, "flush")));
  }
  PGSHIFT_ASSIGN_OR_RETURN(Rows moved,
                           sc->Query("select end_lsn::text as lsn from "
                                     "pg_replication_slot_advance($1, pg_current_wal_flush_lsn())",
                                     {slot}));
  return Lsn::Parse(moved.Str(0, "lsn"));
}

}  // namespace pgshift
