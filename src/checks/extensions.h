// Extension parity: every extension installed on the source (in any
// database) must be available on the target installation at the same
// version. The target side is read either from disk (before provisioning:
// share/extension/*.control and name--version.sql scripts, plus the module
// named by module_pathname) or from a running target's
// pg_available_extension_versions. Free functions; CompareExtensions and
// ExtensionVersionsFromFiles are pure.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "checks/finding.h"
#include "checks/install.h"
#include "checks/server_scan.h"
#include "pg/conn.h"

namespace pgshift::checks {

struct InstalledExtension {
  std::string name;
  std::string version;
  std::vector<std::string> databases;  // where it is installed at this version
};

// pg_extension of every connectable database on the source, each read through
// `session_for` (default: a new connection per database).
Result<std::vector<InstalledExtension>> ReadInstalledExtensions(PgConn& source);
Result<std::vector<InstalledExtension>> ReadInstalledExtensions(
    PgConn& source, const DatabaseSessions& session_for);

struct ExtensionCatalog {
  std::string origin;  // the directory scanned, or "server" for a running target
  std::map<std::string, std::set<std::string>> versions;  // name → installable versions
  std::map<std::string, std::string> missing_module;      // name → module file not found
};

// Versions installable from a set of script file names ("hstore--1.4.sql",
// "hstore--1.4--1.5.sql"): those with an install script and those reachable
// from one through update scripts, as PostgreSQL computes them.
std::set<std::string> ExtensionVersionsFromFiles(const std::string& name,
                                                 const std::vector<std::string>& files);

Result<ExtensionCatalog> ScanInstallation(const Installation& inst);
Result<ExtensionCatalog> ReadAvailableExtensions(PgConn& target);

// Findings with id "extensions": blocking per extension missing or not
// available at the installed version; one ok summary when all are available.
std::vector<Finding> CompareExtensions(const std::vector<InstalledExtension>& installed,
                                       const ExtensionCatalog& target);

}  // namespace pgshift::checks
