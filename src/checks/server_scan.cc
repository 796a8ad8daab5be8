#include "checks/server_scan.h"

#include <cstdio>
#include <map>

namespace pgshift::checks {

Result<std::vector<std::string>> ListDatabases(PgConn& conn) {
  PGSHIFT_ASSIGN_OR_RETURN(Rows rows,
                           conn.Query("select datname from pg_database where datallowconn and "
                                      "datname <> 'template0' order by datname"));
  std::vector<std::string> out;
  for (size_t i = 0; i < rows.size(); ++i) out.push_back(rows.Str(i, "datname"));
  return out;
}

Result<std::unique_ptr<PgConn>> ConnectSameServer(PgConn& conn, const std::string& dbname) {
  PQconninfoOption* opts = PQconninfo(conn.raw());
  if (!opts) return Internal("libpq could not report the connection's parameters");
  std::map<std::string, std::string> kv;
  for (PQconninfoOption* o = opts; o->keyword; ++o) {
    if (o->val && *o->val) kv[o->keyword] = o->val;
  }
  PQconninfoFree(opts);
  kv["dbname"] = dbname;
  return PgConn::Connect(BuildConninfo(kv));
}

DatabaseSessions NewSessionsLike(PgConn& conn) {
  auto last = std::make_shared<std::unique_ptr<PgConn>>();
  return [&conn, last](const std::string& db) -> Result<PgConn*> {
    last->reset();
    PGSHIFT_ASSIGN_OR_RETURN(*last, ConnectSameServer(conn, db));
    return last->get();
  };
}

std::string CurrentDatabase(PgConn& conn) {
  const char* db = PQdb(conn.raw());
  return db ? db : "";
}

std::string FormatBytes(uint64_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  if (u == 0) {
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  } else {
    std::snprintf(buf, sizeof buf, "%.1f %s", v, kUnits[u]);
  }
  return buf;
}

}  // namespace pgshift::checks
