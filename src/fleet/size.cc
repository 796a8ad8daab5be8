#include "fleet/size.h"

#include "pg/conn.h"

namespace pgshift::fleet {

Result<int64_t> MeasureClusterSize(const std::string& conninfo) {
  PGSHIFT_ASSIGN_OR_RETURN(auto conn, PgConn::Connect(conninfo, kSizeConnectTimeoutS));
  PGSHIFT_ASSIGN_OR_RETURN(
      Rows r, conn->Query("SELECT coalesce(sum(pg_database_size(oid)), 0)::bigint AS bytes FROM "
                          "pg_database WHERE has_database_privilege(oid, 'CONNECT')"));
  if (r.empty()) return Internal("no answer to the size query");
  return r.Int(0, "bytes");
}

}  // namespace pgshift::fleet
