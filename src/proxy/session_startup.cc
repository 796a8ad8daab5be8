// Session, part two: the client's way in — SSLRequest/TLS, the startup
// packet, certificate identity against the policy, the proxy's own
// authentication answer, cancel requests, and refusals. Same thread-safety
// as session.h: one session runs on one strand.
#include <openssl/ssl.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <random>

#include "auth/cert_identity.h"
#include "proxy/session.h"

namespace pgshift::proxy {
namespace {

// Startup packets are small; SSLRequest and StartupMessage rarely exceed this.
constexpr size_t kStartupReadChunk = 1024;

bool Matches(const std::vector<std::string>& allowed, const std::string& v) {
  for (const auto& a : allowed)
    if (a == "*" || a == v) return true;
  return false;
}

}  // namespace

asio::awaitable<void> Session::Refuse(std::string_view sqlstate, const std::string& message) {
  spdlog::info("pgshift-proxy: refused {}: {}", Tag(), message);
  if (route_ && state_ != SessionState::kStartup) route_->errors++;
  shared_.refused++;
  client_out_.Append(ErrorResponse("FATAL", sqlstate, message));
  co_await FlushClient();
}
asio::awaitable<bool> Session::Startup() {
  std::string buf;
  StartupPacket p;
  char tmp[kStartupReadChunk];
  while (true) {
    std::string err;
    DecodeStatus st = DecodeStartup(buf, &p, &err);
    if (st == DecodeStatus::kNeedMoreData) {
      auto [ec, n] = co_await client_.ReadSome(tmp, sizeof(tmp));
      if (ec) co_return false;
      buf.append(tmp, n);
      continue;
    }
    if (st == DecodeStatus::kError) {
      shared_.protocol_errors++;
      shared_.bad_startup_packets++;
      if (!p.framing_error) {
        co_await Refuse("08P01", "pgshift-proxy: invalid startup packet: " + err);
        co_return false;
      }
      // As the server does: log it and close without a reply.
      asio::error_code ec;
      auto peer = client_.socket().remote_endpoint(ec);
      spdlog::info("pgshift-proxy: {} from {}; closing", err,
                   ec ? std::string("an unknown peer")
                      : peer.address().to_string() + ":" + std::to_string(peer.port()));
      co_return false;
    }
    buf.erase(0, p.total);
    if (p.kind == StartupPacket::Kind::kSslRequest) {
      if (client_.tls() || !buf.empty()) {
        co_await Refuse("08P01", "pgshift-proxy: unexpected data around the SSL request");
        co_return false;
      }
      if (!shared_.server_tls) {
        if (co_await client_.WriteAll("N")) co_return false;
        continue;
      }
      if (co_await client_.WriteAll("S")) co_return false;
      TlsConn* tls = client_.StartTls(/*server=*/true);
      if (!tls) co_return false;
      tls->VerifyAfterHandshake();
      if (auto hec = co_await client_.Handshake()) {
        spdlog::info("pgshift-proxy: TLS handshake with client failed: {}", hec.message());
        shared_.refused++;
        co_return false;
      }
      NoteTlsSession(*tls);
      continue;
    }
    if (p.kind == StartupPacket::Kind::kGssEncRequest) {
      if (co_await client_.WriteAll("N")) co_return false;
      continue;
    }
    if (p.kind == StartupPacket::Kind::kCancel) {
      co_await HandleCancel(p);
      co_return false;
    }
    break;
  }
  startup_params_ = p.params;
  user_ = p.Param("user");
  database_ = p.Param("database");
  if (user_.empty()) {
    co_await Refuse("28000", "pgshift-proxy: the startup packet names no user");
    co_return false;
  }
  if (database_.empty()) database_ = user_;
  std::string repl = p.Param("replication");
  if (repl == "database") {
    replication_ = true;
  } else if (!repl.empty() && repl != "false" && repl != "off" && repl != "0" && repl != "no") {
    co_await Refuse("0A000",
                    "pgshift-proxy: physical replication connections are not supported; "
                    "use replication=database");
    co_return false;
  }
  route_ = shared_.routes.FindByDatabase(database_);
  if (!route_) {
    co_await Refuse("3D000", "pgshift-proxy: no route serves database \"" + database_ +
                                 "\" (check the database name or add a route)");
    co_return false;
  }
  if (!co_await CheckIdentity(user_, database_)) co_return false;
  if (const Credential* c = shared_.config.FindCredential(user_)) credential_ = *c;
  // A new session logs in only when the route is not held: during a cutover
  // it waits like a transaction at its boundary and then logs in wherever the
  // route points. Mark first, then look at the hold (as EnterTransaction).
  while (true) {
    Advance(SessionEvent::kLoginStarted);
    if (!route_->held()) break;
    Advance(SessionEvent::kHoldWait);
    co_await WaitForRelease();
    if (closed_) co_return false;
    Advance(SessionEvent::kHoldReleased);
  }

  Route::Target target = route_->target();
  generation_ = target.generation;
  server_ = TakePooled(target);
  if (!server_) {
    // A named argument: GCC 12 mishandles brace-initialised temporaries in co_await.
    UpstreamLogin login{target.upstream, startup_params_, credential_, &shared_.upstream_tls};
    LoginOutcome lo = co_await ConnectUpstream(login);
    if (!lo.conn) {
      route_->errors++;
      if (!lo.server_error.empty()) {
        client_out_.Append(lo.server_error);
        co_await FlushClient();
      } else {
        co_await Refuse("08006", "pgshift-proxy: cannot log in to the upstream of route \"" +
                                     route_->name() + "\": " + lo.status.message());
      }
      co_return false;
    }
    server_ = lo.conn;
  }
  cancel_target_ = std::make_shared<CancelTarget>();
  cancel_target_->upstream = server_->upstream;
  cancel_target_->pid = server_->backend_pid;
  cancel_target_->key = server_->backend_key;
  std::tie(cancel_pid_, cancel_key_) = shared_.cancels.Register(cancel_target_);

  std::string hello = AuthenticationOk();
  for (const auto& [k, v] : server_->parameters) hello += ParameterStatus(k, v);
  hello += BackendKeyData(cancel_pid_, cancel_key_);
  hello += ReadyForQuery('I');
  client_out_.Append(hello);
  Advance(SessionEvent::kLoggedIn);
  if (replication_) {
    RegisterReplication();
  } else {
    std::weak_ptr<Session> weak = weak_from_this();
    auto ex = client_.socket().get_executor();
    Route* route = route_.get();  // alive while it calls its members
    member_id_ = route_->AddMember([weak, ex, route](const UpstreamConfig& to) {
      auto s = weak.lock();
      if (!s) return route->PrewarmDone();
      asio::co_spawn(
          ex,
          [s, to]() -> asio::awaitable<void> {
            struct Done {
              Route* r;
              ~Done() { r->PrewarmDone(); }
            } done{s->route_.get()};
            co_await s->Prewarm(to);
          },
          asio::detached);
    });
  }
  co_return co_await FlushClient();
}

asio::awaitable<bool> Session::CheckIdentity(const std::string& user, const std::string& database) {
  if (!client_.tls()) {
    if (route_->allow_plaintext()) co_return true;
    co_await Refuse("28000", "pgshift-proxy: route \"" + route_->name() + "\" (database \"" +
                                 database +
                                 "\") requires TLS with a client certificate; "
                                 "plaintext connections are refused (connect with "
                                 "sslmode=verify-full, sslcert and sslkey)");
    co_return false;
  }
  SSL* ssl = client_.tls_conn()->ssl();
  X509* cert = SSL_get1_peer_certificate(ssl);
  if (!cert) {
    if (route_->allow_plaintext()) co_return true;
    co_await Refuse("28000", "pgshift-proxy: a client certificate is required for database \"" +
                                 database +
                                 "\" (connect with sslcert and sslkey; the "
                                 "certificate must be signed by the proxy's client CA)");
    co_return false;
  }
  std::unique_ptr<X509, decltype(&X509_free)> cert_owner(cert, X509_free);
  long result = SSL_get_verify_result(ssl);
  int verify_error = client_.tls_conn()->verify_error();
  int err = verify_error != 0 ? verify_error : static_cast<int>(result);
  if (err != X509_V_OK) {
    co_await Refuse("28000", std::string("pgshift-proxy: client certificate rejected: ") +
                                 X509_verify_cert_error_string(err) +
                                 " (it must be signed by the CA in the proxy's tls.client_ca)");
    co_return false;
  }
  std::vector<std::string> ids = auth::CertIdentities(cert);
  for (const auto& rule : shared_.config.policy) {
    for (const auto& id : ids) {
      if ((rule.identity == "*" || rule.identity == id) && Matches(rule.databases, database) &&
          Matches(rule.roles, user)) {
        identity_ = id;
        co_return true;
      }
    }
  }
  std::string shown = ids.empty() ? std::string("(none)") : ids.front();
  co_await Refuse("28000", "pgshift-proxy: certificate identity \"" + shown +
                               "\" is not allowed to use database \"" + database + "\" as role \"" +
                               user + "\" (no policy entry allows it)");
  co_return false;
}

void Session::NoteTlsSession(const TlsConn& tls) {
  shared_.tls_handshakes++;
  if (SSL_session_reused(tls.ssl())) shared_.tls_resumed++;
  const bool kernel = tls.ktls_send() || tls.ktls_recv();
  if (kernel) shared_.ktls_sessions++;
  // Every session's path at debug level; the first of each path at info, so
  // the log shows which one sessions take without a line per connection.
  static std::atomic<bool> logged_kernel{false}, logged_user{false};
  bool first = !(kernel ? logged_kernel : logged_user).exchange(true);
  spdlog::log(first ? spdlog::level::info : spdlog::level::debug, "pgshift-proxy: client TLS: {}{}",
              tls.Describe(), first ? " (first session on this path; the rest log at debug)" : "");
}

asio::awaitable<void> Session::HandleCancel(const StartupPacket& p) {
  auto t = shared_.cancels.Find(p.cancel_pid, p.cancel_key);
  if (!t) co_return;  // like the server: unknown keys are ignored silently
  UpstreamConfig up;
  uint32_t pid, key;
  {
    std::lock_guard<std::mutex> l(t->mu);
    up = t->upstream;
    pid = t->pid;
    key = t->key;
  }
  co_await SendCancel(up, pid, key);
  shared_.cancels_sent++;
}

}  // namespace pgshift::proxy
