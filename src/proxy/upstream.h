// Upstream logins of pgshift-proxy: connect to a PostgreSQL server, upgrade
// to TLS when the route asks for it, send the client's startup parameters
// and authenticate with the credentials the proxy holds (SCRAM-SHA-256, md5,
// cleartext or trust). Coroutines on the session's executor.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "proxy/config.h"
#include "proxy/net.h"

namespace pgshift::proxy {

struct ServerConn {
  ServerConn(GenericSocket s, std::shared_ptr<asio::ssl::context> ctx, asio::ssl::context& fallback)
      : tls_context(std::move(ctx)),
        stream(std::move(s), tls_context ? *tls_context : fallback),
        outbox(stream.socket().get_executor()) {}
  std::shared_ptr<asio::ssl::context> tls_context;  // own context when verifying with upstream.ca
  UpstreamStream stream;
  Outbox outbox;
  UpstreamConfig upstream;
  // ParameterStatus values as the server last sent them (the login's, then
  // each report after it that reaches the proxy): what a client that takes
  // this backend from the pool is told at its login.
  std::vector<std::pair<std::string, std::string>> parameters;
  uint32_t backend_pid = 0;
  uint32_t backend_key = 0;
  std::string leftover;  // bytes read after the login's ReadyForQuery
};

// Records a ParameterStatus message body in `params` (replacing the value
// of a name seen before). False when the body is malformed.
bool NoteParameterStatus(std::string_view body,
                         std::vector<std::pair<std::string, std::string>>* params);

// Where to connect: host "/dir" is a Unix-domain socket directory (libpq's rule:
// the socket is /dir/.s.PGSQL.<port>); anything else is resolved for TCP.
asio::awaitable<Result<GenericSocket>> ConnectSocket(const UpstreamConfig& upstream,
                                                     int timeout_ms);

// A login (connect, TLS, authentication) that takes longer fails.
inline constexpr int kUpstreamLoginTimeoutMs = 10000;
// Connecting to forward a CancelRequest.
inline constexpr int kCancelConnectTimeoutMs = 10000;

struct UpstreamLogin {
  UpstreamConfig upstream;
  std::vector<std::pair<std::string, std::string>> startup_params;
  std::optional<Credential> credential;
  asio::ssl::context* tls_context = nullptr;  // client context for upstream TLS without a CA
  int timeout_ms = kUpstreamLoginTimeoutMs;
};

struct LoginOutcome {
  std::shared_ptr<ServerConn> conn;  // null on failure
  Status status;
  std::string server_error;  // the server's raw ErrorResponse, to relay to the client
};

asio::awaitable<LoginOutcome> ConnectUpstream(UpstreamLogin login);

// Runs one simple query on a logged-in connection, reading until
// ReadyForQuery. Rows come back as text. An ErrorResponse is an error Status.
// ParameterStatus reports update c.parameters.
asio::awaitable<Result<std::vector<std::vector<std::string>>>> SimpleQuery(ServerConn& c,
                                                                           std::string sql);

// Parses each text as the unnamed statement, each with its own Sync so a
// text the server rejects does not stop the rest, and ignores the answers:
// parse analysis loads the catalog entries a statement uses and executes
// nothing. Warms a fresh backend for the statements a session runs. An error
// only when the connection failed.
// Takes the texts by value: the caller's list may grow while this waits.
asio::awaitable<Status> ParseOnly(ServerConn& c, std::vector<std::string> texts);

// Sends a CancelRequest for (pid, key) to `upstream` and closes.
asio::awaitable<void> SendCancel(UpstreamConfig upstream, uint32_t pid, uint32_t key);

}  // namespace pgshift::proxy
