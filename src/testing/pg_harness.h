// Test harness: real PostgreSQL 15 clusters for integration tests.
//
// TestCluster::Create makes a temporary directory owned by the unprivileged
// OS user, picks a free port, runs initdb and starts the server; the
// destructor stops it (immediate) and removes the directory. Set
// PGSHIFT_KEEP_TEST_DIRS=1 to keep the directory for debugging.
// Not thread-safe; one test owns a TestCluster.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "provider/local/local_cluster.h"

namespace pgshift::testing {

class TestCluster {
 public:
  struct Options {
    std::string name = "pg";
    std::map<std::string, std::string> settings;
    std::string bin_dir;  // empty: DefaultPgBinDir()
  };
  static Result<std::unique_ptr<TestCluster>> Create(Options opts);
  static Result<std::unique_ptr<TestCluster>> Create() { return Create(Options{}); }
  ~TestCluster();

  LocalCluster& cluster() { return *cluster_; }
  int port() const { return cluster_->spec().port; }
  // A directory for the test's other files (certs, configs), owned by the OS user.
  const std::string& dir() const { return dir_; }
  std::string Conninfo(const std::string& dbname = "postgres") const {
    return cluster_->Conninfo(dbname);
  }
  Result<std::string> Psql(const std::string& sql, const std::string& dbname = "postgres") {
    return cluster_->Psql(sql, dbname);
  }

 private:
  std::string dir_;
  std::unique_ptr<LocalCluster> cluster_;
};

// A fresh temp directory owned by the postgres OS user (for replicas, etc.).
Result<std::string> MakePgOwnedTempDir(const std::string& prefix);

}  // namespace pgshift::testing
