// Test helpers for LocalEnv against real servers: a spec whose source is a
// TestCluster reached through a given conninfo, and its env. Header-only,
// linked by tests only. Not thread-safe.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "common/os.h"
#include "provider/local/local_env.h"
#include "testing/pg_harness.h"

namespace pgshift::local_testing {

// The cluster's conninfo through its Unix-socket directory (the data
// directory's parent, where LocalCluster puts the socket).
inline std::string SocketConninfo(testing::TestCluster& pg,
                                  const std::string& dbname = "postgres") {
  return "host=" + pg.dir() + " port=" + std::to_string(pg.port()) +
         " user=postgres dbname=" + dbname;
}

// A spec migrating `pg` (reached through `source_conninfo`) to a target
// under pg.dir(), on a free port, without a router.
inline MigrationSpec SpecFor(testing::TestCluster& pg, const std::string& source_conninfo,
                             const std::string& name = "m") {
  MigrationSpec spec;
  spec.name = name;
  spec.source_conninfo = source_conninfo;
  spec.target.data_dir = pg.dir() + "/target-" + name;
  auto port = FreePort();
  EXPECT_TRUE(port.ok());
  spec.target.port = port.ok() ? *port : 0;
  return spec;
}

inline std::unique_ptr<LocalEnv> EnvFor(const MigrationSpec& spec, const std::string& id,
                                        LocalEnvOptions options = {}) {
  auto router = MakeRouter({{"type", "none"}});
  EXPECT_TRUE(router.ok()) << router.status().ToString();
  if (!router.ok()) return nullptr;
  return std::make_unique<LocalEnv>(id, spec, std::move(router).value(), DefaultRunner(), options);
}

// Stops the env's target when the test ends, whatever failed before: no
// server outlives its test.
class TargetStopper {
 public:
  explicit TargetStopper(MigrationEnv* env) : env_(env) {}
  ~TargetStopper() {
    if (env_) (void)env_->StopTarget();
  }
  TargetStopper(const TargetStopper&) = delete;
  TargetStopper& operator=(const TargetStopper&) = delete;

 private:
  MigrationEnv* env_;
};

}  // namespace pgshift::local_testing
