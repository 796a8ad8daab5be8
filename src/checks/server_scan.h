// Helpers shared by the checks: walking every database of a server through
// one connection's parameters, and small JSON/format utilities.
// Stateless free functions; thread-safe as long as each PgConn is used by one thread.
#pragma once

#include <functional>
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

// Lends a session on database `db` of the server being read; the pointer is
// valid until the next call. Lets a caller that already holds sessions on
// each database (new backends are dear) have a check use them.
using DatabaseSessions = std::function<Result<PgConn*>(const std::string& db)>;

// DatabaseSessions that opens a new connection per call (ConnectSameServer),
// each closed at the next call or when the last copy of the function goes.
DatabaseSessions NewSessionsLike(PgConn& conn);

// The database `conn` is connected to.
std::string CurrentDatabase(PgConn& conn);

// "12.3 MiB" for messages.
std::string FormatBytes(uint64_t bytes);

}  // namespace pgshift::checks
