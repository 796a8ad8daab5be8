// The target's PostgreSQL installation as found on disk: where its binaries,
// share files and modules are, which major version and CPU architecture it
// was built for. Used before the target exists, so nothing is started.
// Free functions; thread-safe.
#pragma once

#include <string>

#include "common/status.h"

namespace pgshift::checks {

struct Installation {
  std::string bin_dir;     // holds postgres, pg_ctl, ...
  std::string share_dir;   // holds extension/*.control
  std::string pkglib_dir;  // holds extension modules (*.so)
};

// `dir` may be the bin directory or the installation root holding bin/
// ("" = DefaultPgBinDir()). Share and lib dirs come from `pg_config` there,
// or, without pg_config, from the Debian (lib/postgresql/N/bin ↔
// share/postgresql/N) or plain (bin ↔ share, lib) layouts.
Result<Installation> ResolveInstallation(const std::string& dir);

// Major version of <bin_dir>/postgres (from `postgres -V`), e.g. 15.
Result<int> InstalledMajorVersion(const std::string& bin_dir);

// CPU architecture of an ELF executable ("x86_64", "aarch64", ...).
Result<std::string> ElfArchitecture(const std::string& path);
// The architecture named in a server's version() string
// ("PostgreSQL 15.1 on x86_64-pc-linux-gnu, ..." → "x86_64"); "" if none.
std::string ArchitectureFromVersionString(const std::string& version);

}  // namespace pgshift::checks
