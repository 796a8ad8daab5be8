// Integration tests of pgshift-proxy's client TLS data path (tls_stream.h):
// the kTLS switch and its fallback on a kernel without TLS, results and
// queries of many records each way, pgbench over mTLS, and session
// resumption with a ticket for clients that reconnect.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <string>

#include "proxy/protocol.h"
#include "proxy/proxy_test_util.h"
#include "proxy/tls_stream.h"

namespace pgshift::proxy::testing {
namespace {

TEST(ProxyTlsConfig, KtlsIsAutoByDefaultOrOffAndNothingElse) {
  auto def = ParseProxyConfig(nlohmann::json::object());
  ASSERT_TRUE(def.ok()) << def.status().ToString();
  EXPECT_EQ(def->ktls, KtlsMode::kAuto);
  auto off = ParseProxyConfig({{"ktls", "off"}});
  ASSERT_TRUE(off.ok()) << off.status().ToString();
  EXPECT_EQ(off->ktls, KtlsMode::kOff);
  EXPECT_EQ(ToJson(*off)["ktls"], "off");
  auto again = ParseProxyConfig(ToJson(*off));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->ktls, KtlsMode::kOff);
  auto bad = ParseProxyConfig({{"ktls", "on"}});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("ktls must be \"auto\" or \"off\""), std::string::npos)
      << bad.status().message();
}

TEST(ProxyTlsPath, KtlsAutoFallsBackToUserSpaceTlsWhereTheKernelHasNoneAndSessionsWork) {
  auto env = MustEnv(false);
  ASSERT_TRUE(env);
  ASSERT_EQ(env->config.ktls, KtlsMode::kAuto);
  const Status probe = ProbeKernelTls();
  // A result of ~640 KB (dozens of records to the client), a query text of
  // ~100 KB (records the other way; an argument stays under 128 KB) and COPY out, all through mTLS.
  auto big = Psql(env->Conninfo(),
                  "select length(string_agg(md5(g::text), '')) from generate_series(1, 20000) g");
  ASSERT_TRUE(big.ok());
  EXPECT_EQ(big->output, "640000\n");
  auto wide = Psql(env->Conninfo(),
                   "select string_agg(md5(g::text), '') from generate_series(1, "
                   "20000) g");
  ASSERT_TRUE(wide.ok());
  EXPECT_EQ(wide->output.size(), 640001u) << wide->output.substr(0, 200);
  auto long_query = Psql(env->Conninfo(), "select length('" + std::string(100000, 'x') + "')");
  ASSERT_TRUE(long_query.ok());
  EXPECT_EQ(long_query->output, "100000\n");
  auto copy = Psql(env->Conninfo(), "copy (select g from generate_series(1, 50000) g) to stdout");
  ASSERT_TRUE(copy.ok());
  EXPECT_EQ(copy->exit_code, 0);
  EXPECT_EQ(std::count(copy->output.begin(), copy->output.end(), '\n'), 50000);
  // pgbench with its 4 clients over mTLS.
  auto bench = DefaultRunner().Run(PgbenchSpec(*env, "extended", 3));
  ASSERT_TRUE(bench.ok()) << bench.status().ToString();
  PgbenchSummary s = ParsePgbench(*bench);
  EXPECT_EQ(s.exit_code, 0) << s.output;
  EXPECT_GT(s.processed, 0) << s.output;
  EXPECT_EQ(s.failed, 0) << s.output;

  const auto& sh = env->proxy->shared();
  EXPECT_GE(sh.tls_handshakes.load(), 8);  // 4 psql + 4 pgbench clients
  if (!probe.ok()) {
    // This machine's kernel (no CONFIG_TLS): every session took the user-space path.
    EXPECT_EQ(sh.ktls_sessions.load(), 0) << probe.message();
  }
  const std::string metrics = env->proxy->MetricsText();
  EXPECT_NE(metrics.find("pgshift_proxy_tls_handshakes_total "), std::string::npos);
  EXPECT_NE(metrics.find("pgshift_proxy_ktls_sessions_total "), std::string::npos);
}

struct SslCtxFree {
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
struct SslFree {
  void operator()(SSL* s) const { SSL_free(s); }
};

// One login through the proxy as a libpq-like client would do it with raw
// OpenSSL: SSLRequest, TLS (resuming `*session` when set), startup packet,
// messages until ReadyForQuery, Terminate. Keeps the session for the next
// login; *reused says whether this one resumed. Empty on success, else why not.
std::string LoginOnce(int port, SSL_CTX* ctx, SSL_SESSION** session, bool* reused) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) return "connect failed";
  const std::string req = SslRequest();
  char answer = 0;
  if (::write(fd, req.data(), req.size()) != static_cast<ssize_t>(req.size()) ||
      ::read(fd, &answer, 1) != 1 || answer != 'S')
    return "the proxy did not accept the SSLRequest";
  std::unique_ptr<SSL, SslFree> ssl(SSL_new(ctx));
  SSL_set_fd(ssl.get(), fd);
  if (*session) SSL_set_session(ssl.get(), *session);
  if (SSL_connect(ssl.get()) != 1) return "TLS handshake failed";
  const std::string startup = StartupMessage({{"user", "app"}, {"database", "app"}});
  if (SSL_write(ssl.get(), startup.data(), static_cast<int>(startup.size())) <= 0)
    return "cannot send the startup packet";
  std::string in;
  char buf[4096];
  bool ready = false;
  while (!ready) {
    int n = SSL_read(ssl.get(), buf, sizeof(buf));
    if (n <= 0) return "the proxy closed before ReadyForQuery: " + in;
    in.append(buf, static_cast<size_t>(n));
    size_t pos = 0;
    while (in.size() - pos >= 5) {
      uint32_t len = ntohl(*reinterpret_cast<const uint32_t*>(in.data() + pos + 1));
      if (in.size() - pos < len + 1) break;
      if (in[pos] == 'E') return "the proxy refused the login";
      if (in[pos] == 'Z') ready = true;
      pos += len + 1;
    }
  }
  *reused = SSL_session_reused(ssl.get()) == 1;
  const std::string bye = TerminateMessage();
  SSL_write(ssl.get(), bye.data(), static_cast<int>(bye.size()));
  if (*session) SSL_SESSION_free(*session);
  *session = SSL_get1_session(ssl.get());  // the ticket came with the first records
  SSL_shutdown(ssl.get());
  return "";
}

TEST(ProxyTlsPath, AClientThatReconnectsResumesItsSessionWithATicket) {
  auto env = MustEnv(false);
  ASSERT_TRUE(env);
  std::unique_ptr<SSL_CTX, SslCtxFree> ctx(SSL_CTX_new(TLS_client_method()));
  ASSERT_TRUE(ctx);
  const std::string dir = env->certs + "/";
  ASSERT_EQ(SSL_CTX_load_verify_locations(ctx.get(), (dir + "ca.crt").c_str(), nullptr), 1);
  ASSERT_EQ(
      SSL_CTX_use_certificate_file(ctx.get(), (dir + "app-client.crt").c_str(), SSL_FILETYPE_PEM),
      1);
  ASSERT_EQ(
      SSL_CTX_use_PrivateKey_file(ctx.get(), (dir + "app-client.key").c_str(), SSL_FILETYPE_PEM),
      1);
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_CLIENT);

  SSL_SESSION* session = nullptr;
  bool reused = true;
  const int port = env->proxy->port();
  ASSERT_EQ(LoginOnce(port, ctx.get(), &session, &reused), "");
  EXPECT_FALSE(reused) << "the first login is a full handshake";
  ASSERT_NE(session, nullptr);
  EXPECT_EQ(SSL_SESSION_is_resumable(session), 1) << "no ticket came with the first login";
  for (int i = 0; i < 3; i++) {
    ASSERT_EQ(LoginOnce(port, ctx.get(), &session, &reused), "") << "login " << i + 2;
    EXPECT_TRUE(reused) << "login " << i + 2 << " did not resume";
  }
  SSL_SESSION_free(session);
  const auto& sh = env->proxy->shared();
  EXPECT_EQ(sh.tls_handshakes.load(), 4);
  EXPECT_EQ(sh.tls_resumed.load(), 3);
}

}  // namespace
}  // namespace pgshift::proxy::testing
