// The source's tablespaces, and what a physical copy must do about them.
//
// A tablespace with a directory of its own (CREATE TABLESPACE ... LOCATION
// '/path') keeps its files outside the data directory: a base backup must
// map it to a directory of the target's (pg_basebackup --tablespace-mapping)
// or, on the same host, the copy collides with the source's files. An
// in-place one (LOCATION '' with allow_in_place_tablespaces) lives inside
// the data directory, pg_tblspc/<oid>, and is copied with it; but a server
// recovering with such a directory stops (PANIC) unless it runs with
// allow_in_place_tablespaces = on. Free functions; ReadTablespaces is the
// only one that reads a server.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "checks/finding.h"
#include "pg/conn.h"

namespace pgshift::checks {

// The blocking finding of a provider that finds a tablespace the source
// created after the base backup, which the target therefore has no copy of.
inline constexpr const char* kTablespaceCreatedDuringSync = "tablespace_created_during_sync";

struct TablespaceInfo {
  int64_t oid = 0;
  std::string name;
  std::string location;  // pg_tablespace_location(): absolute, or pg_tblspc/<oid> when in place
  bool in_place = false;
};

// Every tablespace but pg_default and pg_global, by oid.
Result<std::vector<TablespaceInfo>> ReadTablespaces(PgConn& conn);

// Where the target keeps the files of tablespace `oid` under `tablespace_dir`.
std::string MappedTablespaceDir(const std::string& tablespace_dir, int64_t oid);

// id "tablespaces", one finding per tablespace (ok when none). A tablespace
// with its own directory is ok when `tablespace_dir` (where the target puts
// them, "" when unknown: a dry run) says where it goes, else a warning; an
// in-place one is ok when `target_settings` turn allow_in_place_tablespaces
// on, else a warning.
std::vector<Finding> EvaluateTablespaces(const std::vector<TablespaceInfo>& tablespaces,
                                         const std::string& tablespace_dir,
                                         const std::map<std::string, std::string>& target_settings);

}  // namespace pgshift::checks
