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
  EXPECT_EQ(env->proxy->shared().routes.Find("app")->switched_sessions.load(), 3);
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
  // Loading the splice's BPF programs took ~27 s at load 60: a safety net, not a claim.
  for (int i = 0; i < 1200 && !PortOpen("127.0.0.1", *admin); i++) {
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_TRUE(PortOpen("127.0.0.1", *admin)) << "pgshift-proxy never listened on its admin port";
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
  ASSERT_TRUE(UseServerTls(*env, *env->a).ok());
  const std::string up = TlsUpstreamJson(*env, *env->a);
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
