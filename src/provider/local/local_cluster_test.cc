// LocalCluster against a real server: lowering a cluster's CPU priority
// before it is stopped reaches the postmaster, its children and the backends
// it starts afterwards.
#include "provider/local/local_cluster.h"

#include <gtest/gtest.h>
#include <sys/resource.h>

#include "common/os.h"
#include "pg/conn.h"
#include "testing/pg_harness.h"

namespace pgshift {
namespace {

int NiceOf(int pid) {
  errno = 0;
  int n = getpriority(PRIO_PROCESS, static_cast<id_t>(pid));
  return errno == 0 ? n : -100;
}

int BackendPid(PgConn& c) {
  auto r = c.Query("select pg_backend_pid() as p");
  return r.ok() ? static_cast<int>(r->Int(0, "p")) : -1;
}

TEST(LocalCluster, LowerPriorityReachesThePostmasterItsChildrenAndLaterBackends) {
  auto pg = testing::TestCluster::Create({.name = "nice"});
  ASSERT_TRUE(pg.ok()) << pg.status().ToString();
  auto before = PgConn::Connect((*pg)->Conninfo());
  ASSERT_TRUE(before.ok()) << before.status().ToString();
  const int old_backend = BackendPid(**before);
  ASSERT_GT(old_backend, 0);
  ASSERT_EQ(NiceOf(old_backend), 0);
  auto changed = (*pg)->cluster().LowerPriority(10);
  ASSERT_TRUE(changed.ok()) << changed.status().ToString();
  // The postmaster, the backend and at least the checkpointer and bgwriter.
  EXPECT_GE(*changed, 4);
  auto pidfile = ReadFile((*pg)->cluster().spec().data_dir + "/postmaster.pid");
  ASSERT_TRUE(pidfile.ok());
  EXPECT_EQ(NiceOf(std::atoi(pidfile->c_str())), 10);
  EXPECT_EQ(NiceOf(old_backend), 10);
  auto after = PgConn::Connect((*pg)->Conninfo());
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(NiceOf(BackendPid(**after)), 10) << "a new backend inherits the postmaster's";
  // The cluster still works, and stops.
  EXPECT_TRUE((*after)->Exec("select 1").ok());
  before->reset();
  after->reset();
  EXPECT_TRUE((*pg)->cluster().Stop("fast").ok());
  auto stopped = (*pg)->cluster().LowerPriority();
  EXPECT_FALSE(stopped.ok());
  EXPECT_NE(stopped.status().message().find("postmaster.pid"), std::string::npos)
      << stopped.status().message();
}

}  // namespace
}  // namespace pgshift
