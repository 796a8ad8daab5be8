// Small host helpers: OS users, file ownership, free TCP ports, files.
// All functions are thread-safe.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "common/status.h"

namespace pgshift {

struct OsUser {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;
  std::string home;
  std::vector<gid_t> groups;
};

Result<OsUser> LookupOsUser(const std::string& name);
// The name of the OS user owning `path`.
Result<std::string> OwnerName(const std::string& path);
// The parent of process `pid` (from /proc), or NotFound when it does not exist.
Result<int> ParentPid(int pid);
bool RunningAsRoot();

// Creates `path` (and parents) and, when root, hands it to `owner`.
Status MakeDirOwnedBy(const std::string& path, const std::string& owner, int mode = 0700);
// chown -R when root; no-op otherwise.
Status ChownRecursive(const std::string& path, const std::string& owner);
// A fresh directory under $TMPDIR (or /tmp) named prefix-XXXXXX.
Result<std::string> MakeTempDir(const std::string& prefix);
Status RemoveTree(const std::string& path);

// A TCP port on 127.0.0.1 that was free a moment ago, and not handed out
// before by this process. Taken at random below the kernel's ephemeral range
// (ip_local_port_range, 32768+ here): a port bind(0) picked there can be
// taken by any outgoing connection's source port before the server that was
// meant to bind it starts, which on a busy machine made servers fail to
// start. Thread-safe.
Result<int> FreePort();
// The numeric addresses `host` resolves to (getaddrinfo; an IP literal is
// itself); none when it does not resolve.
std::vector<std::string> HostAddresses(const std::string& host);
// True when something accepts TCP connections on host:port.
bool PortOpen(const std::string& host, int port);

Result<std::string> ReadFile(const std::string& path);
// Writes via a temporary file and rename, so readers never see half a file;
// keeps the owner and mode of an existing file. Durable when it returns: the
// file is fsynced before the rename and its directory after it.
Status WriteFileAtomic(const std::string& path, const std::string& content);
// fsyncs a directory, making the creations, renames and removals in it durable.
Status SyncDirectory(const std::string& dir);
bool PathExists(const std::string& path);

// PGSHIFT_KEEP_TEST_DIRS=1: tests and sandboxes leave their directories for debugging.
bool KeepTestDirs();

// The PostgreSQL server binaries directory (pg_config --bindir, or the Debian path).
std::string DefaultPgBinDir();

}  // namespace pgshift
