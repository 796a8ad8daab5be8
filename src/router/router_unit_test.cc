// Unit tests: pgbouncer.ini rewriting, router config validation, the none
// router, and the proxy adapter against a stand-in admin API.
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <thread>
#include <vector>

#include "common/os.h"
#include "router/none_router.h"
#include "router/pgbouncer_process.h"
#include "router/pgbouncer_router.h"
#include "router/proxy_router.h"
#include "router/router.h"

namespace pgshift {
namespace {

const Endpoint kTarget{"10.0.0.7", 6543};

TEST(RewriteRouteInIni, ReplacesHostAndPortKeepingEverythingElse) {
  const std::string ini =
      "; production bouncer\n"
      "[databases]\n"
      "# the reporting db stays put\n"
      "reports = host=10.0.0.1 port=5432 dbname=reports\n"
      "app   =  dbname=appdb   host=10.0.0.1  port=5432 pool_size=20 user=svc\n"
      "\n"
      "[pgbouncer]\n"
      "listen_port = 6432\n"
      "app = host=not-a-database port=1\n";
  auto out = RewriteRouteInIni(ini, "app", kTarget);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  const std::string expected =
      "; production bouncer\n"
      "[databases]\n"
      "# the reporting db stays put\n"
      "reports = host=10.0.0.1 port=5432 dbname=reports\n"
      "app   =  dbname=appdb   host=10.0.0.7  port=6543 pool_size=20 user=svc\n"
      "\n"
      "[pgbouncer]\n"
      "listen_port = 6432\n"
      "app = host=not-a-database port=1\n";
  EXPECT_EQ(*out, expected);
}

TEST(RewriteRouteInIni, IsIdempotent) {
  const std::string ini = "[databases]\napp = host=a port=1 dbname=x\n";
  auto once = RewriteRouteInIni(ini, "app", kTarget);
  ASSERT_TRUE(once.ok());
  auto twice = RewriteRouteInIni(*once, "app", kTarget);
  ASSERT_TRUE(twice.ok());
  EXPECT_EQ(*once, *twice);
  EXPECT_EQ(*once, "[databases]\napp = host=10.0.0.7 port=6543 dbname=x\n");
}

TEST(RewriteRouteInIni, AddsMissingHostAndPortAndKeepsCrlfAndQuotes) {
  const std::string ini = "[Databases]\r\napp = dbname='my db' user=u  \r\nother = host=h\r\n";
  auto out = RewriteRouteInIni(ini, "app", kTarget);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(*out,
            "[Databases]\r\napp = dbname='my db' user=u host=10.0.0.7 port=6543  \r\n"
            "other = host=h\r\n");
}

TEST(RewriteRouteInIni, ReplacesQuotedValuesAndMatchesWholeNamesOnly) {
  const std::string ini = "[databases]\napp2 = host=x port=2\napp = host='old host' port='5432'\n";
  auto out = RewriteRouteInIni(ini, "app", kTarget);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(*out, "[databases]\napp2 = host=x port=2\napp = host=10.0.0.7 port=6543\n");
}

TEST(RewriteRouteInIni, MissingRouteIsNotFound) {
  const std::string ini =
      "[databases]\n;app = host=a port=1\nreports = host=a\n[pgbouncer]\napp = host=b\n";
  auto out = RewriteRouteInIni(ini, "app", kTarget);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), Code::kNotFound);
  EXPECT_NE(out.status().message().find("route 'app' has no line in the [databases] section"),
            std::string::npos)
      << out.status().message();
}

TEST(RewriteRouteInIni, DuplicateRouteIsRefused) {
  auto out = RewriteRouteInIni("[databases]\napp = host=a\napp = host=b\n", "app", kTarget);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), Code::kFailedPrecondition);
}

TEST(RewriteRouteInIni, BadEndpointIsInvalid) {
  auto out = RewriteRouteInIni("[databases]\napp = host=a\n", "app", Endpoint{"", 5432});
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), Code::kInvalidArgument);
}

class MakeRouterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = MakeTempDir("pgshift-router-unit");
    ASSERT_TRUE(dir.ok());
    dir_ = *dir;
    ini_ = dir_ + "/pgbouncer.ini";
    ASSERT_TRUE(WriteFileAtomic(ini_, "[databases]\napp = host=a port=1\n").ok());
  }
  void TearDown() override { (void)RemoveTree(dir_); }
  nlohmann::json Good() const {
    return {{"type", "pgbouncer"},
            {"admin_conninfo", "host=127.0.0.1 port=6432 dbname=pgbouncer user=postgres"},
            {"config_file", ini_},
            {"route", "app"}};
  }
  static std::string Error(const nlohmann::json& config) {
    auto r = MakeRouter(config);
    EXPECT_FALSE(r.ok()) << config.dump();
    if (r.ok()) return "";
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << r.status().ToString();
    return r.status().message();
  }
  std::string dir_, ini_;
};

TEST_F(MakeRouterTest, BuildsPgBouncerAndNone) {
  auto pgb = MakeRouter(Good());
  ASSERT_TRUE(pgb.ok()) << pgb.status().ToString();
  EXPECT_EQ((*pgb)->Kind(), "pgbouncer");
  auto none = MakeRouter({{"type", "none"}});
  ASSERT_TRUE(none.ok());
  EXPECT_EQ((*none)->Kind(), "none");
}

TEST_F(MakeRouterTest, BadConfigsNameTheProblem) {
  EXPECT_NE(Error(nlohmann::json::array()).find("JSON object"), std::string::npos);
  EXPECT_NE(Error({{"route", "app"}}).find("missing \"type\""), std::string::npos);
  EXPECT_NE(Error({{"type", 3}}).find("\"type\" must be a string"), std::string::npos);
  EXPECT_NE(Error({{"type", "haproxy"}}).find("unknown value \"haproxy\""), std::string::npos);
  EXPECT_NE(Error({{"type", "none"}, {"route", "x"}}).find("unknown field \"route\""),
            std::string::npos);

  auto extra = Good();
  extra["admin_url"] = "http://x";
  EXPECT_NE(Error(extra).find("unknown field \"admin_url\""), std::string::npos);
  for (const char* field : {"admin_conninfo", "config_file", "route"}) {
    auto missing = Good();
    missing.erase(field);
    EXPECT_NE(Error(missing).find(std::string("missing \"") + field + "\": add"),
              std::string::npos);
    auto empty = Good();
    empty[field] = "";
    EXPECT_NE(Error(empty).find(std::string("\"") + field + "\" must be a non-empty string"),
              std::string::npos);
  }
  auto not_admin = Good();
  not_admin["admin_conninfo"] = "host=127.0.0.1 port=6432 dbname=app";
  EXPECT_NE(Error(not_admin).find("dbname=pgbouncer"), std::string::npos);
  auto no_file = Good();
  no_file["config_file"] = dir_ + "/missing.ini";
  EXPECT_NE(Error(no_file).find("does not exist"), std::string::npos);
}

TEST(NoneRouter, DoesNothingAndRemembersOnlyItsLastRepoint) {
  NoneRouter r;
  EXPECT_EQ(r.Current().status().code(), Code::kNotFound);
  EXPECT_TRUE(r.Hold(1).ok());
  EXPECT_TRUE(r.Repoint(kTarget).ok());
  EXPECT_TRUE(r.Release().ok());
  auto cur = r.Current();
  ASSERT_TRUE(cur.ok());
  EXPECT_EQ(*cur, kTarget);
  auto stats = r.Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->sessions, 0);
}

// Routers without replication connections keep Router's defaults.
TEST(Router, ReplicationCallsDefaultToNothing) {
  NoneRouter none;
  PgBouncerRouter pgb({.admin_conninfo = "host=127.0.0.1 port=1 dbname=pgbouncer",
                       .config_file = "/nonexistent.ini",
                       .route = "app"});
  for (Router* r : std::vector<Router*>{&none, &pgb}) {
    auto list = r->ReplicationSessions(kTarget);
    ASSERT_TRUE(list.ok());
    EXPECT_TRUE(list->empty());
    EXPECT_EQ(r->RequestReplicationFeedback().value(), 0);
    EXPECT_EQ(r->PauseReplication().value(), 0);
  }
}

// A stand-in for pgshift-proxy's admin API on a free loopback port.
class FakeProxyAdmin {
 public:
  FakeProxyAdmin() {
    port_ = server_.bind_to_any_port("127.0.0.1");
    // Bound and listening already: calls wait in the backlog until it accepts.
    thread_ = std::thread([this] { server_.listen_after_bind(); });
  }
  ~FakeProxyAdmin() {
    server_.stop();
    thread_.join();
  }
  httplib::Server& server() { return server_; }
  ProxyRouter Router() const {
    return ProxyRouter({.admin_url = "http://127.0.0.1:" + std::to_string(port_),
                        .route = "app",
                        .admin_timeout_ms = 2000});
  }

 private:
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
};

void Reply(httplib::Response& res, const nlohmann::json& j) {
  res.set_content(j.dump(), "application/json");
}

TEST(ProxyRouter, ReadsStatsAndReplicationSessionsFromTheAdminApi) {
  FakeProxyAdmin admin;
  std::string asked_upstream, pause_body;
  int64_t pending = 0;
  admin.server().Get("/routes/app/stats", [](const httplib::Request&, httplib::Response& res) {
    Reply(res, {{"sessions", 3}, {"held_sessions", 1}, {"transactions", 40}, {"errors", 2}});
  });
  admin.server().Get("/routes/app/replication",
                     [&](const httplib::Request& req, httplib::Response& res) {
                       asked_upstream = req.get_param_value("upstream");
                       Reply(res, {{"route", "app"},
                                   {"sessions",
                                    {{{"backend_pid", 4242},
                                      {"server", {{"host", "10.0.0.7"}, {"port", 6543}}},
                                      {"database", "app"},
                                      {"user", "cdc"},
                                      {"application_name", "pg_recvlogical"},
                                      {"client_addr", "10.1.1.1:50000"},
                                      {"streaming", true},
                                      {"slot", "s1"}}}}});
                     });
  admin.server().Post("/routes/app/replication/feedback",
                      [](const httplib::Request&, httplib::Response& res) {
                        Reply(res, {{"route", "app"}, {"sessions_asked", 1}});
                      });
  admin.server().Post(
      "/routes/app/replication/pause", [&](const httplib::Request& req, httplib::Response& res) {
        pause_body = req.body;
        Reply(res, {{"route", "app"}, {"sessions_paused", 2}, {"pending", pending}});
      });
  ProxyRouter router = admin.Router();

  auto stats = router.Stats();
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_EQ(stats->sessions, 3);
  EXPECT_EQ(stats->held_sessions, 1);
  EXPECT_EQ(stats->transactions, 40);
  EXPECT_EQ(stats->errors, 2);

  auto list = router.ReplicationSessions(kTarget);
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  EXPECT_EQ(asked_upstream, "10.0.0.7:6543");
  ASSERT_EQ(list->size(), 1u);
  const ReplicationSession& s = (*list)[0];
  EXPECT_EQ(s.backend_pid, 4242);
  EXPECT_EQ(s.server, kTarget);
  EXPECT_EQ(s.application_name, "pg_recvlogical");
  EXPECT_EQ(s.client_addr, "10.1.1.1:50000");
  EXPECT_TRUE(s.streaming);
  EXPECT_EQ(s.slot, "s1");
  // A session on another server than the one asked about is not taken for one of its consumers.
  auto elsewhere = router.ReplicationSessions(Endpoint{"10.0.0.8", 6543});
  EXPECT_EQ(elsewhere.status().code(), Code::kInternal);
  EXPECT_EQ(router.ReplicationSessions(Endpoint{"", 0}).status().code(), Code::kInvalidArgument);

  EXPECT_EQ(router.RequestReplicationFeedback().value(), 1);
  auto paused = router.PauseReplication();
  ASSERT_TRUE(paused.ok()) << paused.status().ToString();
  EXPECT_EQ(*paused, 2);
  EXPECT_EQ(nlohmann::json::parse(pause_body)["wait_ms"], 1000) << "half of admin_timeout_ms";
  pending = 1;
  paused = router.PauseReplication();
  EXPECT_EQ(paused.status().code(), Code::kTimeout);
  EXPECT_NE(paused.status().message().find("1 of 2 paused replication session(s)"),
            std::string::npos)
      << paused.status().message();
}

// A server that accepts TCP connections but never answers: every admin step
// must still end at its deadline.
TEST(PgBouncerRouter, SilentAdminConsoleCannotMakeHoldHang) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(listen(fd, 8), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const int port = ntohs(addr.sin_port);

  PgBouncerRouter router({.admin_conninfo = "host=127.0.0.1 port=" + std::to_string(port) +
                                            " dbname=pgbouncer user=postgres sslmode=disable",
                          .config_file = "/nonexistent.ini",
                          .route = "app",
                          .admin_timeout_ms = 500});
  auto start = std::chrono::steady_clock::now();
  Status held = router.Hold(300);
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
                  std::chrono::steady_clock::now() - start)
                  .count();
  EXPECT_EQ(held.code(), Code::kTimeout) << held.ToString();
  EXPECT_NE(held.message().find("nothing was paused"), std::string::npos) << held.message();
  EXPECT_LT(took, 3000);
  start = std::chrono::steady_clock::now();
  EXPECT_EQ(router.Release().code(), Code::kTimeout);
  EXPECT_EQ(router.Current().status().code(), Code::kTimeout);
  took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                               start)
             .count();
  EXPECT_LT(took, 5000);
  close(fd);
}

TEST(PgBouncerProcess, RenderIniListsDatabasesAndSettings) {
  PgBouncerProcess::Options opts;
  opts.databases = {{"app", {"127.0.0.1", 5433}, "postgres", "pool_size=5"},
                    {"other", {"127.0.0.1", 5434}}};
  opts.settings = {{"query_wait_timeout", "20"}};
  std::string ini = PgBouncerProcess::RenderIni(opts, "/d", 7000);
  EXPECT_NE(ini.find("app = host=127.0.0.1 port=5433 dbname=postgres pool_size=5\n"),
            std::string::npos);
  EXPECT_NE(ini.find("other = host=127.0.0.1 port=5434 dbname=other\n"), std::string::npos);
  EXPECT_NE(ini.find("listen_port = 7000\n"), std::string::npos);
  EXPECT_NE(ini.find("pool_mode = transaction\n"), std::string::npos);
  EXPECT_NE(ini.find("query_wait_timeout = 20\n"), std::string::npos);
}

}  // namespace
}  // namespace pgshift
