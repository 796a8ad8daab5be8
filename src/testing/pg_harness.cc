#include "testing/pg_harness.h"

#include <cstdlib>

#include "common/os.h"

namespace pgshift::testing {

Result<std::string> MakePgOwnedTempDir(const std::string& prefix) {
  PGSHIFT_ASSIGN_OR_RETURN(std::string dir, MakeTempDir(prefix));
  PGSHIFT_RETURN_IF_ERROR(MakeDirOwnedBy(dir, "postgres", 0755));
  return dir;
}

Result<std::unique_ptr<TestCluster>> TestCluster::Create(Options opts) {
  auto tc = std::unique_ptr<TestCluster>(new TestCluster());
  PGSHIFT_ASSIGN_OR_RETURN(tc->dir_, MakePgOwnedTempDir("pgshift-test-" + opts.name));
  PGSHIFT_ASSIGN_OR_RETURN(int port, FreePort());
  ClusterSpec spec{.data_dir = tc->dir_ + "/" + opts.name,
                   .port = port,
                   .bin_dir = opts.bin_dir,
                   .settings = opts.settings};
  tc->cluster_ = std::make_unique<LocalCluster>(spec);
  PGSHIFT_RETURN_IF_ERROR(tc->cluster_->InitDb());
  PGSHIFT_RETURN_IF_ERROR(tc->cluster_->Start());
  return tc;
}

TestCluster::~TestCluster() {
  if (cluster_) (void)cluster_->Stop("immediate");
  if (!KeepTestDirs() && !dir_.empty()) (void)RemoveTree(dir_);
}

}  // namespace pgshift::testing
