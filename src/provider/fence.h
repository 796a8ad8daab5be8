// Source fence for the local provider: after Fence() no role but pgshift's
// own (the role of the admin connection) can open a new session on the
// source, and no other client session is left.
//
// How: a marked block at the top of pg_hba.conf rejects every other login
// role (host and local), the configuration is reloaded and the reload
// confirmed, then every other client backend is terminated and the absence
// of any is verified twice in a row. Physical replication connections are
// not affected (hba's "all" does not match them), so the standby keeps
// streaming. Unfence() removes the block. Both are idempotent and find the
// fence in the file itself, so a restarted pgshiftd knows where it stands.
// A cloud provider would fence with a security group instead.
// Not thread-safe: uses the caller's connection.
#pragma once

#include <string>

#include "common/status.h"
#include "pg/conn.h"

namespace pgshift {

class LocalFence {
 public:
  explicit LocalFence(std::string label) : label_(std::move(label)) {}

  Status Fence(PgConn& admin);
  Status Unfence(PgConn& admin);
  Result<bool> IsFenced(PgConn& admin);

  // The pg_hba.conf text with the fence block added (roles quoted) or removed.
  static std::string WithFence(const std::string& hba, const std::vector<std::string>& roles,
                               const std::string& label);
  static std::string WithoutFence(const std::string& hba);

 private:
  Status Reload(PgConn& admin);
  std::string label_;
};

}  // namespace pgshift
