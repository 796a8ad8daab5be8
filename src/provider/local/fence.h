// Source fence for the local provider: after Fence() no role but pgshift's
// own (the role of the admin connection) can open a new session on the
// source, and no other client session is left.
//
// How: a marked block at the top of pg_hba.conf rejects every other login
// role (host and local), the configuration is reloaded and the reload
// confirmed, then every other client backend is terminated and the absence
// of any is verified in consecutive sweeps (FenceOptions). Backends that a
// router holds at a transaction boundary may be exempted (FenceExemption):
// they cannot write while held and never run a client statement again, and
// terminating them and waiting for their exit is most of the fence's time
// inside the hold.
// Physical replication connections are not affected (hba's "all" does not
// match them), so the standby keeps streaming. Unfence() removes the block.
// Both are idempotent and find the fence in the file itself, so a restarted
// pgshiftd knows where it stands. A cloud provider fences with a security
// group or NetworkPolicy instead (docs/providers.md). Not thread-safe: uses
// the caller's connection.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "pg/conn.h"

namespace pgshift {

// Backends the fence may leave alive. Each is spared only while the server
// shows it connected to `database`, idle, with no transaction open and no
// transaction id; otherwise (or once it stops being so) it is terminated.
struct FenceExemption {
  std::string database;
  std::vector<int> pids;
};

struct FenceOutcome {
  int terminated = 0;  // client backends this call terminated
  int exempted = 0;    // exempt backends left alive
};

// The fence's waits. Traffic is held while it works, so it polls tightly
// and gives up with Timeout rather than hold clients indefinitely.
struct FenceOptions {
  // How long the postmaster may take to re-read pg_hba.conf, and how often
  // a fresh backend's pg_conf_load_time() is asked meanwhile.
  int64_t reload_timeout_ms = 10000;
  int64_t reload_poll_ms = 2;
  // How long client sessions may survive termination, and the pause between
  // sweeps (a terminated backend takes a few ms to exit).
  int64_t sweep_timeout_ms = 15000;
  int64_t sweep_interval_ms = 3;
  // Sweeps in a row that must find no client session: one more after the
  // first clean one catches a session that was still authenticating.
  int clean_sweeps = 2;
};

// The data directory of the server `admin` is a session of, once it is
// shown to run on this host: the postmaster its postmaster.pid names is the
// parent of admin's backend. FailedPrecondition otherwise: a remote server,
// or one whose paths only happen to exist here too (a fence would edit
// another cluster's pg_hba.conf, a retire stop another cluster).
Result<std::string> LocalDataDirectory(PgConn& admin);
// The same check on facts already read: current_setting('data_directory')
// and pg_backend_pid() of one session.
Status ServerRunsHere(const std::string& data_dir, int backend_pid);

class LocalFence {
 public:
  explicit LocalFence(std::string label, FenceOptions options = {})
      : label_(std::move(label)), options_(options) {}

  Result<FenceOutcome> Fence(PgConn& admin, const FenceExemption& exempt = {});
  Status Unfence(PgConn& admin);
  Result<bool> IsFenced(PgConn& admin);

  // The pg_hba.conf text with the fence block added (roles quoted) or removed.
  static std::string WithFence(const std::string& hba, const std::vector<std::string>& roles,
                               const std::string& label);
  static std::string WithoutFence(const std::string& hba);

 private:
  Status Reload(PgConn& admin);
  // `loaded_before`: pg_conf_load_time() read before the file changed.
  Status Reload(PgConn& admin, const std::string& loaded_before);
  std::string label_;
  FenceOptions options_;
};

}  // namespace pgshift
