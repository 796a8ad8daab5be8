// Helpers shared by the checks: walking every database of a server through
// one connection's parameters, and small JSON/format utilities.
// Stateless free functions; thread-safe as long as each PgConn is used by one thread.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "pg/conn.h"

namespace pgshift::checks {

// Databases that accept connections (template0 excluded), sorted by name.
Result<std::vector<std::string>> ListDatabases(PgConn& conn);

// A new connection to `dbname` on the same server, with the same user,
// host, port and password as `conn`.
Result<std::unique_ptr<PgConn>> ConnectSameServer(PgConn& conn, const std::string& dbname);

// The database `conn` is connected to.
std::string CurrentDatabase(PgConn& conn);

// "12.3 MiB" for messages.
std::string FormatBytes(uint64_t bytes);

}  // namespace pgshift::checks
