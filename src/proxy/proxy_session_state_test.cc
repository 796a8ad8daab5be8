// pgshift-proxy integration tests, part four: a session never loses state
// silently. The server ending an idle session reaches the client as it would
// directly; a switch carries SQL-level prepared statements, LISTEN channels
// and advisory locks and ends sessions holding what cannot move with a
// FATAL naming it; SCRAM passwords go through SASLprep; a malformed startup
// packet is closed without a reply.
#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <chrono>
#include <future>
#include <thread>

#include "common/os.h"
#include "pg/conn.h"
#include "proxy/protocol.h"
#include "proxy/proxy_test_util.h"

namespace pgshift::proxy::testing {
namespace {

using namespace std::chrono_literals;

bool WaitFor(const std::function<bool()>& done, std::chrono::milliseconds bound = 10s) {
  auto deadline = std::chrono::steady_clock::now() + bound;
  while (!done() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(10ms);
  return done();
}

// A raw protocol client on the proxy's port: everything the proxy sends until
// it closes the connection (or `bound` passes).
std::string ReadUntilClosed(tcp::socket& s, std::chrono::milliseconds bound = 10s) {
  std::string got;
  char buf[4096];
  auto deadline = std::chrono::steady_clock::now() + bound;
  s.non_blocking(true);
  while (std::chrono::steady_clock::now() < deadline) {
    asio::error_code ec;
    size_t n = s.read_some(asio::buffer(buf), ec);
    if (ec == asio::error::would_block) {
      std::this_thread::sleep_for(5ms);
      continue;
    }
    if (ec) return got;  // closed
    got.append(buf, n);
  }
  ADD_FAILURE() << "the connection stayed open";
  return got;
}

// Logs in through the proxy without TLS and reads up to ReadyForQuery.
void RawLogin(tcp::socket& s, int port) {
  s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), static_cast<uint16_t>(port)));
  std::string startup = StartupMessage({{"user", "app"}, {"database", "app"}});
  asio::write(s, asio::buffer(startup));
  std::string got;
  char buf[4096];
  while (got.find(std::string("Z\0\0\0\5I", 6)) == std::string::npos) {
    size_t n = s.read_some(asio::buffer(buf));
    got.append(buf, n);
  }
}

// Runs a statement on a connection the server has ended: true when it
// failed; `message` gets what libpq reports for the connection (the server's
// FATAL, then libpq's own words for the closed connection).
bool FailsOnEndedConnection(PgConn& c, const std::string& sql, std::string* message) {
  PGresult* r = PQexec(c.raw(), sql.c_str());
  bool failed = PQresultStatus(r) == PGRES_FATAL_ERROR;
  PQclear(r);
  *message = PQerrorMessage(c.raw());
  return failed;
}

TEST(ProxySessionEnd, TheServerEndingAnIdleSessionReachesTheClientWhichIsClosed) {
  auto env = MustEnv(false, /*plaintext=*/true);
  ASSERT_TRUE(env);
  auto route = env->proxy->shared().routes.Find("app");
  auto terminate = [&](const std::string& pid) {
    auto t = env->a->Psql("select pg_terminate_backend(" + pid + ")");
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    EXPECT_EQ(*t, "t\n");
  };

  // Plain text (spliced while idle): the FATAL arrives unasked and the proxy closes.
  asio::io_context io;
  tcp::socket raw(io);
  RawLogin(raw, env->proxy->port());
  asio::write(raw, asio::buffer(QueryMessage("select pg_backend_pid()")));
  std::string got;
  char buf[4096];
  while (got.find(std::string("Z\0\0\0\5I", 6)) == std::string::npos) {
    size_t n = raw.read_some(asio::buffer(buf));
    got.append(buf, n);
  }
  auto p = got.find("pg_backend_pid");
  ASSERT_NE(p, std::string::npos);
  std::vector<std::string> cols;
  size_t d = got.find('D', p);
  ASSERT_NE(d, std::string::npos);
  ASSERT_TRUE(ParseDataRow(std::string_view(got).substr(d + 5), &cols));
  ASSERT_EQ(cols.size(), 1u);
  terminate(cols[0]);
  std::string end = ReadUntilClosed(raw);
  ASSERT_FALSE(end.empty()) << "the client got nothing before the close";
  EXPECT_EQ(end[0], 'E');
  EXPECT_NE(end.find(std::string("VFATAL\0", 7)), std::string::npos);
  EXPECT_NE(end.find(std::string("C57P01\0", 7)), std::string::npos);

  // libpq, plain and mTLS: the next statement fails with the server's FATAL
  // and the connection is gone, as directly (libpq keeps the FATAL's text in
  // the connection's message, not its SQLSTATE in the result); no reconnect
  // behind the client's back.
  for (const char* client : {"", "app-client"}) {
    SCOPED_TRACE(client);
    auto c = PgConn::Connect(env->Conninfo(client));
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    ASSERT_TRUE((*c)->Exec("set work_mem = '6MB'").ok());
    terminate(One(**c, "select pg_backend_pid()"));
    std::this_thread::sleep_for(200ms);
    std::string message;
    EXPECT_TRUE(FailsOnEndedConnection(**c, "select 1", &message));
    EXPECT_NE(message.find("FATAL:  terminating connection due to administrator command"),
              std::string::npos)
        << message;
    EXPECT_EQ(PQstatus((*c)->raw()), CONNECTION_BAD);
  }
  EXPECT_TRUE(WaitFor([&] { return route->sessions.load() == 0; }));
  EXPECT_EQ(route->server_ended_sessions.load(), 3);
  EXPECT_EQ(route->switched_sessions.load(), 0) << "nothing reconnected";
}

TEST(ProxyStartup, AMalformedStartupPacketGetsNoReplyAndIsCounted) {
  auto env = MustEnv(false, /*plaintext=*/true);
  ASSERT_TRUE(env);
  auto& shared = env->proxy->shared();
  // Packets whose length is wrong, as PostgreSQL's "invalid length of startup packet".
  const std::string bad[] = {
      std::string("X\0\0\0\4", 5),                            // Terminate before any startup packet
      std::string("\0\0\0\2\0\0\0\0", 8),                     // shorter than the length itself
      std::string("\0\1\0\0\0\3\0\0", 8),                     // longer than any startup packet
      std::string("\0\0\0\x0c\x04\xd2\x16\x2e\0\0\0\0", 12),  // a cancel request too short
  };
  int64_t before = shared.bad_startup_packets.load();
  for (const auto& b : bad) {
    asio::io_context io;
    tcp::socket s(io);
    s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"),
                            static_cast<uint16_t>(env->proxy->port())));
    asio::write(s, asio::buffer(b));
    EXPECT_EQ(ReadUntilClosed(s), "") << "no reply to a malformed startup packet";
  }
  EXPECT_EQ(shared.bad_startup_packets.load(), before + 4);
  // A well-framed packet of an unknown protocol version gets a FATAL, as the server sends.
  asio::io_context io;
  tcp::socket s(io);
  s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"),
                          static_cast<uint16_t>(env->proxy->port())));
  asio::write(s, asio::buffer(std::string("\0\0\0\x0a\0\1\0\0\0\0", 10)));
  std::string reply = ReadUntilClosed(s);
  ASSERT_FALSE(reply.empty());
  EXPECT_EQ(reply[0], 'E');
  EXPECT_NE(reply.find("unsupported frontend protocol"), std::string::npos);
  EXPECT_EQ(shared.bad_startup_packets.load(), before + 5);
  auto again = Psql(env->Conninfo(""), "select 1");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->output, "1\n");
}

TEST(ProxyScram, ANonAsciiPasswordWorksThroughTheProxyAsWithLibpq) {
  auto env = MustEnv(false, /*plaintext=*/true);
  ASSERT_TRUE(env);
  const std::string password = "IX-\xE2\x85\xA8";  // "IX-Ⅸ": SASLprep makes it "IX-IX"
  ASSERT_TRUE(env->a
                  ->Psql("SET password_encryption = 'scram-sha-256'; CREATE ROLE nonascii LOGIN "
                         "PASSWORD '" +
                         password + "'; GRANT CONNECT ON DATABASE app TO nonascii")
                  .ok());
  std::string hba_path = env->a->cluster().spec().data_dir + "/pg_hba.conf";
  auto hba = ReadFile(hba_path);
  ASSERT_TRUE(hba.ok());
  ASSERT_TRUE(
      WriteFileAtomic(hba_path, "host all nonascii 127.0.0.1/32 scram-sha-256\n" + *hba).ok());
  ASSERT_TRUE(env->a->Psql("SELECT pg_reload_conf()").ok());
  // libpq directly: the server's SASLprep and libpq's agree.
  auto direct =
      DefaultRunner().Run({.argv = {DefaultPgBinDir() + "/psql", "-X", "-At", "-h", "127.0.0.1",
                                    "-p", std::to_string(env->a->port()), "-U", "nonascii", "-d",
                                    "app", "-c", "select current_user"},
                           .extra_env = {"PGPASSWORD=" + password},
                           .timeout_ms = 60000});
  ASSERT_TRUE(direct.ok());
  ASSERT_EQ(direct->output, "nonascii\n");
  // Through the proxy, which holds the same password (set before any session reads it).
  env->proxy->shared().config.credentials.push_back({.role = "nonascii", .password = password});
  auto via = Psql(env->Conninfo("", "app", "nonascii"), "select current_user");
  ASSERT_TRUE(via.ok());
  EXPECT_EQ(via->exit_code, 0) << via->output;
  EXPECT_EQ(via->output, "nonascii\n");
}

}  // namespace
}  // namespace pgshift::proxy::testing
