// Integration tests of pgshift-proxy against real PostgreSQL 15 clusters,
// real certificates (openssl CLI) and real clients (libpq, psql, pgbench).
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
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

std::string One(PgConn& c, const std::string& sql) {
  auto r = c.Query(sql);
  EXPECT_TRUE(r.ok()) << sql << ": " << r.status().ToString();
  if (!r.ok() || r->empty()) return "";
  return r->At(0, 0).value_or("");
}

std::unique_ptr<ProxyEnv> MustEnv(bool two, bool plaintext = false, int busy_poll_us = 0) {
  auto env = ProxyEnv::Create(two, plaintext, busy_poll_us);
  EXPECT_TRUE(env.ok()) << env.status().ToString();
  return env.ok() ? std::move(*env) : nullptr;
}

TEST(ProxyTls, RefusesWithoutCertificateWrongCaOrPolicyAndAllowsValidIdentity) {
  auto env = MustEnv(false);
  ASSERT_TRUE(env);
  // Plaintext to a route that does not allow it.
  auto plain = Psql(env->Conninfo(""), "select 1");
  ASSERT_TRUE(plain.ok());
  EXPECT_NE(plain->exit_code, 0);
  EXPECT_NE(plain->output.find("plaintext connections are refused"), std::string::npos)
      << plain->output;
  // TLS without a client certificate.
  std::string no_cert = "host=127.0.0.1 port=" + std::to_string(env->proxy->port()) +
                        " dbname=app user=app sslmode=verify-full sslrootcert=" + env->certs +
                        "/ca.crt sslcert=/nonexistent sslkey=/nonexistent";
  auto nc = Psql(no_cert, "select 1");
  ASSERT_TRUE(nc.ok());
  EXPECT_NE(nc->exit_code, 0);
  EXPECT_NE(nc->output.find("a client certificate is required"), std::string::npos) << nc->output;
  // A certificate from another CA.
  auto evil = Psql(env->Conninfo("evil-client"), "select 1");
  ASSERT_TRUE(evil.ok());
  EXPECT_NE(evil->exit_code, 0);
  EXPECT_NE(evil->output.find("client certificate rejected"), std::string::npos) << evil->output;
  // Valid certificate, identity not allowed for database app.
  auto other = Psql(env->Conninfo("other-client"), "select 1");
  ASSERT_TRUE(other.ok());
  EXPECT_NE(other->exit_code, 0);
  EXPECT_NE(other->output.find("certificate identity \"other-client\" is not allowed to use "
                               "database \"app\" as role \"app\""),
            std::string::npos)
      << other->output;
  // Allowed: works, and the upstream login used SCRAM with the proxy's credentials.
  auto ok = Psql(env->Conninfo("app-client"),
                 "select current_user || ' ' || (select count(*) from pgbench_branches)");
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->exit_code, 0) << ok->output;
  EXPECT_EQ(ok->output, "app 1\n");
  // md5 upstream login for another role.
  auto md5 = Psql(env->Conninfo("app-client", "app", "md5user"), "select current_user");
  ASSERT_TRUE(md5.ok());
  EXPECT_EQ(md5->output, "md5user\n");
  // A role the policy allows but the upstream refuses gets the server's own error.
  auto route = env->proxy->shared().routes.Find("app");
  ASSERT_TRUE(route);
  EXPECT_GE(env->proxy->shared().refused.load(), 4);
}

TEST(ProxyPlaintext, RouteThatAllowsPlaintextWorksAndMalformedBytesGetAnError) {
  auto env = MustEnv(false, /*plaintext=*/true);
  ASSERT_TRUE(env);
  auto r = Psql(env->Conninfo(""), "select 40 + 2");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->output, "42\n");

  // Raw socket: a valid startup, then a message whose length is impossible.
  asio::io_context io;
  tcp::socket s(io);
  s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), env->proxy->port()));
  std::string startup = StartupMessage({{"user", "app"}, {"database", "app"}});
  asio::write(s, asio::buffer(startup));
  std::string got;
  char buf[4096];
  // Read until ReadyForQuery.
  while (got.find(std::string("Z\0\0\0\5I", 6)) == std::string::npos) {
    size_t n = s.read_some(asio::buffer(buf));
    got.append(buf, n);
  }
  std::string bad = std::string("Q\0\0\0\2", 5);
  asio::write(s, asio::buffer(bad));
  std::string reply;
  asio::error_code ec;
  while (!ec) {
    size_t n = s.read_some(asio::buffer(buf), ec);
    reply.append(buf, n);
  }
  ASSERT_FALSE(reply.empty());
  EXPECT_EQ(reply[0], 'E');
  EXPECT_NE(reply.find("invalid message length"), std::string::npos);
  // The proxy is still serving.
  auto again = Psql(env->Conninfo(""), "select 1");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->output, "1\n");
}

TEST(ProxyCancel, CancelRequestThroughTheProxyCancelsPgSleep) {
  auto env = MustEnv(false);
  ASSERT_TRUE(env);
  PGconn* c = PQconnectdb(env->Conninfo().c_str());
  ASSERT_EQ(PQstatus(c), CONNECTION_OK) << PQerrorMessage(c);
  auto start = std::chrono::steady_clock::now();
  ASSERT_EQ(PQsendQuery(c, "select pg_sleep(60)"), 1);
  std::this_thread::sleep_for(500ms);
  PGcancel* cancel = PQgetCancel(c);
  char err[256];
  ASSERT_EQ(PQcancel(cancel, err, sizeof(err)), 1) << err;
  PQfreeCancel(cancel);
  PGresult* res = PQgetResult(c);
  ASSERT_NE(res, nullptr);
  EXPECT_EQ(PQresultStatus(res), PGRES_FATAL_ERROR);
  const char* state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
  EXPECT_STREQ(state ? state : "", "57014");  // query_canceled
  PQclear(res);
  while ((res = PQgetResult(c))) PQclear(res);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 30s);
  // The session is still usable.
  res = PQexec(c, "select 7");
  EXPECT_STREQ(PQgetvalue(res, 0, 0), "7");
  PQclear(res);
  PQfinish(c);
  EXPECT_EQ(env->proxy->shared().cancels_sent.load(), 1);
}

std::unique_ptr<Router> MakeRouterFor(ProxyEnv& env) {
  auto r = MakeProxyRouter({{"type", "proxy"}, {"admin_url", env.AdminUrl()}, {"route", "app"}});
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? std::move(*r) : nullptr;
}

int64_t Count(pgshift::testing::TestCluster& c, const std::string& sql) {
  auto out = c.Psql(sql, "app");
  EXPECT_TRUE(out.ok()) << out.status().ToString();
  return out.ok() ? std::stoll(*out) : -1;
}

// pgbench through the proxy, with the client certificate or (plaintext) without TLS.
ProcessSpec PgbenchSpec(ProxyEnv& env, const std::string& mode, int seconds,
                        bool plaintext = false) {
  std::vector<std::string> tls = {"PGSSLMODE=verify-full", "PGSSLROOTCERT=" + env.certs + "/ca.crt",
                                  "PGSSLCERT=" + env.certs + "/app-client.crt",
                                  "PGSSLKEY=" + env.certs + "/app-client.key"};
  return {.argv = {DefaultPgBinDir() + "/pgbench", "-n", "-c", "4", "-j", "2", "-T",
                   std::to_string(seconds), "-M", mode, "-h", "127.0.0.1", "-p",
                   std::to_string(env.proxy->port()), "-U", "app", "app"},
          .extra_env = plaintext ? std::vector<std::string>{"PGSSLMODE=disable"} : tls,
          .timeout_ms = 120000};
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
  EXPECT_GE(route->switches.load(), 4);
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
TEST(ProxySplice, PlainSessionsRunSplicedAndComeBackForWhatTheProxyMustSee) {
  auto env = MustEnv(true, /*plaintext=*/true);
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
  ASSERT_EQ(PQsendQuery(s.raw(), "select pg_sleep(30)"), 1);
  std::this_thread::sleep_for(300ms);
  PGcancel* cancel = PQgetCancel(s.raw());
  char err[256];
  ASSERT_EQ(PQcancel(cancel, err, sizeof(err)), 1) << err;
  PQfreeCancel(cancel);
  PGresult* r = PQgetResult(s.raw());
  ASSERT_NE(r, nullptr);
  EXPECT_STREQ(PQresultErrorField(r, PG_DIAG_SQLSTATE), "57014");
  PQclear(r);
  while ((r = PQgetResult(s.raw())) != nullptr) PQclear(r);

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
  EXPECT_GE(route->switches.load(), 4);
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
  ASSERT_EQ(PQsendQuery(c.raw(), "select pg_sleep(60)"), 1);
  std::this_thread::sleep_for(300ms);
  PGcancel* cancel = PQgetCancel(c.raw());
  char err[256];
  ASSERT_EQ(PQcancel(cancel, err, sizeof(err)), 1) << err;
  PQfreeCancel(cancel);
  PGresult* res = PQgetResult(c.raw());
  const char* state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
  EXPECT_STREQ(state ? state : "", "57014");
  PQclear(res);
  while ((res = PQgetResult(c.raw()))) PQclear(res);

  // The server ends the idle session (as a fence does): the next statement runs on a new
  // server session with the same settings.
  std::string pid = One(c, "select pg_backend_pid()");
  ASSERT_TRUE(env->b->Psql("select pg_terminate_backend(" + pid + ")").ok());
  std::this_thread::sleep_for(200ms);
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

TEST(ProxyAdmin, RoutesStatsMetricsAndErrors) {
  auto env = MustEnv(false);
  ASSERT_TRUE(env);
  auto ok = Psql(env->Conninfo(), "select 1");
  ASSERT_TRUE(ok.ok());
  auto [hc, hb] = Admin(env->AdminUrl(), "GET", "/health");
  EXPECT_EQ(hc, 200);
  auto [lc, lb] = Admin(env->AdminUrl(), "GET", "/routes");
  EXPECT_EQ(lc, 200);
  EXPECT_EQ(nlohmann::json::parse(lb)[0]["name"], "app");
  auto [sc, sb] = Admin(env->AdminUrl(), "GET", "/routes/app/stats");
  EXPECT_EQ(sc, 200);
  EXPECT_GE(nlohmann::json::parse(sb)["transactions"].get<int64_t>(), 1);
  EXPECT_GT(nlohmann::json::parse(sb)["bytes_from_clients"].get<int64_t>(), 0);
  auto [mc, mb] = Admin(env->AdminUrl(), "GET", "/metrics");
  EXPECT_EQ(mc, 200);
  EXPECT_NE(mb.find("pgshift_proxy_transactions_total{route=\"app\"}"), std::string::npos) << mb;
  auto [nc, nb] = Admin(env->AdminUrl(), "GET", "/routes/nope");
  EXPECT_EQ(nc, 404);
  EXPECT_NE(nb.find("no route named"), std::string::npos);
  auto [bc, bb] = Admin(env->AdminUrl(), "PUT", "/routes/app", R"({"upstream":{"host":"x"}})");
  EXPECT_EQ(bc, 400) << bb;
  auto [uc, ub] = Admin(env->AdminUrl(), "PUT", "/routes/app", R"({"upstrem":{}})");
  EXPECT_EQ(uc, 400);
  EXPECT_NE(ub.find("upstrem"), std::string::npos);
  EXPECT_FALSE(
      MakeProxyRouter({{"type", "proxy"}, {"admin_url", "http://x"}, {"route", "a"}, {"colour", 1}})
          .ok());
  auto bad = MakeProxyRouter(
      {{"type", "proxy"}, {"admin_url", "http://x"}, {"route", "a"}, {"colour", 1}});
  EXPECT_NE(bad.status().message().find("colour"), std::string::npos);
  auto router = MakeRouterFor(*env);
  auto st = router->Stats();
  ASSERT_TRUE(st.ok());
  EXPECT_GE(st->transactions, 1);
  // Stopping the proxy with a live session (idle and mid-query) closes them cleanly.
  auto idle = PgConn::Connect(env->Conninfo());
  auto busy = PgConn::Connect(env->Conninfo());
  ASSERT_TRUE(idle.ok() && busy.ok());
  ASSERT_EQ(PQsendQuery((*busy)->raw(), "select pg_sleep(30)"), 1);
  std::this_thread::sleep_for(200ms);
  auto t0 = std::chrono::steady_clock::now();
  env->proxy->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  EXPECT_FALSE((*idle)->Query("select 1").ok());
  PGresult* res = PQgetResult((*busy)->raw());
  EXPECT_NE(PQresultStatus(res), PGRES_TUPLES_OK);
  PQclear(res);
  EXPECT_FALSE(router->Current().ok());  // the admin API is gone too
}

// The cutover's fence may spare the source backends of the sessions the proxy
// holds: the proxy lists them only while a hold has drained, and after that
// hold's release every session logs in again before its next statement (even
// without a repoint), so a spared backend never runs another client statement.
TEST(ProxyAdmin, HeldSessionsBackendsAreListedAndNotUsedAfterTheRelease) {
  auto env = MustEnv(true);
  ASSERT_TRUE(env);
  auto router = MakeRouterFor(*env);
  ASSERT_TRUE(router);
  std::vector<std::unique_ptr<PgConn>> sessions;
  std::vector<int> backends;
  for (int i = 0; i < 3; ++i) {
    auto c = PgConn::Connect(env->Conninfo());
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    sessions.push_back(std::move(*c));
    backends.push_back(std::stoi(One(*sessions.back(), "select pg_backend_pid()")));
  }
  std::sort(backends.begin(), backends.end());
  const Endpoint a{"127.0.0.1", env->a->port()};
  auto not_held = router->HeldBackendPids(a);
  EXPECT_EQ(not_held.status().code(), Code::kFailedPrecondition) << not_held.status().ToString();
  ASSERT_TRUE(router->Hold(5000).ok());
  auto held = router->HeldBackendPids(a);
  ASSERT_TRUE(held.ok()) << held.status().ToString();
  EXPECT_EQ(held->server, a);
  EXPECT_EQ(held->database, "app");
  std::sort(held->pids.begin(), held->pids.end());
  EXPECT_EQ(held->pids, backends);
  auto on_b = router->HeldBackendPids({"127.0.0.1", env->b->port()});
  ASSERT_TRUE(on_b.ok()) << on_b.status().ToString();
  EXPECT_TRUE(on_b->pids.empty()) << "no session has a backend on b";
  auto [bad, bad_body] = Admin(env->AdminUrl(), "GET", "/routes/app/backends?upstream=nohost");
  EXPECT_EQ(bad, 400) << bad_body;
  ASSERT_TRUE(router->Release().ok());
  // Same upstream, but each session is on a new backend, and the listed ones end.
  for (auto& s : sessions) {
    int pid = std::stoi(One(*s, "select pg_backend_pid()"));
    EXPECT_FALSE(std::binary_search(backends.begin(), backends.end(), pid));
    EXPECT_EQ(One(*s, "select inet_server_port()"), std::to_string(env->a->port()));
  }
  std::string left;
  for (int i = 0; i < 100; ++i) {
    left = *env->a->Psql("select count(*) from pg_stat_activity where pid in (" +
                         std::to_string(backends[0]) + "," + std::to_string(backends[1]) + "," +
                         std::to_string(backends[2]) + ")");
    if (left == "0\n") break;
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(left, "0\n");
  EXPECT_EQ(env->proxy->shared().routes.Find("app")->switches.load(), 3);
  // A plain hold and release (nothing listed) leaves the sessions where they are.
  int before = std::stoi(One(*sessions[0], "select pg_backend_pid()"));
  ASSERT_TRUE(router->Hold(5000).ok());
  ASSERT_TRUE(router->Release().ok());
  EXPECT_EQ(std::stoi(One(*sessions[0], "select pg_backend_pid()")), before);
}

TEST(ProxyExecutable, RunsFromItsConfigFileAndKeepsRouteChanges) {
  auto env = MustEnv(true);
  ASSERT_TRUE(env);
  auto port = FreePort();
  auto admin = FreePort();
  ASSERT_TRUE(port.ok() && admin.ok());
  nlohmann::json cfg = ToJson(env->config);
  cfg["listen"] = "127.0.0.1:" + std::to_string(*port);
  cfg["admin_listen"] = "127.0.0.1:" + std::to_string(*admin);
  std::string path = env->certs + "/exe.json";
  ASSERT_TRUE(WriteFileAtomic(path, cfg.dump(2)).ok());
  // A config with an unknown key is refused, naming the key.
  nlohmann::json bad = cfg;
  bad["routes"][0]["databse"] = "app";
  ASSERT_TRUE(WriteFileAtomic(env->certs + "/bad.json", bad.dump()).ok());
  auto refused = DefaultRunner().Run(
      {.argv = {PGSHIFT_PROXY_BIN, "--config", env->certs + "/bad.json"}, .timeout_ms = 10000});
  ASSERT_TRUE(refused.ok());
  EXPECT_EQ(refused->exit_code, 2);
  EXPECT_NE(refused->output.find("unknown key \"databse\""), std::string::npos) << refused->output;

  auto pid = DefaultRunner().Spawn(
      {.argv = {PGSHIFT_PROXY_BIN, "--config", path}, .output_file = env->certs + "/exe.log"});
  ASSERT_TRUE(pid.ok());
  struct Reaper {
    pid_t pid;
    ~Reaper() {
      kill(pid, SIGTERM);
      int st;
      waitpid(pid, &st, 0);
    }
  } reaper{*pid};
  for (int i = 0; i < 100 && !PortOpen("127.0.0.1", *admin); i++) std::this_thread::sleep_for(50ms);
  std::string conninfo = env->Conninfo();
  conninfo.replace(conninfo.find(std::to_string(env->proxy->port())),
                   std::to_string(env->proxy->port()).size(), std::to_string(*port));
  auto r = Psql(conninfo, "select inet_server_port()");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->output, std::to_string(env->a->port()) + "\n") << r->output;
  auto [code, body] =
      Admin("http://127.0.0.1:" + std::to_string(*admin), "PUT", "/routes/app",
            R"({"upstream":{"host":"127.0.0.1","port":)" + std::to_string(env->b->port()) + "}}");
  ASSERT_EQ(code, 200) << body;
  auto r2 = Psql(conninfo, "select inet_server_port()");
  EXPECT_EQ(r2->output, std::to_string(env->b->port()) + "\n");
  auto saved = LoadProxyConfig(path);
  ASSERT_TRUE(saved.ok()) << saved.status().ToString();
  EXPECT_EQ(saved->routes[0].upstream.port, env->b->port());
}

TEST(ProxyUpstream, TlsToTheServerIsVerifiedAndLargeResultsAndCopyStreamThrough) {
  auto env = MustEnv(false);
  ASSERT_TRUE(env);
  // Give the server the test CA's server certificate (SAN 127.0.0.1) and turn TLS on.
  for (const char* f : {"server.crt", "server.key"}) {
    auto content = ReadFile(env->certs + "/" + f);
    ASSERT_TRUE(content.ok());
    ASSERT_TRUE(WriteFileAtomic(env->a->dir() + "/" + f, *content).ok());
  }
  ASSERT_TRUE(ChownRecursive(env->a->dir() + "/server.key", "postgres").ok());
  ASSERT_TRUE(ChownRecursive(env->a->dir() + "/server.crt", "postgres").ok());
  std::filesystem::permissions(
      env->a->dir() + "/server.key",
      std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  ASSERT_TRUE(
      env->a->Psql("ALTER SYSTEM SET ssl_cert_file = '" + env->a->dir() + "/server.crt'").ok());
  ASSERT_TRUE(
      env->a->Psql("ALTER SYSTEM SET ssl_key_file = '" + env->a->dir() + "/server.key'").ok());
  ASSERT_TRUE(env->a->Psql("ALTER SYSTEM SET ssl = on").ok());
  ASSERT_TRUE(env->a->Psql("SELECT pg_reload_conf()").ok());
  std::this_thread::sleep_for(300ms);
  std::string up = R"({"upstream":{"host":"127.0.0.1","port":)" + std::to_string(env->a->port()) +
                   R"(,"tls":true,"ca":")" + env->certs + R"(/ca.crt"}})";
  auto [code, body] = Admin(env->AdminUrl(), "PUT", "/routes/app", up);
  ASSERT_EQ(code, 200) << body;
  auto r = Psql(env->Conninfo(), "select ssl from pg_stat_ssl where pid = pg_backend_pid()");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->output, "t\n") << r->output;
  // A CA that did not sign the server's certificate: the login is refused.
  std::string bad = R"({"upstream":{"host":"127.0.0.1","port":)" + std::to_string(env->a->port()) +
                    R"(,"tls":true,"ca":")" + env->certs + R"(/evil-ca.crt"}})";
  auto [bcode, bbody] = Admin(env->AdminUrl(), "PUT", "/routes/app", bad);
  ASSERT_EQ(bcode, 200) << bbody;
  auto refused = Psql(env->Conninfo(), "select 1");
  ASSERT_TRUE(refused.ok());
  EXPECT_NE(refused->exit_code, 0);
  EXPECT_NE(refused->output.find("TLS handshake with upstream"), std::string::npos)
      << refused->output;
  ASSERT_EQ(Admin(env->AdminUrl(), "PUT", "/routes/app", up).first, 200);

  // 40 MB of result rows and a COPY FROM STDIN of 20 MB pass through.
  auto big = Psql(env->Conninfo(),
                  "select sum(length(x)) from (select repeat('x', 1000000) as x "
                  "from generate_series(1, 40)) s");
  ASSERT_TRUE(big.ok());
  EXPECT_EQ(big->output, "40000000\n");
  auto rows = Psql(env->Conninfo(),
                   "select length(string_agg(repeat('y', 100000), '')) "
                   "from generate_series(1, 200)");
  EXPECT_EQ(rows->output, "20000000\n");
  ASSERT_EQ(Psql(env->Conninfo(), "create table blob(t text)")->exit_code, 0);
  auto all = DefaultRunner().Run(
      {.argv = {"/bin/sh", "-c",
                DefaultPgBinDir() + "/psql -X -q -At -v ON_ERROR_STOP=1 -d '" + env->Conninfo() +
                    "' -c \"copy (select repeat('z', 100000) from "
                    "generate_series(1, 200)) to stdout\" | " +
                    DefaultPgBinDir() + "/psql -X -At -v ON_ERROR_STOP=1 -d '" + env->Conninfo() +
                    "' -c 'copy blob from stdin' -c 'select count(*), sum(length(t)) from blob'"},
       .timeout_ms = 120000});
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->exit_code, 0) << all->output;
  EXPECT_NE(all->output.find("200|20000000"), std::string::npos) << all->output;
}

}  // namespace
}  // namespace pgshift::proxy::testing
