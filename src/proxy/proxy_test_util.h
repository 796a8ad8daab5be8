// Test helpers for pgshift-proxy: certificates made with the openssl CLI, two
// real PostgreSQL clusters with the same schema (pgbench -i on both) and a
// SCRAM-authenticated role, and an in-process proxy in front of them.
// Not thread-safe; one test owns one ProxyEnv.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/process.h"
#include "common/status.h"
#include "pg/conn.h"
#include "proxy/config.h"
#include "proxy/proxy.h"
#include "router/router.h"
#include "testing/pg_harness.h"

namespace pgshift::proxy::testing {

// CA "ca" signs server (SAN IP:127.0.0.1, DNS:localhost), "app-client" and
// "other-client"; a second CA "evil-ca" signs "evil-client" (CN app-client).
Status MakeCerts(const std::string& dir);

// How long the test proxy keeps a moved session's previous server connection.
inline constexpr int kTestRetireDelayMs = 2000;

struct ProxyEnv {
  std::unique_ptr<pgshift::testing::TestCluster> a, b;  // b only when two clusters were asked
  std::string certs;                                    // directory with the certificates
  ProxyConfig config;
  std::unique_ptr<Proxy> proxy;

  // Clusters with role "app" (SCRAM password "secret", forced by pg_hba) owning
  // database "app" initialised by pgbench -i; a proxy route "app" → a.
  // The route's "uncarriable" is `uncarriable`; `upstream_pool` false turns
  // the pool off (a client's end then ends its backend).
  static Result<std::unique_ptr<ProxyEnv>> Create(
      bool two_clusters, bool allow_plaintext = false, int busy_poll_us = 0,
      UncarriableMode uncarriable = UncarriableMode::kEnd, bool upstream_pool = true);
  ~ProxyEnv();

  // libpq conninfo through the proxy with the client certificate `client` ("" = none).
  std::string Conninfo(const std::string& client = "app-client", const std::string& db = "app",
                       const std::string& user = "app") const;
  std::string AdminUrl() const { return "http://127.0.0.1:" + std::to_string(proxy->admin_port()); }
  UpstreamConfig Upstream(pgshift::testing::TestCluster& c) const {
    return UpstreamConfig{.host = "127.0.0.1", .port = c.port()};
  }
};

// Turns TLS on in cluster `c` with the test CA's server certificate (SAN
// 127.0.0.1) and points the env's route "app" at it with upstream TLS,
// verified with the test CA.
Status UseServerTls(ProxyEnv& env, pgshift::testing::TestCluster& c);
// The admin API's body (PUT /routes/app) for that upstream.
std::string TlsUpstreamJson(const ProxyEnv& env, pgshift::testing::TestCluster& c);

// Runs psql -X -At -c sql with `conninfo`; returns exit code and output.
Result<ProcessResult> Psql(const std::string& conninfo, const std::string& sql);

struct PgbenchSummary {
  int exit_code = -1;
  int64_t processed = 0;
  int64_t failed = 0;
  bool aborted = false;
  double tps = 0;
  double latency_ms = 0;
  std::string output;
};
PgbenchSummary ParsePgbench(const ProcessResult& r);

// Test conveniences; each records a gtest failure when its step fails.
// The first column of the first row of `sql` ("" on error).
std::string One(PgConn& c, const std::string& sql);
std::unique_ptr<ProxyEnv> MustEnv(bool two, bool plaintext = false, int busy_poll_us = 0,
                                  UncarriableMode uncarriable = UncarriableMode::kEnd,
                                  bool upstream_pool = true);
// A ProxyRouter for the env's route "app".
std::unique_ptr<Router> MakeRouterFor(ProxyEnv& env);
// A count(*) query on database "app" of `c`; -1 on error.
int64_t Count(pgshift::testing::TestCluster& c, const std::string& sql);
// pgbench through the proxy (4 clients, -M mode), with the client certificate
// or (plaintext) without TLS.
ProcessSpec PgbenchSpec(ProxyEnv& env, const std::string& mode, int seconds,
                        bool plaintext = false);

// An HTTP call to the admin API; returns status and body.
std::pair<int, std::string> Admin(const std::string& url, const std::string& method,
                                  const std::string& path, const std::string& body = "");

}  // namespace pgshift::proxy::testing
