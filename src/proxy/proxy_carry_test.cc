// pgshift-proxy integration tests, part five: 50 long-lived sessions, each
// with its own mix of state, across a switch under pgbench load. Settings,
// protocol and SQL prepared statements, LISTEN channels and advisory locks
// arrive intact on the new server (the locks before any other session of the
// route can take them); sessions holding a temporary table or a WITH HOLD
// cursor are ended with a FATAL that names it; nothing is lost silently.
#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <chrono>
#include <future>
#include <thread>

#include "common/os.h"
#include "pg/conn.h"
#include "proxy/proxy_test_util.h"
#include "router/proxy_router.h"

namespace pgshift::proxy::testing {
namespace {

using namespace std::chrono_literals;

constexpr int kSessions = 50;
constexpr int kLockBase = 1000;

struct Mix {
  bool tls = false, set = false, protocol_prepared = false, sql_prepared = false, listen = false,
       lock = false, lock_shared = false, temp = false, temp_dropped = false, cursor = false;
  bool ended() const { return temp || cursor; }
};

Mix MixFor(int i) {
  Mix m;
  m.tls = i % 2 == 0;  // the others are plain text, spliced between transactions
  m.set = i % 2 == 1 || i % 7 == 0;
  m.protocol_prepared = i % 3 == 0;
  m.sql_prepared = i % 4 == 1;
  m.listen = i % 5 == 2;
  m.lock = i % 6 == 3;
  m.lock_shared = i == 9 || i == 33;
  m.temp = i % 10 == 7;
  m.temp_dropped = i % 10 == 8;
  m.cursor = i == 44 || i == 46;
  return m;
}

// Runs `sql` (simple protocol, several statements allowed); false on error.
bool Run(PgConn& c, const std::string& sql) {
  PGresult* r = PQexec(c.raw(), sql.c_str());
  bool ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
  EXPECT_TRUE(ok) << sql << ": " << PQresultErrorMessage(r);
  PQclear(r);
  return ok;
}

// Run, under a name that a test body's Test::Run does not hide.
bool RunSql(PgConn& c, const std::string& sql) { return Run(c, sql); }

void GiveState(PgConn& c, int i, const Mix& m) {
  const std::string n = std::to_string(i);
  if (m.set) Run(c, "SET work_mem = '" + std::to_string(i + 1) + "MB'");
  if (m.protocol_prepared) {
    PGresult* r =
        PQprepare(c.raw(), ("p" + n).c_str(), ("select $1::int + " + n).c_str(), 1, nullptr);
    EXPECT_EQ(PQresultStatus(r), PGRES_COMMAND_OK) << PQresultErrorMessage(r);
    PQclear(r);
  }
  // Some PREPAREs share their query string with other statements.
  if (m.sql_prepared)
    Run(c, "PREPARE s" + n + "(int) AS SELECT $1 * " + n + (i % 8 == 1 ? "; SELECT 1" : ""));
  if (m.listen) Run(c, "LISTEN \"ch " + n + "\"");
  if (m.lock)
    Run(c, std::string("SELECT pg_advisory_lock") + (m.lock_shared ? "_shared" : "") + "(" +
               std::to_string(kLockBase + i) + ")");
  if (m.temp || m.temp_dropped) Run(c, "CREATE TEMP TABLE t" + n + " (a int)");
  if (m.temp_dropped) Run(c, "DROP TABLE t" + n);
  if (m.cursor) Run(c, "DECLARE c" + n + " CURSOR WITH HOLD FOR SELECT 1");
}

// Checks session i after the switch; every failure names the session.
void Check(PgConn& c, int i, const Mix& m, pgshift::testing::TestCluster& to) {
  SCOPED_TRACE("session " + std::to_string(i));
  const std::string n = std::to_string(i);
  if (m.ended()) {
    PGresult* r = PQexec(c.raw(), "select 1");
    EXPECT_EQ(PQresultStatus(r), PGRES_FATAL_ERROR);
    PQclear(r);
    // libpq keeps the FATAL's text in the connection's message.
    std::string msg = PQerrorMessage(c.raw());
    EXPECT_NE(msg.find("FATAL:  pgshift-proxy: terminating this session"), std::string::npos)
        << msg;
    std::string want = m.temp ? "temporary table(s) \"t" + n + "\"" : "WITH HOLD cursor(s) \"c" + n;
    EXPECT_NE(msg.find(want), std::string::npos) << msg;
    EXPECT_EQ(PQstatus(c.raw()), CONNECTION_BAD);
    return;
  }
  EXPECT_EQ(One(c, "select inet_server_port()"), std::to_string(to.port()));
  if (m.set) {
    EXPECT_EQ(One(c, "show work_mem"), std::to_string(i + 1) + "MB");
  }
  if (m.protocol_prepared) {
    const char* one = "1";
    PGresult* r = PQexecPrepared(c.raw(), ("p" + n).c_str(), 1, &one, nullptr, nullptr, 0);
    EXPECT_EQ(PQresultStatus(r), PGRES_TUPLES_OK) << PQresultErrorMessage(r);
    if (PQresultStatus(r) == PGRES_TUPLES_OK) {
      EXPECT_EQ(PQgetvalue(r, 0, 0), std::to_string(i + 1));
    }
    PQclear(r);
  }
  if (m.sql_prepared) {
    EXPECT_EQ(One(c, "EXECUTE s" + n + "(3)"), std::to_string(3 * i));
  }
  if (m.lock) {
    std::string pid = One(c, "select pg_backend_pid()");
    auto held = to.Psql(
        "select count(*) from pg_locks where locktype = 'advisory' and granted "
        "and objid = " +
            std::to_string(kLockBase + i) + " and pid = " + pid,
        "app");
    ASSERT_TRUE(held.ok()) << held.status().ToString();
    EXPECT_EQ(*held, "1\n") << "the advisory lock was taken again on the new server";
  }
  if (m.listen) {
    ASSERT_TRUE(to.Psql("NOTIFY \"ch " + n + "\", 'hello " + n + "'", "app").ok());
    bool got = false;
    for (int k = 0; k < 100 && !got; k++) {
      One(c, "select 1");
      PQconsumeInput(c.raw());
      while (PGnotify* note = PQnotifies(c.raw())) {
        got = got ||
              (std::string(note->relname) == "ch " + n && std::string(note->extra) == "hello " + n);
        PQfreemem(note);
      }
      if (!got) std::this_thread::sleep_for(20ms);
    }
    EXPECT_TRUE(got) << "the LISTEN registration moved";
  }
}

TEST(ProxyCarry, FiftySessionsKeepTheirStateAcrossASwitchUnderLoadOrEndNamingIt) {
  auto env = MustEnv(true, /*plaintext=*/true);
  ASSERT_TRUE(env);
  auto router = MakeRouterFor(*env);
  ASSERT_TRUE(router);
  auto route = env->proxy->shared().routes.Find("app");
  std::vector<std::unique_ptr<PgConn>> sessions;
  int sql_prepared = 0, channels = 0, locks = 0, temps = 0, cursors = 0;
  for (int i = 0; i < kSessions; i++) {
    Mix m = MixFor(i);
    auto c = PgConn::Connect(env->Conninfo(m.tls ? "app-client" : ""));
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    GiveState(**c, i, m);
    sessions.push_back(std::move(*c));
    sql_prepared += m.sql_prepared && !m.ended();
    channels += m.listen && !m.ended();
    locks += m.lock && !m.ended();
    temps += m.temp;
    cursors += m.cursor && !m.temp;
  }
  // Sessions that will try the carried locks right after the release: one
  // logged in before the switch, one after.
  auto early = PgConn::Connect(env->Conninfo(""));
  ASSERT_TRUE(early.ok());
  EXPECT_EQ(One(**early, "select 1"), "1");

  auto bench = std::async(std::launch::async,
                          [&] { return DefaultRunner().Run(PgbenchSpec(*env, "prepared", 10)); });
  std::this_thread::sleep_for(3s);
  Status held = router->Hold(5000);
  ASSERT_TRUE(held.ok()) << held.ToString();
  ASSERT_TRUE(router->Repoint({"127.0.0.1", env->b->port()}).ok());
  ASSERT_TRUE(router->Release().ok());
  EXPECT_EQ(One(**early, "select pg_try_advisory_lock(" + std::to_string(kLockBase + 3) + ")"), "f")
      << "a carried lock was taken by another session before its holder moved";
  auto late = PgConn::Connect(env->Conninfo(""));
  ASSERT_TRUE(late.ok());
  EXPECT_EQ(One(**late, "select pg_try_advisory_lock(" + std::to_string(kLockBase + 9) + ")"), "f");

  for (int i = 0; i < kSessions; i++) Check(*sessions[i], i, MixFor(i), *env->b);

  auto run = bench.get();
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  PgbenchSummary sum = ParsePgbench(*run);
  EXPECT_EQ(sum.exit_code, 0) << sum.output;
  EXPECT_EQ(sum.failed, 0) << sum.output;
  EXPECT_GT(Count(*env->b, "select count(*) from pgbench_history"), 0);

  EXPECT_EQ(route->carried_prepared_statements.load(), sql_prepared);
  EXPECT_EQ(route->carried_listen_channels.load(), channels);
  EXPECT_EQ(route->carried_advisory_locks.load(), locks);
  EXPECT_EQ(route->ended_temporary_tables.load(), temps);
  EXPECT_EQ(route->ended_holdable_cursors.load(), cursors);
  EXPECT_EQ(route->ended_carry_failed.load(), 0);
  EXPECT_EQ(route->server_ended_sessions.load(), 0);
  EXPECT_GE(route->switched_sessions.load(), kSessions - temps - cursors);

  // The switch's report says the same, and pgshiftd reads it through the router.
  auto report = router->LastSwitch();
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  ASSERT_TRUE(report->has_value());
  const SwitchReport& r = **report;
  EXPECT_EQ(r.to.port, env->b->port());
  EXPECT_GE(r.sessions, kSessions + 1);
  EXPECT_GE(r.moved, kSessions - temps - cursors);
  EXPECT_EQ(r.carried.prepared_statements, sql_prepared);
  EXPECT_EQ(r.carried.listen_channels, channels);
  EXPECT_EQ(r.carried.advisory_locks, locks);
  EXPECT_GE(r.carried.settings, 1);
  EXPECT_GE(r.carried.protocol_statements, 1);
  EXPECT_EQ(r.ended.temporary_tables, temps);
  EXPECT_EQ(r.ended.holdable_cursors, cursors);
  EXPECT_EQ(r.ended.carry_failed + r.ended.move_failed, 0);
}

// uncarriable: wait — a hold lets sessions holding temporary tables or WITH
// HOLD cursors go on on the source: one that drops its table during the hold
// and one that disconnects are not ended (the first moves afterwards); one
// that keeps its table and one that keeps its cursor past the deadline get
// the FATAL naming them. The other sessions wait as usual.
TEST(ProxyCarry, UnderWaitAHoldKeepsSessionsWithTemporaryTablesOnTheSourceUntilTheyLetGo) {
  auto env = MustEnv(true, /*plaintext=*/true, 0, UncarriableMode::kWait);
  ASSERT_TRUE(env);
  auto router = MakeRouterFor(*env);
  ASSERT_TRUE(router);
  auto route = env->proxy->shared().routes.Find("app");
  auto connect = [&] {
    auto c = PgConn::Connect(env->Conninfo(""));
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return c.ok() ? std::move(*c) : nullptr;
  };
  auto drops = connect(), leaves = connect(), keeps = connect(), cursor = connect(),
       plain = connect(), mentions = connect();
  ASSERT_TRUE(drops && leaves && keeps && cursor && plain && mentions);
  ASSERT_TRUE(RunSql(*drops, "CREATE TEMP TABLE t_drops (a int)"));
  ASSERT_TRUE(RunSql(*leaves, "CREATE TEMP TABLE t_leaves (a int)"));
  ASSERT_TRUE(RunSql(*keeps, "CREATE TEMP TABLE t_keeps (a int)"));
  ASSERT_TRUE(RunSql(*cursor, "DECLARE c_keeps CURSOR WITH HOLD FOR SELECT 1"));
  ASSERT_TRUE(RunSql(*plain, "SET work_mem = '7MB'"));
  ASSERT_TRUE(RunSql(*mentions, "SELECT 'no temp table here'"));  // a keyword, no state
  const std::string source_port = One(*drops, "select inet_server_port()");

  constexpr int64_t kHoldMs = 4000;
  const auto start = std::chrono::steady_clock::now();
  auto hold = std::async(std::launch::async,
                         [&] { return router->HoldLeased(kHoldMs, kDefaultHoldLeaseMs); });
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(route->uncarriable_sessions.load(), 4) << "the keyword-only session was let go";
  // Held sessions wait; the ones holding a temporary table go on, on the source.
  auto waits = std::async(std::launch::async, [&] { return One(*plain, "show work_mem"); });
  EXPECT_EQ(waits.wait_for(300ms), std::future_status::timeout) << "a plain session is held";
  ASSERT_TRUE(RunSql(*drops, "insert into t_drops values (1)"));
  EXPECT_EQ(One(*drops, "select inet_server_port()"), source_port);
  ASSERT_TRUE(RunSql(*drops, "DROP TABLE t_drops"));
  leaves.reset();  // disconnects
  auto held = hold.get();
  const auto waited = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(held.ok()) << held.status().ToString();
  EXPECT_GE(waited, std::chrono::milliseconds(kHoldMs / 2)) << "it waited for the keepers";
  EXPECT_LT(waited, std::chrono::milliseconds(kHoldMs + 1000));
  ASSERT_TRUE(router->SwitchHeld({"127.0.0.1", env->b->port()}, *held).ok());

  EXPECT_EQ(waits.get(), "7MB");
  EXPECT_EQ(One(*drops, "select inet_server_port()"), std::to_string(env->b->port()))
      << "the session that dropped its table moved";
  EXPECT_EQ(One(*mentions, "select inet_server_port()"), std::to_string(env->b->port()));
  for (auto* ended : {keeps.get(), cursor.get()}) {
    PGresult* r = PQexec(ended->raw(), "select 1");
    EXPECT_EQ(PQresultStatus(r), PGRES_FATAL_ERROR);
    PQclear(r);
    const std::string msg = PQerrorMessage(ended->raw());
    EXPECT_NE(msg.find("FATAL:  pgshift-proxy: terminating this session"), std::string::npos)
        << msg;
    EXPECT_NE(msg.find(ended == keeps.get() ? "temporary table(s) \"t_keeps\""
                                            : "WITH HOLD cursor(s) \"c_keeps\""),
              std::string::npos)
        << msg;
    EXPECT_NE(msg.find("until the hold's deadline"), std::string::npos) << msg;
  }
  EXPECT_EQ(route->uncarriable_waited.load(), 2);
  EXPECT_EQ(route->ended_temporary_tables.load(), 1);
  EXPECT_EQ(route->ended_holdable_cursors.load(), 1);
  EXPECT_EQ(route->uncarriable_sessions.load(), 0);
  auto report = router->LastSwitch();
  ASSERT_TRUE(report.ok() && report->has_value());
  EXPECT_EQ((*report)->waited_for, 2);
  EXPECT_EQ((*report)->ended.temporary_tables, 1);
  EXPECT_EQ((*report)->ended.holdable_cursors, 1);
  EXPECT_GE((*report)->moved, 3);
}

}  // namespace
}  // namespace pgshift::proxy::testing
