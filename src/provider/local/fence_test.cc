// LocalFence against a real PostgreSQL 15 server: which client backends the
// fence terminates, which exempt ones it spares, and that new logins are
// refused either way.
#include "provider/local/fence.h"

#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <algorithm>
#include <memory>
#include <thread>

#include "testing/pg_harness.h"

namespace pgshift {
namespace {

std::unique_ptr<PgConn> MustConnect(const std::string& conninfo) {
  auto c = PgConn::Connect(conninfo);
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return c.ok() ? std::move(c).value() : nullptr;
}

// Client backends other than `admin`'s own, as the server lists them.
std::vector<int> ClientPids(PgConn& admin) {
  std::vector<int> out;
  auto r = admin.Query(
      "select pid from pg_stat_activity where backend_type = 'client backend' "
      "and pid <> pg_backend_pid() order by pid");
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  for (size_t i = 0; r.ok() && i < r->size(); ++i)
    out.push_back(static_cast<int>(r->Int(i, "pid")));
  return out;
}

bool Contains(const std::vector<int>& v, int x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

class LocalFenceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto tc = testing::TestCluster::Create({.name = "fence"});
    ASSERT_TRUE(tc.ok()) << tc.status().ToString();
    pg_ = std::move(tc).value();
    // One statement per call: CREATE DATABASE cannot run in psql -c's implicit transaction.
    for (const char* sql : {"create role app login", "create database app owner app",
                            "create database other owner app"})
      ASSERT_TRUE(pg_->Psql(sql).ok()) << sql;
    ASSERT_TRUE(pg_->Psql("create table t (k int)", "app").ok());
    ASSERT_TRUE(pg_->Psql("alter table t owner to app", "app").ok());
    admin_ = MustConnect(pg_->Conninfo());
    ASSERT_TRUE(admin_);
  }
  std::string App(const std::string& db = "app") { return pg_->cluster().Conninfo(db, "app"); }
  // After the fence the admin connection stays usable; unfence for the next step.
  void TearDown() override {
    if (admin_) (void)LocalFence("test").Unfence(*admin_);
  }

  std::unique_ptr<testing::TestCluster> pg_;
  std::unique_ptr<PgConn> admin_;
};

TEST_F(LocalFenceTest, ExemptBackendInsideATransactionIsTerminatedAnyway) {
  auto in_txn = MustConnect(App());
  ASSERT_TRUE(in_txn);
  ASSERT_TRUE(in_txn->Exec("begin").ok());
  ASSERT_TRUE(in_txn->Exec("insert into t values (1)").ok());  // holds a transaction id
  auto snapshot_only = MustConnect(App());
  ASSERT_TRUE(snapshot_only);
  ASSERT_TRUE(snapshot_only->Exec("begin isolation level repeatable read").ok());
  ASSERT_TRUE(snapshot_only->Exec("select count(*) from t").ok());  // no xid, but in a transaction
  const int p1 = in_txn->BackendPid(), p2 = snapshot_only->BackendPid();

  auto out = LocalFence("test").Fence(*admin_, {.database = "app", .pids = {p1, p2}});
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(out->exempted, 0);
  EXPECT_EQ(out->terminated, 2);
  auto left = ClientPids(*admin_);
  EXPECT_FALSE(Contains(left, p1));
  EXPECT_FALSE(Contains(left, p2));
  EXPECT_FALSE(in_txn->Exec("commit").ok())
      << "the open transaction must not commit after the fence";
  EXPECT_EQ(*pg_->Psql("select count(*) from t", "app"), "0\n");
}

TEST_F(LocalFenceTest, SparesOnlyExemptIdleBackendsOfTheGivenDatabase) {
  auto idle_exempt = MustConnect(App());
  auto idle_other = MustConnect(App());       // idle, not exempt
  auto other_db = MustConnect(App("other"));  // exempt pid, but another database
  auto running = MustConnect(App());          // exempt pid, running a statement
  ASSERT_TRUE(idle_exempt && idle_other && other_db && running);
  ASSERT_TRUE(idle_exempt->Exec("select 1").ok());
  ASSERT_EQ(PQsendQuery(running->raw(), "select pg_sleep(60)"), 1);
  const int spare = idle_exempt->BackendPid();
  const int p_other = idle_other->BackendPid(), p_db = other_db->BackendPid(),
            p_run = running->BackendPid();
  for (int i = 0; i < 500; ++i) {  // until the server shows the sleep as active
    auto r =
        admin_->Query("select state from pg_stat_activity where pid = $1", {std::to_string(p_run)});
    if (r.ok() && !r->empty() && r->Str(0, "state") == "active") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }

  auto out =
      LocalFence("test").Fence(*admin_, {.database = "app", .pids = {spare, p_db, p_run, 999999}});
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(out->exempted, 1);
  EXPECT_EQ(out->terminated, 3);
  auto left = ClientPids(*admin_);
  EXPECT_EQ(left, std::vector<int>{spare});
  EXPECT_FALSE(Contains(left, p_other));
  EXPECT_FALSE(Contains(left, p_db));
  EXPECT_FALSE(Contains(left, p_run));
  // The spared session still works (the router would never use it again), new logins are refused.
  EXPECT_TRUE(idle_exempt->Exec("select 1").ok());
  auto fresh = PgConn::Connect(App(), 5);
  ASSERT_FALSE(fresh.ok());
  EXPECT_NE(fresh.status().message().find("pg_hba.conf rejects"), std::string::npos)
      << fresh.status().ToString();

  // Fencing again (a resumed cutover) keeps the spared backend while it stays idle.
  auto again = LocalFence("test").Fence(*admin_, {.database = "app", .pids = {spare}});
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->exempted, 1);
  EXPECT_EQ(again->terminated, 0);
  // Without an exemption, it is terminated as before.
  auto all = LocalFence("test").Fence(*admin_);
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  EXPECT_EQ(all->exempted, 0);
  EXPECT_EQ(all->terminated, 1);
  EXPECT_TRUE(ClientPids(*admin_).empty());
}

// The fence edits the pg_hba.conf of the server it talks to, and of no other
// cluster whose paths merely exist on this host.
TEST_F(LocalFenceTest, RefusesAServerThatDoesNotRunHere) {
  auto dir = LocalDataDirectory(*admin_);
  ASSERT_TRUE(dir.ok()) << dir.status().ToString();
  EXPECT_EQ(*dir, pg_->cluster().spec().data_dir);
  // Another server's session: same host, but not the postmaster of this data directory.
  auto other = testing::TestCluster::Create({.name = "other"});
  ASSERT_TRUE(other.ok()) << other.status().ToString();
  auto elsewhere = MustConnect((*other)->Conninfo());
  ASSERT_TRUE(elsewhere);
  Status st = ServerRunsHere(*dir, elsewhere->BackendPid());
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), Code::kFailedPrecondition);
  EXPECT_NE(st.message().find("does not run on this host"), std::string::npos) << st.message();
  // A data directory that is not on this host at all.
  st = ServerRunsHere("/nonexistent/pgdata", admin_->BackendPid());
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("/nonexistent/pgdata"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace pgshift
