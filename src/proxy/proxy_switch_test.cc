// pgshift-proxy integration tests, part two: moving sessions — hold, repoint
// and release under pgbench in every query mode, over mTLS (user-space
// forwarding) and plain text (kernel splice), what a spliced session hands
// back to the proxy, settings and prepared statements across a switch,
// logins during a hold, the hold deadline, replication connections.
#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <chrono>
#include <functional>
#include <future>
#include <thread>

#include "common/os.h"
#include "pg/conn.h"
#include "proxy/protocol.h"
#include "proxy/proxy_test_util.h"
#include "router/proxy_router.h"

namespace pgshift::proxy::testing {
namespace {

using namespace std::chrono_literals;

// Starts pg_sleep(seconds) on `c`, cancels it through the proxy, and returns
// the SQLSTATE the sleep ended with ("57014" when the cancel reached it).
std::string CancelledSleep(PgConn& c, int seconds) {
  if (PQsendQuery(c.raw(), ("select pg_sleep(" + std::to_string(seconds) + ")").c_str()) != 1)
    return "not sent";
  std::this_thread::sleep_for(300ms);
  PGcancel* cancel = PQgetCancel(c.raw());
  char err[256];
  const bool sent = PQcancel(cancel, err, sizeof(err)) == 1;
  PQfreeCancel(cancel);
  EXPECT_TRUE(sent) << err;
  std::string state;
  while (PGresult* r = PQgetResult(c.raw())) {
    const char* s = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    if (state.empty() && s) state = s;
    PQclear(r);
  }
  return state;
}

// (query mode, transport): "mtls" forwards in user space; "plain" sessions
// are spliced into the kernel between transactions (splice/), and the hold
// must take them back before it can drain.
class ProxySwitchUnderLoad : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {
};

TEST_P(ProxySwitchUnderLoad, PgbenchSeesNoFailedTransactions) {
  const auto& [mode, transport] = GetParam();
  const bool plain = transport == "plain";
  auto env = MustEnv(true, plain);
  ASSERT_TRUE(env);
  auto router = MakeRouterFor(*env);
  ASSERT_TRUE(router);
  auto route = env->proxy->shared().routes.Find("app");
  int64_t a_before = Count(*env->a, "select count(*) from pgbench_history");
  // A session with its own settings rides along the switch (spliced, its SET
  // results still reach the proxy).
  auto side = PgConn::Connect(env->Conninfo(plain ? "" : "app-client"));
  ASSERT_TRUE(side.ok()) << side.status().ToString();
  ASSERT_TRUE((*side)->Exec("SET work_mem = '3MB'").ok());
  ASSERT_TRUE((*side)->Exec("SET lock_timeout = '4s'").ok());
  auto bench = std::async(std::launch::async,
                          [&] { return DefaultRunner().Run(PgbenchSpec(*env, mode, 8, plain)); });
  std::this_thread::sleep_for(3s);
  if (plain) {
    ASSERT_NE(env->proxy->shared().splicer, nullptr) << "the kernel splice did not load (root?)";
    EXPECT_GT(route->splices.load(), 0) << "no session entered kernel mode";
  } else {
    EXPECT_EQ(route->splices.load(), 0) << "TLS sessions are never spliced";
  }
  Status held = router->Hold(5000);
  ASSERT_TRUE(held.ok()) << held.ToString();
  auto stats = router->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->sessions, 5);
  // Fence the source as the cutover does: its backends are terminated while the
  // sessions wait at their boundary. The clients must not notice.
  auto fenced = env->a->Psql(
      "select count(pg_terminate_backend(pid)) from pg_stat_activity where usename = 'app'");
  ASSERT_TRUE(fenced.ok()) << fenced.status().ToString();
  EXPECT_EQ(*fenced, "5\n");
  Endpoint to{"127.0.0.1", env->b->port()};
  ASSERT_TRUE(router->Repoint(to).ok());
  ASSERT_TRUE(router->Release().ok());
  auto cur = router->Current();
  ASSERT_TRUE(cur.ok());
  EXPECT_EQ(*cur, to);
  auto run = bench.get();
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  PgbenchSummary sum = ParsePgbench(*run);
  EXPECT_EQ(sum.exit_code, 0) << sum.output;
  EXPECT_EQ(sum.failed, 0) << sum.output;
  EXPECT_FALSE(sum.aborted) << sum.output;
  EXPECT_GT(sum.processed, 0);
  // Transactions ran on both servers, and every client moved.
  EXPECT_GT(Count(*env->a, "select count(*) from pgbench_history"), a_before);
  EXPECT_GT(Count(*env->b, "select count(*) from pgbench_history"), 0);
  EXPECT_EQ(One(**side, "select inet_server_port()"), std::to_string(env->b->port()));
  EXPECT_EQ(One(**side, "show work_mem"), "3MB");
  EXPECT_EQ(One(**side, "show lock_timeout"), "4s");
  EXPECT_GE(route->switched_sessions.load(), 4);
  EXPECT_EQ(route->in_transaction.load(), 0);
  // Transactions the kernel forwarded are counted too.
  EXPECT_GE(route->LiveTotals().transactions, sum.processed);
  // The route change was written back to the config file.
  auto saved = LoadProxyConfig(env->certs + "/proxy.json");
  ASSERT_TRUE(saved.ok());
  EXPECT_EQ(saved->routes[0].upstream.port, env->b->port());
}

INSTANTIATE_TEST_SUITE_P(Modes, ProxySwitchUnderLoad,
                         ::testing::Combine(::testing::Values("simple", "extended", "prepared"),
                                            ::testing::Values("mtls", "plain")),
                         [](const ::testing::TestParamInfo<ProxySwitchUnderLoad::ParamType>& i) {
                           return std::get<0>(i.param) + "_" + std::get<1>(i.param);
                         });

// A plain-text session runs in the kernel splice between transactions and
// comes back to the proxy for everything the proxy must see: errors, results
// larger than one segment, COPY, SET (captured for a switch), named
// statements, a cancel, and a client that goes away while spliced.
// The upstream pool is off: the client's end must end its backend (with the
// pool it is parked: proxy_pool_test.cc).
TEST(ProxySplice, PlainSessionsRunSplicedAndComeBackForWhatTheProxyMustSee) {
  auto env = MustEnv(true, /*plaintext=*/true, /*busy_poll_us=*/0, UncarriableMode::kEnd,
                     /*upstream_pool=*/false);
  ASSERT_TRUE(env);
  ASSERT_NE(env->proxy->shared().splicer, nullptr) << "the kernel splice did not load (root?)";
  auto route = env->proxy->shared().routes.Find("app");
  auto wait_for = [](const std::function<bool()>& done) {
    for (int i = 0; i < 400 && !done(); i++) std::this_thread::sleep_for(10ms);
    return done();
  };
  auto c = PgConn::Connect(env->Conninfo(""));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  PgConn& s = **c;
  EXPECT_TRUE(wait_for([&] { return route->spliced_sessions.load() == 1; }))
      << "an idle plain session is spliced";
  const int64_t splices = route->splices.load();
  const int64_t txns = route->LiveTotals().transactions;
  for (int i = 0; i < 20; i++) EXPECT_EQ(One(s, "select " + std::to_string(i)), std::to_string(i));
  EXPECT_EQ(route->splices.load(), splices) << "plain queries stay in the kernel";
  EXPECT_GE(route->LiveTotals().transactions, txns + 20) << "the kernel's count shows in stats";

  // An error: handed back, counted, and the session goes on.
  const int64_t errors = route->errors.load();
  auto bad = s.Query("select 1/0");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("division by zero"), std::string::npos);
  EXPECT_EQ(route->errors.load(), errors + 1);
  EXPECT_EQ(One(s, "select 'after error'"), "after error");
  // A row larger than a segment, then COPY out.
  EXPECT_EQ(One(s, "select length(repeat('x', 300000))"), "300000");
  EXPECT_EQ(One(s, "select length(string_agg(repeat('y', 1000), '')) from generate_series(1, 500)"),
            "500000");
  ASSERT_TRUE(s.Exec("create temp table t as select g from generate_series(1, 1000) g").ok());
  // A temporary table cannot move: held at the switch it would end the session
  // (proxy_carry_test.cc), so this one is dropped first.
  ASSERT_TRUE(s.Exec("drop table t").ok());
  auto copy = Psql(env->Conninfo(""), "copy (select g from generate_series(1, 3) g) to stdout");
  ASSERT_TRUE(copy.ok());
  EXPECT_EQ(copy->output, "1\n2\n3\n");
  // A named statement (the proxy keeps it for a switch), then a SET.
  PGresult* prep = PQprepare(s.raw(), "q1", "select $1::int + 1", 1, nullptr);
  EXPECT_EQ(PQresultStatus(prep), PGRES_COMMAND_OK);
  PQclear(prep);
  ASSERT_TRUE(s.Exec("set work_mem = '5MB'").ok());
  EXPECT_TRUE(wait_for([&] { return route->spliced_sessions.load() == 1; }));
  // A cancel reaches the server while the session is spliced.
  EXPECT_EQ(CancelledSleep(s, 30), "57014");

  // Switch: the SET value and the named statement move along.
  auto router = MakeRouterFor(*env);
  ASSERT_TRUE(router);
  ASSERT_TRUE(router->Hold(5000).ok());
  EXPECT_EQ(route->spliced_sessions.load(), 0) << "a drained hold has taken every session back";
  ASSERT_TRUE(router->Repoint({"127.0.0.1", env->b->port()}).ok());
  ASSERT_TRUE(router->Release().ok());
  EXPECT_EQ(One(s, "select inet_server_port()"), std::to_string(env->b->port()));
  EXPECT_EQ(One(s, "show work_mem"), "5MB");
  const char* one = "41";
  PGresult* ex = PQexecPrepared(s.raw(), "q1", 1, &one, nullptr, nullptr, 0);
  ASSERT_EQ(PQresultStatus(ex), PGRES_TUPLES_OK) << PQresultErrorMessage(ex);
  EXPECT_STREQ(PQgetvalue(ex, 0, 0), "42");
  PQclear(ex);
  EXPECT_TRUE(wait_for([&] { return route->spliced_sessions.load() == 1; }))
      << "spliced again on the new server once every statement is prepared there";

  // The client goes away while spliced: the proxy notices and ends its backend.
  const std::string pid = One(s, "select pg_backend_pid()");
  EXPECT_TRUE(wait_for([&] { return route->spliced_sessions.load() == 1; }));
  c->reset();
  EXPECT_TRUE(wait_for([&] { return route->sessions.load() == 0; }));
  EXPECT_EQ(route->spliced_sessions.load(), 0);
  EXPECT_TRUE(wait_for([&] {
    auto left = env->b->Psql("select count(*) from pg_stat_activity where pid = " + pid);
    return left.ok() && *left == "0\n";
  }));
  EXPECT_EQ(env->proxy->shared().splicer->slots_in_use(), 0);
}

// Busy polling changes only how the event loops wait: TLS and plaintext
// traffic, transaction tracking and a hold + switch behave as without it.
TEST(ProxyBusyPoll, TrafficHoldAndSwitchWorkWhileTheLoopsPoll) {
  auto env = MustEnv(true, /*plaintext=*/true, /*busy_poll_us=*/200);
  ASSERT_TRUE(env);
  EXPECT_EQ(env->proxy->shared().config.busy_poll_us, 200);
  auto r = Psql(env->Conninfo(""), "select 40 + 2");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->output, "42\n");
  auto router = MakeRouterFor(*env);
  ASSERT_TRUE(router);
  auto bench = std::async(std::launch::async,
                          [&] { return DefaultRunner().Run(PgbenchSpec(*env, "prepared", 6)); });
  std::this_thread::sleep_for(2s);
  Status held = router->Hold(5000);
  ASSERT_TRUE(held.ok()) << held.ToString();
  Endpoint to{"127.0.0.1", env->b->port()};
  ASSERT_TRUE(router->Repoint(to).ok());
  ASSERT_TRUE(router->Release().ok());
  auto run = bench.get();
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  PgbenchSummary sum = ParsePgbench(*run);
  EXPECT_EQ(sum.exit_code, 0) << sum.output;
  EXPECT_EQ(sum.failed, 0) << sum.output;
  EXPECT_GT(sum.processed, 0);
  EXPECT_GT(Count(*env->b, "select count(*) from pgbench_history"), 0);
  auto route = env->proxy->shared().routes.Find("app");
  EXPECT_GE(route->transactions.load(), sum.processed);
  EXPECT_GE(route->switched_sessions.load(), 4);
  EXPECT_EQ(route->in_transaction.load(), 0);
  EXPECT_EQ(route->held_sessions.load(), 0);
}

TEST(ProxySwitch, SessionSettingsAndPreparedStatementsSurviveTheSwitch) {
  auto env = MustEnv(true);
  ASSERT_TRUE(env);
  for (auto* cl : {env->a.get(), env->b.get()})
    ASSERT_TRUE(cl->Psql("CREATE ROLE reader; GRANT reader TO app").ok());
  auto conn = PgConn::Connect(env->Conninfo() + " application_name=before");
  ASSERT_TRUE(conn.ok()) << conn.status().ToString();
  PgConn& c = **conn;
  ASSERT_TRUE(c.Exec("SET ROLE reader").ok());
  ASSERT_TRUE(c.Exec("SET work_mem = '7MB'").ok());
  ASSERT_TRUE(c.Exec("SET search_path TO pg_catalog, public").ok());
  ASSERT_TRUE(c.Exec("SET application_name = 'after-set'").ok());
  ASSERT_TRUE(c.Exec("BEGIN").ok());
  ASSERT_TRUE(c.Exec("SET LOCAL statement_timeout = '3s'").ok());
  ASSERT_TRUE(c.Exec("COMMIT").ok());
  PGresult* prep = PQprepare(c.raw(), "plus_one", "select $1::int + 1", 1, nullptr);
  ASSERT_EQ(PQresultStatus(prep), PGRES_COMMAND_OK) << PQerrorMessage(c.raw());
  PQclear(prep);
  prep = PQprepare(c.raw(), "Dropped", "select 1", 0, nullptr);
  ASSERT_EQ(PQresultStatus(prep), PGRES_COMMAND_OK) << PQerrorMessage(c.raw());
  PQclear(prep);
  ASSERT_TRUE(c.Exec("DEALLOCATE \"Dropped\"").ok());
  // Last change, with no SET tag or ParameterStatus to reveal it.
  ASSERT_TRUE(c.Exec("SELECT SET_CONFIG('lock_timeout', '9s', false)").ok());
  EXPECT_EQ(One(c, "select inet_server_port()"), std::to_string(env->a->port()));

  auto router = MakeRouterFor(*env);
  ASSERT_TRUE(router->Hold(5000).ok());
  ASSERT_TRUE(router->Repoint({"127.0.0.1", env->b->port()}).ok());
  ASSERT_TRUE(router->Release().ok());

  EXPECT_EQ(One(c, "select inet_server_port()"), std::to_string(env->b->port()));
  EXPECT_EQ(One(c, "show work_mem"), "7MB");
  EXPECT_EQ(One(c, "select current_user || '/' || session_user"), "reader/app");
  EXPECT_EQ(One(c, "show search_path"), "pg_catalog, public");
  EXPECT_EQ(One(c, "show application_name"), "after-set");
  EXPECT_EQ(One(c, "show lock_timeout"), "9s");
  EXPECT_EQ(One(c, "show statement_timeout"), "0");  // SET LOCAL ended with its transaction
  const char* params[1] = {"41"};
  PGresult* r = PQexecPrepared(c.raw(), "plus_one", 1, params, nullptr, nullptr, 0);
  ASSERT_EQ(PQresultStatus(r), PGRES_TUPLES_OK) << PQerrorMessage(c.raw());
  EXPECT_STREQ(PQgetvalue(r, 0, 0), "42");
  PQclear(r);
  // A statement the client deallocated with SQL is not resurrected on the new server.
  r = PQexecPrepared(c.raw(), "Dropped", 0, nullptr, nullptr, nullptr, 0);
  EXPECT_EQ(PQresultStatus(r), PGRES_FATAL_ERROR);
  PQclear(r);
  // Twice: the re-prepare happens once.
  r = PQexecPrepared(c.raw(), "plus_one", 1, params, nullptr, nullptr, 0);
  EXPECT_STREQ(PQgetvalue(r, 0, 0), "42");
  PQclear(r);
  // DEALLOCATE ALL is tracked: the proxy does not resurrect the statement.
  ASSERT_TRUE(c.Exec("DEALLOCATE ALL").ok());
  r = PQexecPrepared(c.raw(), "plus_one", 1, params, nullptr, nullptr, 0);
  EXPECT_EQ(PQresultStatus(r), PGRES_FATAL_ERROR);
  PQclear(r);
  EXPECT_EQ(One(c, "select 1"), "1");

  // Cancel still reaches the right server session after the switch.
  EXPECT_EQ(CancelledSleep(c, 60), "57014");

  // The server ends the idle session inside a hold (as a cutover's fence does):
  // the proxy moves it anyway and it holds nothing a move cannot restore, so
  // the next statement runs on a new server session with the same settings.
  // (Outside a hold the client gets the server's FATAL: proxy_session_state_test.cc.)
  std::string pid = One(c, "select pg_backend_pid()");
  ASSERT_TRUE(router->Hold(5000).ok());
  ASSERT_TRUE(env->b->Psql("select pg_terminate_backend(" + pid + ")").ok());
  std::this_thread::sleep_for(200ms);
  ASSERT_TRUE(router->Release().ok());
  EXPECT_NE(One(c, "select pg_backend_pid()"), pid);
  EXPECT_EQ(One(c, "show work_mem"), "7MB");
}

TEST(ProxySwitch, ClientConnectingDuringTheHoldLogsInAfterTheReleaseOnTheNewServer) {
  auto env = MustEnv(true);
  ASSERT_TRUE(env);
  auto router = MakeRouterFor(*env);
  ASSERT_TRUE(router->Hold(5000).ok());
  auto route = env->proxy->shared().routes.Find("app");
  ASSERT_TRUE(route);
  // The old server is fenced while traffic is held: a login reaching it now would fail.
  auto late = std::async(std::launch::async, [&] {
    return PgConn::Connect(env->Conninfo() + " application_name=late");
  });
  for (int i = 0; i < 100 && route->held_sessions.load() == 0; ++i)
    std::this_thread::sleep_for(20ms);
  EXPECT_EQ(route->held_sessions.load(), 1) << "the new session waits for the release";
  EXPECT_EQ(late.wait_for(0ms), std::future_status::timeout);
  auto on_a = env->a->Psql("select count(*) from pg_stat_activity where application_name = 'late'");
  ASSERT_TRUE(on_a.ok());
  EXPECT_EQ(on_a->substr(0, on_a->find_first_of("\n ")), "0") << "no login reached the held server";
  ASSERT_TRUE(router->Repoint({"127.0.0.1", env->b->port()}).ok());
  ASSERT_TRUE(router->Release().ok());
  auto conn = late.get();
  ASSERT_TRUE(conn.ok()) << conn.status().ToString();
  EXPECT_EQ(One(**conn, "select inet_server_port()"), std::to_string(env->b->port()));
  EXPECT_EQ(route->held_sessions.load(), 0);
  EXPECT_EQ(route->in_transaction.load(), 0);
}

TEST(ProxySwitch, LongTransactionOutlivingTheHoldDeadlineIsReportedAndFinishesOnTheOldServer) {
  auto env = MustEnv(true);
  ASSERT_TRUE(env);
  auto long_txn = PgConn::Connect(env->Conninfo());
  ASSERT_TRUE(long_txn.ok()) << long_txn.status().ToString();
  ASSERT_TRUE((*long_txn)->Exec("BEGIN").ok());
  ASSERT_TRUE((*long_txn)
                  ->Exec("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
                         "VALUES (1, 1, 1, 4242, now())")
                  .ok());
  auto router = MakeRouterFor(*env);
  auto t0 = std::chrono::steady_clock::now();
  Status held = router->Hold(500);
  EXPECT_EQ(held.code(), Code::kTimeout) << held.ToString();
  EXPECT_NE(held.message().find("1 session(s) still in a transaction"), std::string::npos)
      << held.message();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 20s);
  // The hold was released: new transactions are not stuck.
  auto other = PgConn::Connect(env->Conninfo());
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(One(**other, "select 5"), "5");
  auto [code, body] = Admin(env->AdminUrl(), "GET", "/routes/app");
  EXPECT_EQ(code, 200);
  EXPECT_FALSE(nlohmann::json::parse(body)["held"].get<bool>());
  // Switch while the transaction is open: it finishes on the old server, then moves.
  auto [scode, sbody] =
      Admin(env->AdminUrl(), "POST", "/routes/app/switch",
            R"({"upstream":{"host":"127.0.0.1","port":)" + std::to_string(env->b->port()) + "}}");
  ASSERT_EQ(scode, 200) << sbody;
  EXPECT_EQ(One(**long_txn, "select inet_server_port()"), std::to_string(env->a->port()));
  ASSERT_TRUE((*long_txn)->Exec("COMMIT").ok());
  EXPECT_EQ(Count(*env->a, "select count(*) from pgbench_history where delta = 4242"), 1);
  EXPECT_EQ(Count(*env->b, "select count(*) from pgbench_history where delta = 4242"), 0);
  EXPECT_EQ(One(**long_txn, "select inet_server_port()"), std::to_string(env->b->port()));
  EXPECT_EQ(One(**other, "select inet_server_port()"), std::to_string(env->b->port()));
}

TEST(ProxySwitch, ReplicationConnectionsPassThroughAndMove) {
  auto env = MustEnv(true);
  ASSERT_TRUE(env);
  ASSERT_TRUE(env->a->Psql("ALTER ROLE app REPLICATION").ok());
  ASSERT_TRUE(env->b->Psql("ALTER ROLE app REPLICATION").ok());
  PGconn* c = PQconnectdb((env->Conninfo() + " replication=database").c_str());
  ASSERT_EQ(PQstatus(c), CONNECTION_OK) << PQerrorMessage(c);
  auto sysid = [&]() {
    PGresult* r = PQexec(c, "IDENTIFY_SYSTEM");
    EXPECT_EQ(PQresultStatus(r), PGRES_TUPLES_OK) << PQerrorMessage(c);
    std::string id = PQntuples(r) ? PQgetvalue(r, 0, 0) : "";
    PQclear(r);
    return id;
  };
  std::string a_id = sysid();
  EXPECT_EQ(a_id + "\n", *env->a->Psql("select system_identifier from pg_control_system()"));
  auto router = MakeRouterFor(*env);
  ASSERT_TRUE(router->Repoint({"127.0.0.1", env->b->port()}).ok());
  std::string b_id = sysid();
  EXPECT_NE(b_id, a_id);
  EXPECT_EQ(b_id + "\n", *env->b->Psql("select system_identifier from pg_control_system()"));
  PQfinish(c);
}

// Logins opened on the next server while traffic is held (as pgshiftd does
// during the cutover, on the standby it is about to promote): the switch takes
// them instead of logging in, with the session's settings already applied.
TEST(ProxySwitch, PrewarmedLoginsAreTakenAtTheSwitch) {
  auto env = MustEnv(true, /*plaintext=*/true);
  ASSERT_TRUE(env);
  auto router = MakeRouterFor(*env);
  ASSERT_TRUE(router);
  auto route = env->proxy->shared().routes.Find("app");
  std::vector<std::unique_ptr<PgConn>> sessions;
  for (const char* conninfo : {"", "app-client"}) {
    auto c = PgConn::Connect(env->Conninfo(conninfo));
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    sessions.push_back(std::move(*c));
  }
  ASSERT_TRUE(sessions[0]->Exec("set statement_timeout = '7s'").ok());
  EXPECT_EQ(One(*sessions[1], "select pg_catalog.txid_current_if_assigned() as warm"), "");
  auto on_b = [&] {
    auto n = env->b->Psql("select count(*) from pg_stat_activity where usename = 'app'");
    return n.ok() ? std::stoi(*n) : -1;
  };
  ASSERT_EQ(on_b(), 0);
  ASSERT_TRUE(router->Hold(5000).ok());
  const Endpoint b{"127.0.0.1", env->b->port()};
  ASSERT_TRUE(router->Prewarm(b).ok());  // returns once the logins are open
  EXPECT_EQ(route->prewarms_pending.load(), 0);
  EXPECT_EQ(on_b(), 2) << "each session logged in on b while held";
  // The logins opened ahead parsed (did not run) what their sessions ran in
  // user space (the TLS one: the plain-text one is forwarded by the kernel).
  auto on_b_admin = PgConn::Connect(env->b->Conninfo());
  ASSERT_TRUE(on_b_admin.ok());
  EXPECT_EQ(One(**on_b_admin,
                "select count(*) from pg_stat_activity where usename = 'app' and "
                "query = 'select pg_catalog.txid_current_if_assigned() as warm'"),
            "1");
  EXPECT_EQ(Count(*env->b, "select count(*) from pgbench_history"), 0) << "nothing ran on b";
  ASSERT_TRUE(router->Repoint(b).ok());
  ASSERT_TRUE(router->Release().ok());
  for (auto& s : sessions) EXPECT_EQ(One(*s, "select inet_server_port()"), std::to_string(b.port));
  EXPECT_EQ(One(*sessions[0], "show statement_timeout"), "7s");
  EXPECT_EQ(route->prewarmed_switches.load(), 2);
  EXPECT_EQ(on_b(), 2) << "no second login";
  // The connections the sessions left on a close later (retire_delay_ms), not
  // all at once at the switch.
  auto on_a = [&] {
    auto n = env->a->Psql("select count(*) from pg_stat_activity where usename = 'app'");
    return n.ok() ? std::stoi(*n) : -1;
  };
  EXPECT_EQ(route->retiring_connections.load(), 2);
  EXPECT_EQ(on_a(), 2) << "closed before retire_delay_ms";
  // Prewarming where the sessions already are opens nothing.
  ASSERT_TRUE(router->Prewarm(b).ok());
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(on_b(), 2);
  // A login opened ahead that no longer matches the session (a setting changed
  // since) is not taken; the others are.
  for (int i = 0; i < 1000 && on_a() != 0; i++) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(on_a(), 0) << "the connections left on a were never closed";
  EXPECT_EQ(route->retiring_connections.load(), 0);
  const Endpoint a{"127.0.0.1", env->a->port()};
  ASSERT_TRUE(router->Prewarm(a).ok());
  for (int i = 0; i < 400 && on_a() < 2; i++) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(on_a(), 2);
  ASSERT_TRUE(sessions[0]->Exec("set statement_timeout = '9s'").ok());
  ASSERT_TRUE(router->Hold(5000).ok());
  ASSERT_TRUE(router->SwitchTo(a).ok());  // repoint and release in one admin call
  EXPECT_FALSE(route->held());
  auto now_at = router->Current();
  ASSERT_TRUE(now_at.ok());
  EXPECT_EQ(*now_at, a);
  for (auto& s : sessions) EXPECT_EQ(One(*s, "select inet_server_port()"), std::to_string(a.port));
  EXPECT_EQ(One(*sessions[0], "show statement_timeout"), "9s");
  EXPECT_EQ(route->prewarmed_switches.load(), 3);
}

}  // namespace
}  // namespace pgshift::proxy::testing
