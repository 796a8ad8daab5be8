// Test helpers for the checks' integration tests: a physical replica of a
// TestCluster made with pg_basebackup (optionally from another PostgreSQL
// installation), and a copy of the PostgreSQL installation with some
// extensions removed. Both clean up in their destructors. Not thread-safe.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "pg/conn.h"
#include "provider/local/local_cluster.h"
#include "testing/pg_harness.h"

namespace pgshift::checks::testing {

class TestReplica {
 public:
  struct Options {
    std::string bin_dir;  // installation to run the replica from ("" = default)
    std::map<std::string, std::string> settings;  // appended to its postgresql.conf
    bool start = true;
  };
  // Creates a physical slot on `primary`, base-backs up into a fresh dir and starts it.
  static Result<std::unique_ptr<TestReplica>> Create(pgshift::testing::TestCluster& primary,
                                                     const Options& opts);
  ~TestReplica();

  LocalCluster& cluster() { return *cluster_; }
  std::string Conninfo(const std::string& db = "postgres") const { return cluster_->Conninfo(db); }
  const std::string& slot_name() const { return slot_; }
  // Waits until the replica has replayed the primary's current WAL position.
  Status WaitCaughtUp(const std::string& primary_conninfo, int timeout_s = 60);

 private:
  std::string dir_;
  std::string slot_;
  std::unique_ptr<LocalCluster> cluster_;
};

// A copy of the default PostgreSQL installation (bin, lib and share, same
// relative layout so the binaries find their share dir), minus the control
// files of `remove_extensions`. Removed in the destructor.
class InstallationCopy {
 public:
  static Result<std::unique_ptr<InstallationCopy>> Create(
      const std::vector<std::string>& remove_extensions);
  ~InstallationCopy();
  const std::string& bin_dir() const { return bin_dir_; }

 private:
  std::string root_;
  std::string bin_dir_;
};

}  // namespace pgshift::checks::testing
