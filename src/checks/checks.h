// pgshift's replication validation suite: the entry points the workflow
// engine and the CLI call. Each check yields Findings (finding.h) with an
// id, a severity, the measured value, the threshold, a one-line message and
// a remedy; every check adds an "ok" finding when it is clean, so a report
// lists what was checked.
//
//   preflight  RunPreflight   source queries + the target installation on disk; creates nothing
//   sync       SyncMonitor    (sync_monitor.h) lag, rates, slot health, the sustained-lag gate
//   validate   RunValidate    against the running target (a hot standby)
//   snapshot   RunDataParity  (parity.h) per-table counts and checksums after promotion
//
// The more specific pieces (slots.h, params.h, extensions.h, hazards.h,
// tablespaces.h, install.h) are public too. Functions are thread-safe; each PgConn must be
// used by one thread at a time.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "checks/finding.h"
#include "checks/hazards.h"
#include "checks/parity.h"
#include "checks/server_scan.h"
#include "checks/slots.h"
#include "checks/sync_monitor.h"
#include "checks/tablespaces.h"
#include "pg/conn.h"

namespace pgshift::checks {

struct TargetPlan {
  // PostgreSQL installation of the target (its bin dir, or the root holding bin/);
  // "" = DefaultPgBinDir().
  std::string bin_dir;
  // postgresql.conf overrides the target will run with; a physical replica
  // otherwise inherits the source's settings.
  std::map<std::string, std::string> settings;
  // Where the target keeps the tablespaces that have directories of their
  // own (one subdirectory per oid, MappedTablespaceDir); "": not known here
  // (a dry run), each is a warning to plan for.
  std::string tablespace_dir;
};

struct CheckOptions {
  SlotThresholds slots;
  HazardOptions hazards;
  // Validate: where each source database's pg_extension is read. Empty: a new
  // connection per database. A hot standby in sync has the same catalogs, so
  // its sessions may stand in (LocalEnv lends the cutover's standby sessions).
  DatabaseSessions source_databases;
};

// Preflight: slot_health, params (standby minimums, post-promotion needs,
// other differences, source capacity), extensions, unlogged_tables,
// prepared_xacts, long_txns, no_pk_tables, tablespaces, version. Creates nothing.
Result<std::vector<Finding>> RunPreflight(PgConn& source, const TargetPlan& target,
                                          const CheckOptions& options);
Result<std::vector<Finding>> RunPreflight(PgConn& source, const TargetPlan& target);

// Validate: params and extensions against the running target (pg_settings,
// pg_available_extension_versions on the hot standby), version, slot health.
Result<std::vector<Finding>> RunValidate(PgConn& source, PgConn& target, const TargetPlan& plan,
                                         const CheckOptions& options);
Result<std::vector<Finding>> RunValidate(PgConn& source, PgConn& target, const TargetPlan& plan);

// `pgshift check --source CONNINFO [--target-install DIR] [--json]`: a
// preflight dry run. Returns {"findings":[...]}.
Result<nlohmann::json> RunCheckCommand(const std::string& source_conninfo,
                                       const std::string& target_install_dir);

// Human-readable table: one line per finding, remedies indented below, and a
// closing line counting blocking findings.
std::string RenderFindingsTable(const std::vector<Finding>& findings);

// Marks the blocking finding (id, subject) as overridden with `reason`.
// InvalidArgument for an empty reason; NotFound (listing the blocking
// findings that exist) when there is no such blocking finding.
Status ApplyOverride(std::vector<Finding>& findings, const std::string& id,
                     const std::string& subject, const std::string& reason);

// True when any finding blocks (blocking and not overridden).
bool AnyBlocking(const std::vector<Finding>& findings);

}  // namespace pgshift::checks
