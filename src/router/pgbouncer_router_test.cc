// Integration tests: PgBouncerRouter against a real PgBouncer 1.18 in front of
// real PostgreSQL clusters, with real pgbench traffic.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <regex>
#include <thread>

#include "common/os.h"
#include "common/process.h"
#include "pg/conn.h"
#include "router/pgbouncer_process.h"
#include "router/pgbouncer_router.h"
#include "testing/pg_harness.h"

namespace pgshift {
namespace {

using Clock = std::chrono::steady_clock;
using testing::TestCluster;

int64_t MsSince(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

// One cluster ("source") behind a PgBouncer route "app" in transaction pooling.
class PgBouncerRouterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto src = TestCluster::Create({.name = "source"});
    ASSERT_TRUE(src.ok()) << src.status().ToString();
    source_ = std::move(*src);
    ASSERT_TRUE(source_->Psql("CREATE TABLE marker(v text); INSERT INTO marker VALUES ('source')").ok());
    PgBouncerProcess::Options opts;
    opts.databases = {{"app", {"127.0.0.1", source_->port()}, "postgres"}};
    // A query stuck behind a hold that was never released fails instead of hanging the test.
    opts.settings = {{"query_wait_timeout", "30"}};
    auto pgb = PgBouncerProcess::Start(opts);
    ASSERT_TRUE(pgb.ok()) << pgb.status().ToString();
    bouncer_ = std::move(*pgb);
    auto router = PgBouncerRouter::FromJson(bouncer_->RouterConfig("app"));
    ASSERT_TRUE(router.ok()) << router.status().ToString();
    router_ = std::move(*router);
  }

  Result<std::string> QueryThroughBouncer(const std::string& sql) {
    PGSHIFT_ASSIGN_OR_RETURN(auto conn, PgConn::Connect(bouncer_->ClientConninfo("app"), 10));
    PGSHIFT_ASSIGN_OR_RETURN(Rows rows, conn->Query(sql));
    if (rows.empty()) return Internal("no rows from " + sql);
    return rows.Str(0, rows.columns()[0]);
  }

  std::unique_ptr<TestCluster> source_;
  std::unique_ptr<PgBouncerProcess> bouncer_;
  std::unique_ptr<PgBouncerRouter> router_;
};

TEST_F(PgBouncerRouterTest, OpenTransactionMakesHoldTimeOutAndReleaseTheRoute) {
  auto tx = PgConn::Connect(bouncer_->ClientConninfo("app"));
  ASSERT_TRUE(tx.ok()) << tx.status().ToString();
  ASSERT_TRUE((*tx)->Exec("BEGIN").ok());
  ASSERT_TRUE((*tx)->Query("SELECT v FROM marker").ok());

  auto start = Clock::now();
  Status held = router_->Hold(300);
  int64_t took = MsSince(start);
  ASSERT_FALSE(held.ok());
  EXPECT_EQ(held.code(), Code::kTimeout) << held.ToString();
  EXPECT_NE(held.message().find("'app'"), std::string::npos) << held.message();
  EXPECT_NE(held.message().find("300 ms"), std::string::npos) << held.message();
  EXPECT_GE(took, 250);
  EXPECT_LT(took, 5000) << "Hold must not hang past its timeout";

  // The route was resumed: new traffic flows while the old transaction is still open.
  auto v = QueryThroughBouncer("SELECT v FROM marker");
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(*v, "source");
  EXPECT_TRUE((*tx)->Exec("COMMIT").ok());
  auto stats = router_->Stats();
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_EQ(stats->held_sessions, 0);
}

TEST_F(PgBouncerRouterTest, HoldBlocksNewQueriesUntilRelease) {
  ASSERT_TRUE(QueryThroughBouncer("SELECT 1").ok());  // warm the pool
  ASSERT_TRUE(router_->Release().ok()) << "releasing a route that is not held succeeds";
  ASSERT_TRUE(router_->Hold(5000).ok());
  Status again = router_->Hold(5000);
  ASSERT_TRUE(again.ok()) << "holding a held route succeeds: " << again.ToString();

  std::atomic<bool> answered{false};
  std::string answer;
  std::thread client([&] {
    auto v = QueryThroughBouncer("SELECT v FROM marker");
    answer = v.ok() ? *v : v.status().ToString();
    answered = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  EXPECT_FALSE(answered.load()) << "a query went through a held route: " << answer;
  auto stats = router_->Stats();
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_GE(stats->held_sessions, 1);

  ASSERT_TRUE(router_->Release().ok());
  ASSERT_TRUE(router_->Release().ok());
  auto start = Clock::now();
  while (!answered.load() && MsSince(start) < 20000) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  client.join();
  EXPECT_EQ(answer, "source");
}

TEST_F(PgBouncerRouterTest, CurrentStatsAndMissingRoute) {
  auto cur = router_->Current();
  ASSERT_TRUE(cur.ok()) << cur.status().ToString();
  EXPECT_EQ(*cur, (Endpoint{"127.0.0.1", source_->port()}));
  ASSERT_TRUE(QueryThroughBouncer("SELECT 1").ok());
  auto stats = router_->Stats();
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_GE(stats->transactions, 1);

  PgBouncerRouter missing({.admin_conninfo = bouncer_->AdminConninfo(),
                           .config_file = bouncer_->ConfigFile(),
                           .route = "nosuch"});
  for (Status s : {missing.Hold(1000), missing.Release(), missing.Current().status(),
                   missing.Repoint({"127.0.0.1", 1})}) {
    EXPECT_EQ(s.code(), Code::kNotFound) << s.ToString();
    EXPECT_NE(s.message().find("nosuch"), std::string::npos) << s.ToString();
  }

  PgBouncerRouter unreachable({.admin_conninfo = "host=127.0.0.1 port=1 dbname=pgbouncer",
                               .config_file = bouncer_->ConfigFile(),
                               .route = "app"});
  Status s = unreachable.Hold(1000);
  EXPECT_EQ(s.code(), Code::kUnavailable) << s.ToString();
}

// Runs pgbench and returns its output; fails on a non-zero exit.
Result<std::string> Pgbench(const std::vector<std::string>& args) {
  ProcessSpec spec{.argv = {"pgbench"}, .timeout_ms = 120000};
  spec.argv.insert(spec.argv.end(), args.begin(), args.end());
  return RunChecked(DefaultRunner(), spec);
}

TEST_F(PgBouncerRouterTest, RepointUnderPgbenchLosesNothing) {
  auto tgt = TestCluster::Create({.name = "target"});
  ASSERT_TRUE(tgt.ok()) << tgt.status().ToString();
  std::unique_ptr<TestCluster> target = std::move(*tgt);
  ASSERT_TRUE(target->Psql("CREATE TABLE marker(v text); INSERT INTO marker VALUES ('target')").ok());
  for (TestCluster* c : {source_.get(), target.get()}) {
    auto init = Pgbench({"-i", "-q", "-s", "1", "-h", "127.0.0.1", "-p", std::to_string(c->port()),
                         "-U", "postgres", "postgres"});
    ASSERT_TRUE(init.ok()) << init.status().ToString();
  }
  const std::string before = *ReadFile(bouncer_->ConfigFile());

  Result<std::string> bench = Internal("not run");
  std::thread load([&] {
    bench = Pgbench({"-c", "4", "-j", "2", "-T", "6", "-M", "simple", "-n", "-h", "127.0.0.1",
                     "-p", std::to_string(bouncer_->port()), "-U", "postgres", "app"});
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(2000));
  Status held = router_->Hold(5000);
  Status repointed = held.ok() ? router_->Repoint({"127.0.0.1", target->port()}) : held;
  Status again = held.ok() ? router_->Repoint({"127.0.0.1", target->port()}) : held;
  Status released = router_->Release();
  load.join();
  ASSERT_TRUE(held.ok()) << held.ToString();
  ASSERT_TRUE(repointed.ok()) << repointed.ToString();
  ASSERT_TRUE(again.ok()) << "Repoint is idempotent: " << again.ToString();
  ASSERT_TRUE(released.ok()) << released.ToString();

  ASSERT_TRUE(bench.ok()) << bench.status().ToString();
  std::smatch m;
  ASSERT_TRUE(std::regex_search(*bench, m, std::regex(R"(number of failed transactions: (\d+))")))
      << *bench;
  EXPECT_EQ(m[1].str(), "0") << *bench;
  EXPECT_EQ(bench->find("aborted"), std::string::npos) << *bench;

  // Traffic now reaches the target, and both clusters served part of the run.
  auto v = QueryThroughBouncer("SELECT v FROM marker");
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(*v, "target");
  auto cur = router_->Current();
  ASSERT_TRUE(cur.ok());
  EXPECT_EQ(*cur, (Endpoint{"127.0.0.1", target->port()}));
  for (TestCluster* c : {source_.get(), target.get()}) {
    auto n = c->Psql("SELECT count(*) FROM pgbench_history");
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    EXPECT_GT(std::stoll(*n), 0) << "cluster on port " << c->port() << " got no pgbench traffic";
  }

  // Only the route's host/port changed in the file.
  const std::string after = *ReadFile(bouncer_->ConfigFile());
  auto expected = RewriteRouteInIni(before, "app", {"127.0.0.1", target->port()});
  ASSERT_TRUE(expected.ok());
  EXPECT_EQ(after, *expected);
  EXPECT_NE(after, before);
}

}  // namespace
}  // namespace pgshift
