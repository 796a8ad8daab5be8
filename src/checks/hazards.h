// Hazards on the source that a physical migration must know about:
// unlogged tables (their data never reaches a physical replica; blocking),
// prepared transactions, long-running transactions, tables without a primary
// key or replica identity and large objects (what reverse replication cannot
// carry), and a server version or CPU architecture that differs from the
// target's.
// Free functions; each scans every connectable database where relevant.
#pragma once

#include <string>
#include <vector>

#include "checks/finding.h"
#include "pg/conn.h"

namespace pgshift::checks {

struct HazardOptions {
  int64_t long_txn_seconds = 300;  // transactions open longer than this are flagged
};

// id "unlogged_tables": blocking per unlogged table (value: has_rows, estimated rows).
Result<std::vector<Finding>> CheckUnloggedTables(PgConn& source);
// id "prepared_xacts": warning per prepared transaction.
Result<std::vector<Finding>> CheckPreparedXacts(PgConn& source);
// id "long_txns": warning per client transaction open longer than the option.
Result<std::vector<Finding>> CheckLongTransactions(PgConn& source, const HazardOptions& opts);
// id "no_pk_tables": warning per table without primary key and without a usable replica identity.
Result<std::vector<Finding>> CheckNoPrimaryKey(PgConn& source);
// id "large_objects": warning per database holding large objects (reverse
// replication cannot carry them).
Result<std::vector<Finding>> CheckLargeObjects(PgConn& source);

struct ServerIdentity {
  int major = 0;     // server_version_num / 10000
  std::string arch;  // "x86_64", ... ("" = unknown)
};
Result<ServerIdentity> ReadServerIdentity(PgConn& conn);
// id "version": blocking when major versions or architectures differ.
std::vector<Finding> CompareVersion(const ServerIdentity& source, const ServerIdentity& target,
                                    const std::string& target_origin);

// An "ok" finding for `id` saying what was checked, when `findings` is empty.
void AddOkIfClean(std::vector<Finding>& findings, const std::string& id, const std::string& message,
                  nlohmann::json value = nullptr);

}  // namespace pgshift::checks
