// The upstream pool (upstream_pool.h) against real PostgreSQL 15 clusters
// and libpq clients: a clean reconnect reuses the backend with nothing of
// the last session left, anything else gets its own backend, and holds and
// switches never hand out a parked backend of the old state of the route.
#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <chrono>
#include <functional>
#include <thread>

#include "pg/conn.h"
#include "proxy/proxy_test_util.h"

namespace pgshift::proxy::testing {
namespace {

using namespace std::chrono_literals;

// Waits (bounded generously: a loaded machine) until `done` holds.
bool Eventually(const std::function<bool()>& done) {
  for (int i = 0; i < 400; ++i) {
    if (done()) return true;
    std::this_thread::sleep_for(25ms);
  }
  return done();
}

int64_t Idle(ProxyEnv& env) { return env.proxy->shared().pool_idle.load(); }

std::unique_ptr<PgConn> MustConnect(const std::string& conninfo) {
  auto c = PgConn::Connect(conninfo);
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return c.ok() ? std::move(*c) : nullptr;
}

// The backend of `conninfo`'s session, after which the client leaves and the
// backend is parked.
int ParkedBackend(ProxyEnv& env, const std::string& conninfo) {
  const int64_t idle = Idle(env);
  auto c = MustConnect(conninfo);
  if (!c) return -1;
  int pid = std::stoi(One(*c, "select pg_backend_pid()"));
  c.reset();
  EXPECT_TRUE(Eventually([&] { return Idle(env) == idle + 1; })) << "not parked";
  return pid;
}

std::string Live(pgshift::testing::TestCluster& c, int pid) {
  auto out = c.Psql("select count(*) from pg_stat_activity where pid = " + std::to_string(pid));
  return out.ok() ? *out : out.status().ToString();
}

TEST(ProxyPool, AReconnectGetsTheSameBackendWithNothingOfTheLastSessionLeft) {
  auto env = MustEnv(false);
  ASSERT_TRUE(env);
  auto& sh = env->proxy->shared();
  auto c = MustConnect(env->Conninfo());
  ASSERT_TRUE(c);
  const std::string pid = One(*c, "select pg_backend_pid()");
  const std::string work_mem = One(*c, "show work_mem");
  const std::string app_name = One(*c, "show application_name");
  for (const char* sql :
       {"set work_mem = '77MB'", "set application_name = 'changed'",
        "create temporary table t (x int)", "prepare p as select 1", "listen ch",
        "select pg_advisory_lock(42)", "declare k cursor with hold for select 1"}) {
    auto r = c->Query(sql);
    ASSERT_TRUE(r.ok()) << sql << ": " << r.status().ToString();
  }
  c.reset();
  ASSERT_TRUE(Eventually([&] { return Idle(*env) == 1; }));
  EXPECT_EQ(sh.pool_parked.load(), 1);
  c = MustConnect(env->Conninfo());
  ASSERT_TRUE(c);
  EXPECT_EQ(One(*c, "select pg_backend_pid()"), pid) << "taken from the pool";
  EXPECT_EQ(sh.pool_hits.load(), 1);
  EXPECT_EQ(Idle(*env), 0);
  EXPECT_EQ(One(*c, "show work_mem"), work_mem);
  EXPECT_EQ(One(*c, "show application_name"), app_name);
  EXPECT_EQ(One(*c, "select to_regclass('pg_temp.t') is null"), "t");
  EXPECT_EQ(One(*c, "select count(*) from pg_prepared_statements"), "0");
  EXPECT_EQ(One(*c, "select count(*) from pg_listening_channels()"), "0");
  EXPECT_EQ(One(*c, "select count(*) from pg_cursors where name = 'k'"), "0");
  EXPECT_EQ(*env->a->Psql("select pg_try_advisory_lock(42)", "app"), "t\n")
      << "the advisory lock was released";
  // The session works on as on a fresh backend, and its own state is its own.
  ASSERT_TRUE(c->Query("prepare p as select 2").ok());
  EXPECT_EQ(One(*c, "execute p"), "2");
  EXPECT_EQ(One(*c, "select count(*) from pgbench_branches"), "1");
  // A session that changed a reported parameter: the next client is told the
  // value the reset left, not the one it changed to.
  PGconn* raw = PQconnectdb(env->Conninfo().c_str());
  ASSERT_EQ(PQstatus(raw), CONNECTION_OK) << PQerrorMessage(raw);
  const std::string raw_pid = PQgetvalue(PQexec(raw, "select pg_backend_pid()"), 0, 0);
  PQclear(PQexec(raw, "set datestyle = 'SQL, DMY'"));
  EXPECT_STREQ(PQparameterStatus(raw, "DateStyle"), "SQL, DMY");
  const std::string datestyle = One(*c, "show datestyle");
  PQfinish(raw);
  ASSERT_TRUE(Eventually([&] { return Idle(*env) == 1; }));
  raw = PQconnectdb(env->Conninfo().c_str());
  ASSERT_EQ(PQstatus(raw), CONNECTION_OK) << PQerrorMessage(raw);
  PGresult* res = PQexec(raw, "select pg_backend_pid()");
  EXPECT_EQ(std::string(PQgetvalue(res, 0, 0)), raw_pid);
  PQclear(res);
  EXPECT_EQ(PQparameterStatus(raw, "DateStyle"), datestyle);
  PQfinish(raw);
}

// Plain text: between transactions the kernel forwards the session's bytes
// (splice/); its backend still goes back to the pool and serves the next client.
TEST(ProxyPool, APlaintextSessionThatTheKernelForwardedParksItsBackendToo) {
  auto env = MustEnv(false, /*plaintext=*/true);
  ASSERT_TRUE(env);
  const std::string ci = env->Conninfo("");
  auto c = MustConnect(ci);
  ASSERT_TRUE(c);
  const std::string pid = One(*c, "select pg_backend_pid()");
  for (int i = 0; i < 20; ++i) EXPECT_EQ(One(*c, "select count(*) from pgbench_branches"), "1");
  c.reset();
  ASSERT_TRUE(Eventually([&] { return Idle(*env) == 1; }));
  for (int round = 0; round < 3; ++round) {
    c = MustConnect(ci);
    ASSERT_TRUE(c);
    EXPECT_EQ(One(*c, "select pg_backend_pid()"), pid) << round;
    for (int i = 0; i < 20; ++i) EXPECT_EQ(One(*c, "select count(*) from pgbench_branches"), "1");
    c.reset();
    ASSERT_TRUE(Eventually([&] { return Idle(*env) == 1; })) << round;
  }
  EXPECT_EQ(env->proxy->shared().pool_hits.load(), 3);
}

// TLS to the server: the parked backend's TLS state goes with it to the
// event loop of the session that takes it.
TEST(ProxyPool, ABackendBehindUpstreamTlsIsParkedAndTakenWithItsTls) {
  auto env = MustEnv(false);
  ASSERT_TRUE(env);
  ASSERT_TRUE(UseServerTls(*env, *env->a).ok());
  const std::string ssl = "select ssl from pg_stat_ssl where pid = pg_backend_pid()";
  std::string pid;
  for (int round = 0; round < 4; ++round) {
    auto c = MustConnect(env->Conninfo());
    ASSERT_TRUE(c);
    if (round == 0) pid = One(*c, "select pg_backend_pid()");
    EXPECT_EQ(One(*c, "select pg_backend_pid()"), pid) << round;
    EXPECT_EQ(One(*c, ssl), "t");
    EXPECT_EQ(One(*c, "select length(repeat('x', 100000))"), "100000");
    c.reset();
    ASSERT_TRUE(Eventually([&] { return Idle(*env) == 1; })) << round;
  }
  EXPECT_EQ(env->proxy->shared().pool_hits.load(), 3);
}

TEST(ProxyPool, AClientThatLeavesInsideATransactionEndsItsBackendAndItRollsBack) {
  auto env = MustEnv(false);
  ASSERT_TRUE(env);
  auto c = MustConnect(env->Conninfo());
  ASSERT_TRUE(c);
  const int pid = std::stoi(One(*c, "select pg_backend_pid()"));
  ASSERT_TRUE(c->Query("begin").ok());
  ASSERT_TRUE(c->Query("insert into pgbench_branches values (99, 0)").ok());
  c.reset();
  EXPECT_TRUE(Eventually([&] { return Live(*env->a, pid) == "0\n"; })) << "the backend ended";
  EXPECT_EQ(Idle(*env), 0);
  EXPECT_EQ(env->proxy->shared().pool_dropped_unclean.load(), 1);
  EXPECT_EQ(Count(*env->a, "select count(*) from pgbench_branches where bid = 99"), 0);
  c = MustConnect(env->Conninfo());
  ASSERT_TRUE(c);
  EXPECT_NE(std::stoi(One(*c, "select pg_backend_pid()")), pid);
  EXPECT_EQ(env->proxy->shared().pool_misses.load(), 2);
}

TEST(ProxyPool, AnotherApplicationNameUserOrDatabaseGetsAnotherBackend) {
  auto env = MustEnv(false);
  ASSERT_TRUE(env);
  ASSERT_TRUE(
      env->proxy
          ->AddRoute({.name = "pg", .database = "postgres", .upstream = env->Upstream(*env->a)})
          .ok());
  const std::string plain = env->Conninfo();
  const std::string named = plain + " application_name=reporting";
  const std::string md5 = env->Conninfo("app-client", "app", "md5user");
  const std::string other_db = env->Conninfo("other-client", "postgres");
  std::map<std::string, int> parked;
  for (const auto& ci : {plain, named, md5, other_db}) parked[ci] = ParkedBackend(*env, ci);
  EXPECT_EQ(Idle(*env), 4);
  for (const auto& ci : {other_db, md5, named, plain}) {
    auto c = MustConnect(ci);
    ASSERT_TRUE(c);
    EXPECT_EQ(std::stoi(One(*c, "select pg_backend_pid()")), parked[ci]) << ci;
  }
  EXPECT_EQ(env->proxy->shared().pool_hits.load(), 4);
}

TEST(ProxyPool, ASwitchClosesTheOldParkedBackendsAndTheNextClientLandsOnTheNewUpstream) {
  auto env = MustEnv(true);
  ASSERT_TRUE(env);
  const int old_pid = ParkedBackend(*env, env->Conninfo());
  auto router = MakeRouterFor(*env);
  ASSERT_TRUE(router);
  ASSERT_TRUE(router->Hold(5000).ok());
  EXPECT_EQ(Idle(*env), 0) << "the hold flushed it";
  ASSERT_TRUE(env->proxy->RepointRoute("app", env->Upstream(*env->b)).ok());
  ASSERT_TRUE(router->Release().ok());
  EXPECT_TRUE(Eventually([&] { return Live(*env->a, old_pid) == "0\n"; }));
  auto c = MustConnect(env->Conninfo());
  ASSERT_TRUE(c);
  EXPECT_EQ(One(*c, "select inet_server_port()"), std::to_string(env->b->port()));
  c.reset();
  ASSERT_TRUE(Eventually([&] { return Idle(*env) == 1; }));
  // A repoint without a hold flushes too.
  ASSERT_TRUE(env->proxy->RepointRoute("app", env->Upstream(*env->a)).ok());
  EXPECT_EQ(Idle(*env), 0);
  c = MustConnect(env->Conninfo());
  ASSERT_TRUE(c);
  EXPECT_EQ(One(*c, "select inet_server_port()"), std::to_string(env->a->port()));
  EXPECT_EQ(env->proxy->shared().pool_hits.load(), 0);
  EXPECT_EQ(env->proxy->shared().pool_dropped_route.load(), 2);
}

TEST(ProxyPool, AHeldRouteParksNothingAndItsBackendListingHasNoParkedBackend) {
  auto env = MustEnv(false);
  ASSERT_TRUE(env);
  auto router = MakeRouterFor(*env);
  ASSERT_TRUE(router);
  const int parked = ParkedBackend(*env, env->Conninfo());
  auto c = MustConnect(env->Conninfo());
  ASSERT_TRUE(c);
  EXPECT_EQ(std::stoi(One(*c, "select pg_backend_pid()")), parked);
  auto d = MustConnect(env->Conninfo());
  ASSERT_TRUE(d);
  const int other = std::stoi(One(*d, "select pg_backend_pid()"));
  d.reset();
  ASSERT_TRUE(Eventually([&] { return Idle(*env) == 1; }));
  ASSERT_TRUE(router->Hold(5000).ok());
  EXPECT_EQ(Idle(*env), 0);
  auto held = router->HeldBackendPids({"127.0.0.1", env->a->port()});
  ASSERT_TRUE(held.ok()) << held.status().ToString();
  EXPECT_EQ(held->pids, std::vector<int>{parked}) << "the live session only";
  EXPECT_TRUE(Eventually([&] { return Live(*env->a, other) == "0\n"; }));
  c.reset();  // leaves while held
  EXPECT_TRUE(Eventually([&] { return Live(*env->a, parked) == "0\n"; }));
  EXPECT_EQ(Idle(*env), 0);
  ASSERT_TRUE(router->Release().ok());
  c = MustConnect(env->Conninfo());
  ASSERT_TRUE(c);
  EXPECT_EQ(env->proxy->shared().pool_dropped_route.load(), 2);
}

}  // namespace
}  // namespace pgshift::proxy::testing
