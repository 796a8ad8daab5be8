// pgshiftd's own sessions are bounded (issue 17): a catalog or table held by
// another session's lock makes pgshiftd's statement fail with a timeout
// instead of hanging the migration's worker; the parity scan stays exempt.
#include <gtest/gtest.h>

#include <chrono>
#include <future>

#include "common/clock.h"
#include "pg/conn.h"
#include "provider/local/local_env_testing.h"

namespace pgshift {
namespace {

using local_testing::EnvFor;
using local_testing::SocketConninfo;
using local_testing::SpecFor;

// Far beyond the lock timeout the test sets: reaching it means pgshiftd hung.
constexpr auto kHangBound = std::chrono::seconds(20);

TEST(LocalEnvSessions, LockedCatalogFailsPreflightWithATimeoutInsteadOfHanging) {
  auto pg = testing::TestCluster::Create({.name = "locked"});
  ASSERT_TRUE(pg.ok()) << pg.status().ToString();
  // Another session holds pg_extension (as a long DDL would): every reader
  // waits for it.
  auto locker = PgConn::Connect((*pg)->Conninfo());
  ASSERT_TRUE(locker.ok()) << locker.status().ToString();
  ASSERT_TRUE((*locker)->Exec("begin").ok());
  ASSERT_TRUE((*locker)->Exec("lock table pg_catalog.pg_extension in access exclusive mode").ok());

  LocalEnvOptions options;
  options.session = {.statement_timeout_ms = 10000, .lock_timeout_ms = 300};
  auto env = EnvFor(SpecFor(**pg, SocketConninfo(**pg)), "m-locked", options);
  ASSERT_TRUE(env);
  const int64_t started = MonotonicMs();
  auto preflight = std::async(std::launch::async, [&] { return env->PreflightFindings(); });
  if (preflight.wait_for(kHangBound) != std::future_status::ready) {
    (void)(*locker)->Exec("rollback");  // the stuck call ends, then the test fails
    preflight.wait();
    FAIL() << "preflight hung behind a lock for " << kHangBound.count() << " s";
  }
  auto findings = preflight.get();
  const int64_t took = MonotonicMs() - started;
  ASSERT_FALSE(findings.ok()) << "preflight read pg_extension through an exclusive lock";
  EXPECT_EQ(findings.status().code(), Code::kTimeout) << findings.status().ToString();
  EXPECT_NE(findings.status().message().find("lock timeout"), std::string::npos)
      << findings.status().ToString();
  EXPECT_LT(took, 5000) << "the 300 ms lock timeout bounds the wait";

  // Released: the same env goes on (its session survived the timeout).
  ASSERT_TRUE((*locker)->Exec("rollback").ok());
  auto again = env->PreflightFindings();
  EXPECT_TRUE(again.ok()) << again.status().ToString();
}

TEST(LocalEnvSessions, TimeoutsJoinTheConninfosOwnOptions) {
  auto pg = testing::TestCluster::Create({.name = "opts"});
  ASSERT_TRUE(pg.ok()) << pg.status().ToString();
  auto ci = WithSessionTimeouts((*pg)->Conninfo() + " options='-c search_path=audit'",
                                {.statement_timeout_ms = 1500, .lock_timeout_ms = 700});
  ASSERT_TRUE(ci.ok()) << ci.status().ToString();
  auto c = PgConn::Connect(*ci);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  auto r = (*c)->Query(
      "select current_setting('statement_timeout') as st, current_setting('lock_timeout') as lt, "
      "current_setting('search_path') as sp");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->Str(0, "st"), "1500ms");
  EXPECT_EQ(r->Str(0, "lt"), "700ms");
  EXPECT_EQ(r->Str(0, "sp"), "audit") << "the conninfo's own options are kept";
  // A statement past statement_timeout is a timeout too.
  auto slow = (*c)->Query("select pg_sleep(5)");
  ASSERT_FALSE(slow.ok());
  EXPECT_EQ(slow.status().code(), Code::kTimeout) << slow.status().ToString();
}

}  // namespace
}  // namespace pgshift
