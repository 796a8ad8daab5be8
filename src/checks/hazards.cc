#include "checks/hazards.h"

#include "checks/install.h"
#include "checks/server_scan.h"

namespace pgshift::checks {

namespace {

Finding Make(const std::string& id, Severity sev, std::string subject, nlohmann::json value,
             nlohmann::json threshold, std::string message, std::string remedy) {
  Finding f;
  f.id = id;
  f.severity = sev;
  f.subject = std::move(subject);
  f.value = std::move(value);
  f.threshold = std::move(threshold);
  f.message = std::move(message);
  f.remedy = std::move(remedy);
  return f;
}

const char* kUserTables =
    "n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg_toast%' "
    "and n.nspname not like 'pg_temp%' and c.relkind in ('r', 'p')";

}  // namespace

void AddOkIfClean(std::vector<Finding>& findings, const std::string& id, const std::string& message,
                  nlohmann::json value) {
  if (!findings.empty()) return;
  findings.push_back(Make(id, Severity::kOk, "", std::move(value), nullptr, message, ""));
}

Result<std::vector<Finding>> CheckUnloggedTables(PgConn& source) {
  std::vector<Finding> out;
  PGSHIFT_ASSIGN_OR_RETURN(std::vector<std::string> dbs, ListDatabases(source));
  for (const std::string& db : dbs) {
    PGSHIFT_ASSIGN_OR_RETURN(auto conn, ConnectSameServer(source, db));
    PGSHIFT_ASSIGN_OR_RETURN(
        Rows rows,
        conn->Query(std::string("select n.nspname, c.relname, c.oid::regclass::text as qname, "
                                "greatest(c.reltuples, 0)::bigint as est from pg_class c "
                                "join pg_namespace n on n.oid = c.relnamespace where ") +
                    kUserTables + " and c.relpersistence = 'u' order by 1, 2"));
    for (size_t i = 0; i < rows.size(); ++i) {
      const std::string qname = rows.Str(i, "qname");
      bool has_rows = false;
      if (rows.Get(i, "qname")) {
        auto probe = conn->Query("select exists(select 1 from " + qname + ") as has_rows");
        if (probe.ok()) has_rows = probe->Bool(0, "has_rows");
      }
      const std::string subject = db + "." + rows.Str(i, "nspname") + "." + rows.Str(i, "relname");
      out.push_back(
          Make("unlogged_tables", Severity::kBlocking, subject,
               {{"has_rows", has_rows}, {"estimated_rows", rows.Int(i, "est")}}, nullptr,
               "table " + subject + " is UNLOGGED" + (has_rows ? " and has rows" : "") +
                   ": its data does not reach a physical replica and is empty after promotion",
               "ALTER TABLE " + qname + " SET LOGGED; (in database " + db +
                   "), or override this finding if losing its contents is acceptable"));
    }
  }
  AddOkIfClean(out, "unlogged_tables", "no unlogged tables on the source");
  return out;
}

Result<std::vector<Finding>> CheckPreparedXacts(PgConn& source) {
  PGSHIFT_ASSIGN_OR_RETURN(Rows rows,
                           source.Query("select gid, database, owner, "
                                        "extract(epoch from now() - prepared)::float8 as age_s "
                                        "from pg_prepared_xacts order by prepared"));
  std::vector<Finding> out;
  for (size_t i = 0; i < rows.size(); ++i) {
    const std::string gid = rows.Str(i, "gid");
    out.push_back(Make(
        "prepared_xacts", Severity::kWarning, gid,
        {{"database", rows.Str(i, "database")}, {"age_seconds", rows.Double(i, "age_s")}}, nullptr,
        "prepared transaction '" + gid + "' in database " + rows.Str(i, "database") +
            " has been open " + std::to_string(static_cast<int64_t>(rows.Double(i, "age_s"))) +
            " s; it holds locks and moves to the target unresolved",
        "resolve it with COMMIT PREPARED " + QuoteLiteral(gid) + " or ROLLBACK PREPARED " +
            QuoteLiteral(gid) + " before the cutover"));
  }
  AddOkIfClean(out, "prepared_xacts", "no prepared transactions on the source");
  return out;
}

Result<std::vector<Finding>> CheckLongTransactions(PgConn& source, const HazardOptions& opts) {
  PGSHIFT_ASSIGN_OR_RETURN(
      Rows rows, source.Query("select pid, datname, usename, state, "
                              "extract(epoch from now() - xact_start)::float8 as age_s, "
                              "left(query, 120) as query from pg_stat_activity "
                              "where backend_type = 'client backend' and xact_start is not null "
                              "and pid <> pg_backend_pid() "
                              "and now() - xact_start > make_interval(secs => $1::float8) "
                              "order by xact_start",
                              {std::to_string(opts.long_txn_seconds)}));
  std::vector<Finding> out;
  for (size_t i = 0; i < rows.size(); ++i) {
    const std::string pid = rows.Str(i, "pid");
    const int64_t age = static_cast<int64_t>(rows.Double(i, "age_s"));
    out.push_back(Make("long_txns", Severity::kWarning, "pid " + pid,
                       {{"age_seconds", age},
                        {"database", rows.Str(i, "datname")},
                        {"user", rows.Str(i, "usename")},
                        {"state", rows.Str(i, "state")},
                        {"query", rows.Str(i, "query")}},
                       {{"max_seconds", opts.long_txn_seconds}},
                       "transaction in backend " + pid + " (" + rows.Str(i, "usename") + "@" +
                           rows.Str(i, "datname") + ", " + rows.Str(i, "state") +
                           ") has been open " + std::to_string(age) +
                           " s; it would delay the cutover's quiesce",
                       "finish it, or SELECT pg_terminate_backend(" + pid + ");"));
  }
  AddOkIfClean(
      out, "long_txns",
      "no client transaction open longer than " + std::to_string(opts.long_txn_seconds) + " s",
      {{"max_seconds", opts.long_txn_seconds}});
  return out;
}

Result<std::vector<Finding>> CheckNoPrimaryKey(PgConn& source) {
  std::vector<Finding> out;
  PGSHIFT_ASSIGN_OR_RETURN(std::vector<std::string> dbs, ListDatabases(source));
  for (const std::string& db : dbs) {
    PGSHIFT_ASSIGN_OR_RETURN(auto conn, ConnectSameServer(source, db));
    PGSHIFT_ASSIGN_OR_RETURN(
        Rows rows,
        conn->Query(std::string("select n.nspname, c.relname, c.oid::regclass::text as qname, "
                                "c.relreplident from pg_class c join pg_namespace n on "
                                "n.oid = c.relnamespace where ") +
                    kUserTables +
                    " and c.relkind = 'r' and not exists (select 1 from pg_index i where "
                    "i.indrelid = c.oid and (i.indisprimary or (i.indisreplident and "
                    "c.relreplident = 'i'))) and c.relreplident <> 'f' order by 1, 2"));
    for (size_t i = 0; i < rows.size(); ++i) {
      const std::string subject = db + "." + rows.Str(i, "nspname") + "." + rows.Str(i, "relname");
      out.push_back(Make("no_pk_tables", Severity::kWarning, subject,
                         {{"replica_identity", rows.Str(i, "relreplident")}}, nullptr,
                         "table " + subject +
                             " has no primary key and no replica identity: UPDATE/DELETE "
                             "cannot be replicated back to the source (reverse replication)",
                         "add a primary key, or ALTER TABLE " + rows.Str(i, "qname") +
                             " REPLICA IDENTITY FULL; (in database " + db + ")"));
    }
  }
  AddOkIfClean(out, "no_pk_tables", "every user table has a primary key or replica identity");
  return out;
}

Result<std::vector<Finding>> CheckLargeObjects(PgConn& source) {
  std::vector<Finding> out;
  PGSHIFT_ASSIGN_OR_RETURN(std::vector<std::string> dbs, ListDatabases(source));
  for (const std::string& db : dbs) {
    PGSHIFT_ASSIGN_OR_RETURN(auto conn, ConnectSameServer(source, db));
    PGSHIFT_ASSIGN_OR_RETURN(Rows rows,
                             conn->Query("select count(*) as n from pg_largeobject_metadata"));
    const int64_t n = rows.Int(0, "n");
    if (n == 0) continue;
    out.push_back(Make("large_objects", Severity::kWarning, db, {{"large_objects", n}}, nullptr,
                       "database " + db + " holds " + std::to_string(n) +
                           " large object(s): logical replication does not carry them, so "
                           "reverse replication is off and a rollback after the switch "
                           "discards the target's writes",
                       "store the data in bytea columns, or accept that a rollback after "
                       "writes needs --discard-target-writes"));
  }
  AddOkIfClean(out, "large_objects", "no large objects on the source");
  return out;
}

Result<ServerIdentity> ReadServerIdentity(PgConn& conn) {
  PGSHIFT_ASSIGN_OR_RETURN(
      Rows rows, conn.Query("select current_setting('server_version_num')::int / 10000 as major, "
                            "version() as version"));
  return ServerIdentity{static_cast<int>(rows.Int(0, "major")),
                        ArchitectureFromVersionString(rows.Str(0, "version"))};
}

std::vector<Finding> CompareVersion(const ServerIdentity& source, const ServerIdentity& target,
                                    const std::string& target_origin) {
  std::vector<Finding> out;
  nlohmann::json value = {{"source_major", source.major},
                          {"target_major", target.major},
                          {"source_arch", source.arch},
                          {"target_arch", target.arch}};
  if (source.major != target.major) {
    out.push_back(Make("version", Severity::kBlocking, "server_version", value, source.major,
                       "source runs PostgreSQL " + std::to_string(source.major) +
                           " but the target (" + target_origin + ") is PostgreSQL " +
                           std::to_string(target.major) +
                           ": physical replication needs the same major version",
                       "use a target installation of PostgreSQL " + std::to_string(source.major)));
  }
  if (source.arch.empty() || target.arch.empty()) {
    out.push_back(Make("version", Severity::kWarning, "architecture", value, nullptr,
                       "could not determine the CPU architecture of " +
                           std::string(source.arch.empty() ? "the source" : "the target"),
                       "make sure both run on the same architecture; WAL is not portable"));
  } else if (source.arch != target.arch) {
    out.push_back(Make("version", Severity::kBlocking, "architecture", value, source.arch,
                       "source runs on " + source.arch + " but the target (" + target_origin +
                           ") is built for " + target.arch + ": WAL is not portable across them",
                       "use a target installation built for " + source.arch));
  }
  AddOkIfClean(
      out, "version",
      "source and target: PostgreSQL " + std::to_string(source.major) + " on " + source.arch,
      value);
  return out;
}

}  // namespace pgshift::checks
