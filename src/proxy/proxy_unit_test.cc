// Unit tests of pgshift-proxy's pure parts: protocol decoder, SCRAM/md5,
// config parsing, the session state machine and the route hold logic.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "proxy/config.h"
#include "proxy/protocol.h"
#include "proxy/proxy.h"
#include "proxy/route.h"
#include "proxy/scram.h"
#include "proxy/session_state.h"
#include "proxy/shared.h"

namespace pgshift::proxy {
namespace {

TEST(Protocol, DecodesMessagesAndAsksForMoreData) {
  std::string q = QueryMessage("select 1");
  Message m;
  std::string err;
  for (size_t cut = 0; cut < q.size(); cut++)
    EXPECT_EQ(DecodeMessage(std::string_view(q).substr(0, cut), &m, &err),
              DecodeStatus::kNeedMoreData);
  std::string with_more = q + "trailing";
  ASSERT_EQ(DecodeMessage(with_more, &m, &err), DecodeStatus::kOk);
  EXPECT_EQ(m.type, 'Q');
  EXPECT_EQ(m.body, std::string_view("select 1\0", 9));
  EXPECT_EQ(m.total, q.size());
}

TEST(Protocol, RejectsImpossibleLengths) {
  Message m;
  std::string err;
  EXPECT_EQ(DecodeMessage(std::string("Q\0\0\0\3", 5), &m, &err), DecodeStatus::kError);
  EXPECT_NE(err.find("invalid message length 3"), std::string::npos);
  EXPECT_EQ(DecodeMessage(std::string("Q\x7f\xff\xff\xff", 5), &m, &err), DecodeStatus::kError);
  EXPECT_NE(err.find("1 GiB"), std::string::npos);
}

TEST(Protocol, DecodesStartupSslAndCancelPackets) {
  StartupPacket p;
  std::string err;
  std::string s =
      StartupMessage({{"user", "app"}, {"database", "db"}, {"replication", "database"}});
  ASSERT_EQ(DecodeStartup(s, &p, &err), DecodeStatus::kOk) << err;
  EXPECT_EQ(p.kind, StartupPacket::Kind::kStartup);
  EXPECT_EQ(p.Param("user"), "app");
  EXPECT_EQ(p.Param("replication"), "database");
  EXPECT_EQ(p.Param("missing"), "");
  ASSERT_EQ(DecodeStartup(SslRequest(), &p, &err), DecodeStatus::kOk);
  EXPECT_EQ(p.kind, StartupPacket::Kind::kSslRequest);
  ASSERT_EQ(DecodeStartup(CancelRequest(7, 99), &p, &err), DecodeStatus::kOk);
  EXPECT_EQ(p.kind, StartupPacket::Kind::kCancel);
  EXPECT_EQ(p.cancel_pid, 7u);
  EXPECT_EQ(p.cancel_key, 99u);
  // Unterminated parameter list.
  std::string bad = s.substr(0, s.size() - 1);
  bad[3] = static_cast<char>(bad.size());
  EXPECT_EQ(DecodeStartup(bad, &p, &err), DecodeStatus::kError);
  // Oversized.
  std::string big("\x00\x01\x00\x00\x00\x03\x00\x00", 8);
  EXPECT_EQ(DecodeStartup(big, &p, &err), DecodeStatus::kError);
  // Protocol 2.
  std::string v2("\x00\x00\x00\x08\x00\x02\x00\x00", 8);
  EXPECT_EQ(DecodeStartup(v2, &p, &err), DecodeStatus::kError);
  EXPECT_NE(err.find("protocol 2.0"), std::string::npos);
}

TEST(Protocol, ParsesNamesOfExtendedQueryMessages) {
  std::string body = std::string("stmt1\0select $1\0", 16);
  AppendInt16(&body, 1);
  AppendInt32(&body, 23);
  std::string name;
  ASSERT_TRUE(ParseStatementName(body, &name));
  EXPECT_EQ(name, "stmt1");
  EXPECT_FALSE(ParseStatementName(body.substr(0, body.size() - 2), &name));  // truncated types
  std::string bind = std::string("portal\0stmt1\0", 13);
  ASSERT_TRUE(ParseBindStatement(bind, &name));
  EXPECT_EQ(name, "stmt1");
  char kind;
  ASSERT_TRUE(ParseDescribeOrClose(std::string("Sabc\0", 5), &kind, &name));
  EXPECT_EQ(kind, 'S');
  EXPECT_EQ(name, "abc");
  EXPECT_FALSE(ParseDescribeOrClose(std::string("Xabc\0", 5), &kind, &name));
  std::map<char, std::string> f;
  std::string e = ErrorResponse("FATAL", "28000", "no");
  ASSERT_TRUE(ParseErrorFields(std::string_view(e).substr(5), &f));
  EXPECT_EQ(f['C'], "28000");
  EXPECT_EQ(f['M'], "no");
}

TEST(Protocol, TellsServerStateReportsFromSessionSettings) {
  auto body = [](std::string_view msg) { return std::string(msg.substr(5)); };
  EXPECT_TRUE(ReportsServerState(body(ParameterStatus("in_hot_standby", "off"))));
  EXPECT_TRUE(ReportsServerState(body(ParameterStatus("server_version", "15.18"))));
  EXPECT_FALSE(ReportsServerState(body(ParameterStatus("TimeZone", "UTC"))));
  EXPECT_FALSE(ReportsServerState(body(ParameterStatus("application_name", "in_hot_standby"))));
  EXPECT_FALSE(ReportsServerState("in_hot_standby"));  // no terminator: malformed, not a report
}

TEST(Scram, MatchesTheRfc7677TestVector) {
  ScramClient c("pencil", "rOprNGfwEbeRWgbNEkqO", "user");
  EXPECT_EQ(c.ClientFirst(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
  auto fin = c.ClientFinal(
      "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
  ASSERT_TRUE(fin.ok()) << fin.status().ToString();
  EXPECT_EQ(*fin,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
            "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
  EXPECT_TRUE(c.VerifyServerFinal("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=").ok());
  EXPECT_FALSE(c.VerifyServerFinal("v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=").ok());
}

TEST(Scram, RemembersTheSaltedPasswordPerPasswordSaltAndCount) {
  const std::string first =
      "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
  const std::string v = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
  for (int round = 0; round < 2; ++round) {  // the second login is served from the cache
    ScramClient c("pencil", "rOprNGfwEbeRWgbNEkqO", "user");
    c.ClientFirst();
    auto fin = c.ClientFinal(first);
    ASSERT_TRUE(fin.ok()) << fin.status().ToString();
    EXPECT_NE(fin->find("p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="), std::string::npos);
    EXPECT_TRUE(c.VerifyServerFinal(v).ok());
  }
  // Another password, or the same one with another count, is not mistaken for it.
  ScramClient other("crayon", "rOprNGfwEbeRWgbNEkqO", "user");
  other.ClientFirst();
  ASSERT_TRUE(other.ClientFinal(first).ok());
  EXPECT_FALSE(other.VerifyServerFinal(v).ok());
  ScramClient fewer("pencil", "rOprNGfwEbeRWgbNEkqO", "user");
  fewer.ClientFirst();
  auto fin = fewer.ClientFinal(
      "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4095");
  ASSERT_TRUE(fin.ok());
  EXPECT_EQ(fin->find("p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="), std::string::npos);
}

TEST(Scram, RejectsAServerNonceThatDoesNotExtendOurs) {
  ScramClient c("pencil", "abc");
  c.ClientFirst();
  EXPECT_FALSE(c.ClientFinal("r=xyz123,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096").ok());
  EXPECT_FALSE(c.ClientFinal("garbage").ok());
}

TEST(Md5, HashesLikeTheServerExpects) {
  EXPECT_EQ(Md5PasswordHash("app", "secret", std::string("\x01\x02\x03\x04", 4)),
            "md5911f527656472583a006e7727877b33e");
}

nlohmann::json GoodConfig() {
  return nlohmann::json::parse(
      R"({"listen":"127.0.0.1:6432","admin_listen":"127.0.0.1:6433","threads":2,
   "tls":{"cert":"server.crt","key":"server.key","client_ca":"ca.crt"},
   "routes":[{"name":"app","database":"app","upstream":{"host":"127.0.0.1","port":5432,"tls":false},
              "allow_plaintext":false,"hold_timeout_ms":5000}],
   "policy":[{"identity":"app-client","databases":["app"],"roles":["app"]}],
   "credentials":[{"role":"app","password":"secret"}]})");
}

TEST(Config, ParsesTheDocumentedExampleAndResolvesPaths) {
  auto c = ParseProxyConfig(GoodConfig(), "/etc/pgshift");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->listen_port, 6432);
  EXPECT_EQ(c->tls.cert_path, "/etc/pgshift/server.crt");
  EXPECT_EQ(c->routes[0].upstream.port, 5432);
  ASSERT_NE(c->FindCredential("app"), nullptr);
  // Round trip keeps the paths as given.
  auto again = ParseProxyConfig(ToJson(*c), "/x");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->tls.cert, "server.crt");
}

TEST(Config, UnknownKeysAreErrorsNamingTheKey) {
  auto j = GoodConfig();
  j["routes"][0]["upstream"]["hots"] = "x";
  auto c = ParseProxyConfig(j);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("unknown key \"hots\" in routes[0].upstream"),
            std::string::npos)
      << c.status().message();
  j = GoodConfig();
  j["thread"] = 3;
  EXPECT_NE(ParseProxyConfig(j).status().message().find("\"thread\""), std::string::npos);
  j = GoodConfig();
  j["routes"].push_back(j["routes"][0]);
  EXPECT_NE(ParseProxyConfig(j).status().message().find("appears twice"), std::string::npos);
  j = GoodConfig();
  j["listen"] = "nohostport";
  EXPECT_FALSE(ParseProxyConfig(j).ok());
  j = GoodConfig();
  j["threads"] = "two";
  EXPECT_NE(ParseProxyConfig(j).status().message().find("wrong type"), std::string::npos);
}

// An optional integer setting: `fallback` when absent, `value` kept through a
// save, and each of `bad` refused with `error` followed by the value.
void ExpectBoundedIntSetting(const std::string& key, int ProxyConfig::*field, int fallback,
                             int value, const std::vector<nlohmann::json>& bad,
                             const std::string& error) {
  auto c = ParseProxyConfig(GoodConfig());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ((*c).*field, fallback);
  auto j = GoodConfig();
  j[key] = value;
  c = ParseProxyConfig(j);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ((*c).*field, value);
  auto again = ParseProxyConfig(ToJson(*c));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again).*field, value);
  for (const nlohmann::json& b : bad) {
    j[key] = b;
    auto st = ParseProxyConfig(j).status();
    EXPECT_FALSE(st.ok()) << b.dump();
    EXPECT_NE(st.message().find(error + b.dump()), std::string::npos) << st.message();
  }
}

TEST(Config, BusyPollUsIsOptionalBoundedAndKeptOnSave) {
  ExpectBoundedIntSetting(
      "busy_poll_us", &ProxyConfig::busy_poll_us, kDefaultBusyPollUs, 250,
      {nlohmann::json(-1), nlohmann::json(kMaxBusyPollUs + 1), nlohmann::json("50"),
       nlohmann::json(2.5), nlohmann::json(nullptr)},
      "busy_poll_us must be an integer number of microseconds from 0 (off) to 10000, got ");
}

TEST(Config, RetireDelayMsIsOptionalBoundedAndKeptOnSave) {
  ExpectBoundedIntSetting("retire_delay_ms", &ProxyConfig::retire_delay_ms, kDefaultRetireDelayMs,
                          0,
                          {nlohmann::json(-5), nlohmann::json(kMaxRetireDelayMs + 1),
                           nlohmann::json("5000"), nlohmann::json(true)},
                          "retire_delay_ms must be an integer number of milliseconds from 0 "
                          "(close at once) to 600000, got ");
}

TEST(Config, RetireIntervalMsIsOptionalBoundedAndKeptOnSave) {
  ExpectBoundedIntSetting("retire_interval_ms", &ProxyConfig::retire_interval_ms,
                          kDefaultRetireIntervalMs, 0,
                          {nlohmann::json(-1), nlohmann::json(kMaxRetireIntervalMs + 1),
                           nlohmann::json("100"), nlohmann::json(1.5)},
                          "retire_interval_ms must be an integer number of milliseconds from 0 "
                          "(no spacing) to 10000, got ");
}

TEST(RetireSchedule, WaitsTheDelayAndSpacesOneCloseFromTheNext) {
  RetireSchedule schedule(std::chrono::milliseconds(200), std::chrono::milliseconds(10));
  const auto before = RetireSchedule::Clock::now();
  auto first = schedule.Next();
  auto second = schedule.Next();
  auto third = schedule.Next();
  EXPECT_GE(first, before + std::chrono::milliseconds(200));
  EXPECT_EQ(second - first, std::chrono::milliseconds(10));
  EXPECT_EQ(third - second, std::chrono::milliseconds(10));
}

TEST(Config, KernelSpliceIsOnByDefaultAndKeptOnSave) {
  auto c = ParseProxyConfig(GoodConfig());
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(c->kernel_splice);
  auto j = GoodConfig();
  j["kernel_splice"] = false;
  c = ParseProxyConfig(j);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_FALSE(c->kernel_splice);
  auto again = ParseProxyConfig(ToJson(*c));
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->kernel_splice);
  j["kernel_splice"] = "no";
  auto st = ParseProxyConfig(j).status();
  EXPECT_NE(st.message().find("kernel_splice has the wrong type"), std::string::npos)
      << st.message();
}

TEST(SessionStateMachine, AllowsTheDocumentedPathsOnly) {
  using S = SessionState;
  using E = SessionEvent;
  EXPECT_EQ(Transition(S::kStartup, E::kLoginStarted), S::kAuthenticating);
  EXPECT_EQ(Transition(S::kAuthenticating, E::kLoggedIn), S::kIdle);
  // A new session during a hold waits before its upstream login, then starts over.
  EXPECT_EQ(Transition(S::kAuthenticating, E::kHoldWait), S::kLoginHeld);
  EXPECT_EQ(Transition(S::kLoginHeld, E::kHoldReleased), S::kStartup);
  EXPECT_EQ(Transition(S::kLoginHeld, E::kLoggedIn), std::nullopt);
  EXPECT_EQ(Transition(S::kIdle, E::kClientBegins), S::kActive);
  EXPECT_EQ(Transition(S::kActive, E::kBoundaryReached), S::kIdle);
  EXPECT_EQ(Transition(S::kIdle, E::kHoldWait), S::kHeld);
  EXPECT_EQ(Transition(S::kHeld, E::kHoldReleased), S::kIdle);
  EXPECT_EQ(Transition(S::kIdle, E::kMigrateBegin), S::kMigrating);
  EXPECT_EQ(Transition(S::kMigrating, E::kMigrateDone), S::kIdle);
  EXPECT_EQ(Transition(S::kActive, E::kCopyBothStarted), S::kStreaming);
  EXPECT_EQ(Transition(S::kStreaming, E::kBoundaryReached), S::kIdle);
  // Never migrate or hold in the middle of a transaction.
  EXPECT_EQ(Transition(S::kActive, E::kMigrateBegin), std::nullopt);
  EXPECT_EQ(Transition(S::kActive, E::kHoldWait), std::nullopt);
  EXPECT_EQ(Transition(S::kStreaming, E::kMigrateBegin), std::nullopt);
  EXPECT_EQ(Transition(S::kStartup, E::kClientBegins), std::nullopt);
  EXPECT_EQ(Transition(S::kHeld, E::kClientBegins), std::nullopt);
  for (S s : {S::kStartup, S::kLoginHeld, S::kIdle, S::kActive, S::kHeld, S::kStreaming})
    EXPECT_EQ(Transition(s, E::kClose), S::kClosed);
}

TEST(RouteHold, ReturnsOnceNoTransactionIsOpenAndReleasesAtTheDeadline) {
  RouteConfig rc{.name = "app", .database = "app", .upstream = {.host = "h", .port = 1}};
  Route r(rc);
  EXPECT_TRUE(r.Hold(100).ok());
  EXPECT_TRUE(r.held());
  r.Release();
  EXPECT_FALSE(r.held());
  r.in_transaction = 2;
  Status st = r.Hold(50);
  EXPECT_EQ(st.code(), Code::kTimeout);
  EXPECT_NE(st.message().find("2 session(s) still in a transaction"), std::string::npos);
  EXPECT_FALSE(r.held());
  // A transaction that ends before the deadline lets the hold succeed.
  std::thread t([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    r.in_transaction = 0;
  });
  EXPECT_TRUE(r.Hold(5000).ok());
  t.join();
  int woken = 0;
  uint64_t id = r.AddWaiter([&] { woken++; });
  r.Release();
  r.RemoveWaiter(id);
  r.Release();
  EXPECT_EQ(woken, 1);
  EXPECT_TRUE(r.Repoint({.host = "h2", .port = 2}));
  EXPECT_FALSE(r.Repoint({.host = "h2", .port = 2}));
  EXPECT_EQ(r.generation(), 1u);
}

TEST(RouteHold, PinningTheBackendsOfADrainedHoldMovesEverySessionAtTheRelease) {
  Route r(RouteConfig{.name = "app", .database = "app", .upstream = {.host = "h", .port = 1}});
  EXPECT_FALSE(r.PinBackends()) << "not held";
  r.in_transaction = 1;
  EXPECT_EQ(r.Hold(20).code(), Code::kTimeout);
  EXPECT_FALSE(r.PinBackends()) << "a hold that did not drain";
  r.in_transaction = 0;
  // A plain hold and release leaves the sessions on their backends.
  ASSERT_TRUE(r.Hold(100).ok());
  EXPECT_TRUE(r.drained());
  r.Release();
  EXPECT_FALSE(r.drained());
  EXPECT_EQ(r.generation(), 0u);
  // Pinned: the release moves the generation although the upstream is the same.
  ASSERT_TRUE(r.Hold(100).ok());
  EXPECT_TRUE(r.PinBackends());
  ASSERT_TRUE(r.Hold(100).ok()) << "holding a held route keeps it drained and pinned";
  EXPECT_TRUE(r.drained());
  r.Release();
  EXPECT_FALSE(r.held());
  EXPECT_EQ(r.generation(), 1u);
  r.Release();
  EXPECT_EQ(r.generation(), 1u) << "the pin ends with its hold";
  // A switch (repoint + release) after a pin: sessions move once, to the new upstream.
  ASSERT_TRUE(r.Hold(100).ok());
  EXPECT_TRUE(r.PinBackends());
  EXPECT_TRUE(r.Repoint({.host = "h2", .port = 2}));
  r.Release();
  EXPECT_EQ(r.target().upstream.host, "h2");
  EXPECT_GT(r.generation(), 1u);
}

}  // namespace
}  // namespace pgshift::proxy

namespace pgshift::proxy {
namespace {

// Spliced sessions are invisible to in_transaction: a hold asks each to come
// back to user space and does not drain before all have; a repoint asks too
// (the kernel would otherwise carry their next transaction to the old server).
TEST(RouteSplice, HoldAndRepointTakeSplicedSessionsBackAndTheHoldWaitsForThem) {
  Route r(RouteConfig{.name = "app", .database = "app", .upstream = {.host = "h", .port = 1}});
  std::atomic<int> asked{0};
  uint64_t id = 0;
  id = r.AddSpliced({.take_back = [&] { asked++; },
                     .peek =
                         [] {
                           return Route::SpliceLive{10, 20, 3};
                         }});
  EXPECT_EQ(r.spliced_sessions.load(), 1);
  EXPECT_EQ(r.splices.load(), 1);
  r.transactions = 5;
  EXPECT_EQ(r.LiveTotals().transactions, 8) << "the kernel's count is added";
  EXPECT_EQ(r.StatsJson()["bytes_to_clients"], 20);
  EXPECT_EQ(r.StatsJson()["spliced_sessions"], 1);

  // Not taken back: the hold times out and says so.
  Status st = r.Hold(50);
  EXPECT_EQ(st.code(), Code::kTimeout);
  EXPECT_NE(st.message().find("1 session(s) still in a transaction"), std::string::npos);
  EXPECT_EQ(asked.load(), 1);

  // Taken back inside a transaction: counted in in_transaction before it
  // leaves the spliced set; the hold drains once that transaction ends.
  std::thread session([&] {
    while (asked.load() < 2) std::this_thread::yield();
    r.in_transaction++;
    r.RemoveSpliced(id);
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    r.in_transaction--;
  });
  auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(r.Hold(5000).ok());
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(25));
  session.join();
  EXPECT_EQ(r.spliced_sessions.load(), 0);
  r.RemoveSpliced(id);
  EXPECT_EQ(r.spliced_sessions.load(), 0) << "removing twice is harmless";
  r.Release();

  int repoint_asks = 0;
  uint64_t id2 = r.AddSpliced(
      {.take_back = [&] { repoint_asks++; }, .peek = [] { return Route::SpliceLive{}; }});
  EXPECT_FALSE(r.Repoint({.host = "h", .port = 1})) << "same upstream";
  EXPECT_EQ(repoint_asks, 0);
  EXPECT_TRUE(r.Repoint({.host = "h2", .port = 2}));
  EXPECT_EQ(repoint_asks, 1);
  r.RemoveSpliced(id2);
}

}  // namespace
}  // namespace pgshift::proxy

namespace pgshift::proxy {
namespace {

// One list (stats.h) makes the admin JSON, /metrics and the proxy-wide
// /stats; every name that tests, bench/ or the README used stays.
TEST(Stats, JsonAndMetricsComeFromTheOneListAndKeepEveryKnownName) {
  Proxy proxy(ProxyConfig{});
  auto route = std::make_shared<Route>(
      RouteConfig{.name = "app", .database = "app", .upstream = {.host = "h", .port = 1}});
  proxy.shared().routes.Add(route);
  route->transactions = 4;
  route->switched_sessions = 2;
  const uint64_t spliced = route->AddSpliced({.take_back = [] {},
                                              .peek =
                                                  [] {
                                                    return Route::SpliceLive{1, 2, 3};
                                                  }});
  proxy.shared().refused = 5;

  const nlohmann::json j = route->StatsJson();
  for (const char* key :
       {"sessions", "held_sessions", "in_transaction", "transactions", "errors",
        "bytes_from_clients", "bytes_to_clients", "switched_sessions", "prewarmed_switches",
        "prewarms_pending", "retiring_connections", "spliced_sessions", "splices",
        /* added: was only in /metrics */ "route_held"})
    EXPECT_TRUE(j.contains(key)) << key;
  size_t route_rows = 0;
  for (const StatDef& d : kStats) route_rows += d.scope == StatScope::kRoute;
  // Every row, and the latency histogram beside them.
  EXPECT_EQ(j.size(), route_rows + 1) << j.dump();
  EXPECT_TRUE(j.contains(std::string(kTxnLatency.name))) << j.dump();
  EXPECT_EQ(j["transactions"], 7) << "the kernel's count is added";
  EXPECT_EQ(j["bytes_to_clients"], 2);
  EXPECT_EQ(j["switched_sessions"], 2);
  EXPECT_EQ(j["route_held"], 0);

  const nlohmann::json p = StatsJson(proxy.shared().Stats(), StatScope::kProxy);
  EXPECT_EQ(p, nlohmann::json({{"refused", 5},
                               {"cancels_sent", 0},
                               {"tls_handshakes", 0},
                               {"tls_resumed", 0},
                               {"ktls_sessions", 0},
                               {"protocol_errors", 0},
                               {"bad_startup_packets", 0},
                               {"pool_hits", 0},
                               {"pool_misses", 0},
                               {"pool_parked", 0},
                               {"pool_idle", 0},
                               {"pool_dropped_unclean", 0},
                               {"pool_dropped_route", 0},
                               {"pool_dropped_reset_failed", 0},
                               {"pool_dropped_full", 0},
                               {"pool_dropped_dead", 0},
                               {"pool_dropped_idle_timeout", 0}}));

  const std::string text = proxy.MetricsText();
  for (const char* name :
       {"sessions", "held_sessions", "in_transaction", "route_held", "transactions_total",
        "errors_total", "client_bytes_total", "server_bytes_total", "session_switches_total",
        "retiring_connections", "spliced_sessions", "splices_total",
        /* added: were only in the JSON */ "prewarmed_switches_total", "prewarms_pending"}) {
    const std::string m = std::string("pgshift_proxy_") + name;
    EXPECT_NE(text.find("# TYPE " + m + " "), std::string::npos) << m;
    EXPECT_NE(text.find(m + "{route=\"app\"} "), std::string::npos) << m;
  }
  EXPECT_NE(text.find("pgshift_proxy_transactions_total{route=\"app\"} 7\n"), std::string::npos);
  EXPECT_NE(text.find("# TYPE pgshift_proxy_transactions_total counter\n"), std::string::npos);
  EXPECT_NE(text.find("# TYPE pgshift_proxy_sessions gauge\n"), std::string::npos);
  for (const char* name : {"refused_total", "cancels_total", "protocol_errors_total"})
    EXPECT_NE(text.find(std::string("\npgshift_proxy_") + name + " "), std::string::npos) << name;
  EXPECT_NE(text.find("\npgshift_proxy_refused_total 5\n"), std::string::npos);

  route->RemoveSpliced(spliced);
  ASSERT_TRUE(route->Hold(1000).ok());
  EXPECT_EQ(route->StatsJson()["route_held"], 1);
  EXPECT_NE(proxy.MetricsText().find("pgshift_proxy_route_held{route=\"app\"} 1\n"),
            std::string::npos);
  route->Release();
}

}  // namespace
}  // namespace pgshift::proxy

namespace pgshift::proxy {
namespace {

TEST(Protocol, FindsTheSlotOfALogicalStartReplication) {
  std::string slot;
  EXPECT_TRUE(ParseStartReplicationSlot(
      std::string("START_REPLICATION SLOT \"s1\" LOGICAL 0/0") + '\0', &slot));
  EXPECT_EQ(slot, "s1");
  EXPECT_TRUE(ParseStartReplicationSlot(
      "  start_replication slot MySlot logical 0/16B3748 (\"include-xids\" '0')", &slot));
  EXPECT_EQ(slot, "myslot") << "unquoted names fold to lower case, as on the server";
  EXPECT_TRUE(ParseStartReplicationSlot("START_REPLICATION SLOT \"We\"\"ird\" LOGICAL 0/0", &slot));
  EXPECT_EQ(slot, "We\"ird");
  slot = "unchanged";
  for (const char* other : {"START_REPLICATION SLOT s PHYSICAL 0/0", "START_REPLICATION 0/0",
                            "IDENTIFY_SYSTEM", "START_REPLICATION SLOT \"open LOGICAL 0/0",
                            "select 'START_REPLICATION SLOT s LOGICAL'", ""}) {
    EXPECT_FALSE(ParseStartReplicationSlot(other, &slot)) << other;
    EXPECT_EQ(slot, "unchanged");
  }
}

TEST(Protocol, EncodesAPrimaryKeepaliveThatAsksForAReply) {
  const std::string k = PrimaryKeepalive(0x0102030405060708ull, 0x1112131415161718, true);
  Message m;
  std::string err;
  ASSERT_EQ(DecodeMessage(k, &m, &err), DecodeStatus::kOk) << err;
  EXPECT_EQ(m.type, 'd');
  EXPECT_EQ(m.total, k.size());
  ASSERT_EQ(m.body.size(), 18u);  // 'k', walEnd, sendTime, replyRequested
  EXPECT_EQ(m.body[0], 'k');
  EXPECT_EQ(m.body.substr(1, 8), std::string_view("\x01\x02\x03\x04\x05\x06\x07\x08", 8));
  EXPECT_EQ(m.body.substr(9, 8), std::string_view("\x11\x12\x13\x14\x15\x16\x17\x18", 8));
  EXPECT_EQ(m.body[17], 1);
  EXPECT_EQ(PrimaryKeepalive(0, 0, false).back(), 0);
}

// The route's side of replication sessions: listing, asking the streaming
// ones for feedback, and a pause that waits until each closed its server side.
TEST(RouteReplication, ListsAsksTheStreamingOnesAndWaitsForPausedSessions) {
  Route r(RouteConfig{.name = "app", .database = "app", .upstream = {.host = "h", .port = 1}});
  int feedback_asked = 0;
  std::mutex mu;
  std::vector<std::shared_ptr<Countdown>> held;  // sessions that have not closed yet; guarded by mu
  auto held_count = [&] {
    std::lock_guard<std::mutex> l(mu);
    return held.size();
  };
  auto member = [&](bool streaming, std::string slot) {
    return Route::ReplicationMember{.describe =
                                        [streaming, slot] {
                                          return ReplicationSessionInfo{.backend_pid = 42,
                                                                        .streaming = streaming,
                                                                        .slot = slot};
                                        },
                                    .request_feedback = [&] { feedback_asked++; },
                                    .pause =
                                        [&](std::shared_ptr<Countdown> done) {
                                          std::lock_guard<std::mutex> l(mu);
                                          held.push_back(std::move(done));
                                        }};
  };
  const uint64_t a = r.AddReplication(member(true, "s1"));
  const uint64_t b = r.AddReplication(member(false, ""));
  EXPECT_EQ(r.replication_sessions.load(), 2);
  auto list = r.ReplicationSessions();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(ToJson(list[0])["slot"], "s1");
  EXPECT_EQ(ToJson(list[0])["backend_pid"], 42);
  EXPECT_EQ(r.RequestReplicationFeedback(), 1) << "only a streaming session is asked";
  EXPECT_EQ(feedback_asked, 1);

  // One session closes its server side 30 ms later, the other only when the wait is over.
  std::thread closer([&] {
    while (held_count() < 2) std::this_thread::yield();
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    std::lock_guard<std::mutex> l(mu);
    held[0].reset();
  });
  const auto start = std::chrono::steady_clock::now();
  Route::PauseOutcome out = r.PauseReplication(300);
  closer.join();
  EXPECT_EQ(out.asked, 2);
  EXPECT_EQ(out.pending, 1);
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(300));
  held.clear();

  std::thread closer2([&] {
    while (held_count() < 2) std::this_thread::yield();
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    std::lock_guard<std::mutex> l(mu);
    held.clear();
  });
  out = r.PauseReplication(5000);
  closer2.join();
  EXPECT_EQ(out.pending, 0) << "returns once both closed";
  r.RemoveReplication(a);
  r.RemoveReplication(b);
  r.RemoveReplication(b);
  EXPECT_EQ(r.replication_sessions.load(), 0) << "removing twice is harmless";
  EXPECT_EQ(r.PauseReplication(5000).asked, 0);
}

TEST(Stats, TransactionLatencyHistogramInJsonAndMetrics) {
  Proxy proxy(ProxyConfig{});
  auto route = std::make_shared<Route>(
      RouteConfig{.name = "app", .database = "app", .upstream = {.host = "h", .port = 1}});
  proxy.shared().routes.Add(route);
  route->txn_latency.Record(800);  // 0.8 ms: the (0.5, 1] ms bucket
  route->txn_latency.Record(800);
  route->txn_latency.Record(70'000);  // 70 ms: the (50, 100] ms bucket
  route->failed_transactions = 1;

  const nlohmann::json h = route->StatsJson()[std::string(kTxnLatency.name)];
  ASSERT_EQ(h["upper_ms"].size() + 1, h["counts"].size()) << h.dump();
  EXPECT_EQ(h["counts"][LatencyBucketOf(800)], 2);
  EXPECT_EQ(h["counts"][LatencyBucketOf(70'000)], 1);
  EXPECT_EQ(h["sum_us"], 71'600);
  EXPECT_EQ(route->StatsJson()["failed_transactions"], 1);

  const std::string text = proxy.MetricsText();
  const std::string m = "pgshift_proxy_transaction_duration_seconds";
  EXPECT_NE(text.find("# TYPE " + m + " histogram\n"), std::string::npos);
  // Cumulative buckets: both 0.8 ms ones by 1 ms, all three by +Inf.
  EXPECT_NE(text.find(m + "_bucket{route=\"app\",le=\"0.001\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find(m + "_bucket{route=\"app\",le=\"+Inf\"} 3\n"), std::string::npos);
  EXPECT_NE(text.find(m + "_count{route=\"app\"} 3\n"), std::string::npos);
  EXPECT_NE(text.find("pgshift_proxy_failed_transactions_total{route=\"app\"} 1\n"),
            std::string::npos);
}

}  // namespace
}  // namespace pgshift::proxy
