#include <gtest/gtest.h>

#include "common/os.h"
#include "pg/conn.h"
#include "testing/pg_harness.h"

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

}  // namespace
}  // namespace pgshift::testing
