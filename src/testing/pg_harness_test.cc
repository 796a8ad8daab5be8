#include "testing/pg_harness.h"

#include <gtest/gtest.h>

#include "common/os.h"
#include "pg/conn.h"

namespace pgshift::testing {
namespace {

TEST(TestCluster, StartsARealServerAndCleansUp) {
  std::string dir;
  {
    auto tc = TestCluster::Create();
    ASSERT_TRUE(tc.ok()) << tc.status().ToString();
    dir = (*tc)->dir();
    auto conn = PgConn::Connect((*tc)->Conninfo());
    ASSERT_TRUE(conn.ok()) << conn.status().ToString();
    auto rows = (*conn)->Query("select current_setting('server_version_num')::int / 10000 as v");
    ASSERT_TRUE(rows.ok()) << rows.status().ToString();
    EXPECT_EQ(rows->Int(0, "v"), 15);
    EXPECT_EQ(*(*tc)->Psql("select 1+1"), "2\n");
  }
  EXPECT_FALSE(PathExists(dir));
}

// PgConn's send-then-collect pair (it lives in pg/, whose tests need a server).
TEST(TestCluster, SentQueriesRunTogetherAndCollectReturnsTheLastRowsOrTheError) {
  auto tc = TestCluster::Create();
  ASSERT_TRUE(tc.ok()) << tc.status().ToString();
  auto a = PgConn::Connect((*tc)->Conninfo());
  auto b = PgConn::Connect((*tc)->Conninfo());
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE((*a)->Send("begin isolation level repeatable read; select 41 + 1 as n").ok());
  ASSERT_TRUE((*b)->Send("select 1 as n; select 1/0").ok());
  auto ra = (*a)->Collect();
  auto rb = (*b)->Collect();
  ASSERT_TRUE(ra.ok()) << ra.status().ToString();
  EXPECT_EQ(ra->Int(0, "n"), 42);
  ASSERT_FALSE(rb.ok());
  EXPECT_NE(rb.status().message().find("22012"), std::string::npos) << rb.status().ToString();
  // Both connections are usable again; the first is still inside its transaction.
  auto in_txn = (*a)->Query("select now() = statement_timestamp() as fresh");
  ASSERT_TRUE(in_txn.ok()) << in_txn.status().ToString();
  EXPECT_FALSE(in_txn->Bool(0, "fresh"));
  EXPECT_TRUE((*b)->Query("select 1").ok());
  // Nothing sent: an error that says so.
  auto none = (*b)->Collect();
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("no query was sent"), std::string::npos);
}

}  // namespace
}  // namespace pgshift::testing
