#include "proxy/upstream.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <unistd.h>

#include <asio/experimental/awaitable_operators.hpp>

#include "proxy/protocol.h"
#include "proxy/scram.h"

namespace pgshift::proxy {
namespace {

using namespace asio::experimental::awaitable_operators;

// Read size of the message-at-a-time reads during logins and helper queries.
constexpr size_t kReadChunk = 8192;

// Reads one complete message into *msg_storage and decodes it.
asio::awaitable<Status> ReadMessage(ServerConn& c, std::string& buf, std::string& storage,
                                    Message* msg) {
  while (true) {
    std::string err;
    Message m;
    DecodeStatus st = DecodeMessage(buf, &m, &err);
    if (st == DecodeStatus::kError) co_return Internal("malformed message from upstream: " + err);
    if (st == DecodeStatus::kOk) {
      storage.assign(buf.data(), m.total);
      buf.erase(0, m.total);
      msg->type = storage[0];
      msg->body = std::string_view(storage).substr(5);
      msg->total = storage.size();
      co_return Status::OK();
    }
    char tmp[kReadChunk];
    auto [ec, n] = co_await c.stream.ReadSome(tmp, sizeof(tmp));
    if (ec) co_return Unavailable("upstream closed the connection: " + ec.message());
    buf.append(tmp, n);
  }
}

std::string ErrorText(std::string_view body) {
  std::map<char, std::string> f;
  ParseErrorFields(body, &f);
  std::string s = f['M'];
  if (!f['C'].empty()) s += " (SQLSTATE " + f['C'] + ")";
  return s;
}

asio::awaitable<Status> Login(ServerConn& c, const UpstreamLogin& login,
                              std::string* server_error) {
  std::string endpoint = login.upstream.host + ":" + std::to_string(login.upstream.port);
  if (login.upstream.tls) {
    if (co_await c.stream.WriteAll(SslRequest()))
      co_return Unavailable("cannot write to upstream " + endpoint);
    char answer = 0;
    auto [ec, n] = co_await c.stream.ReadSome(&answer, 1);
    if (ec || n != 1) co_return Unavailable("upstream " + endpoint + " closed during SSLRequest");
    if (answer != 'S')
      co_return Unavailable("upstream " + endpoint +
                            " does not accept TLS but the route requires it");
    TlsConn* tls = c.stream.StartTls(/*server=*/false);
    if (!tls) co_return Unavailable("cannot start TLS to upstream " + endpoint);
    SSL* ssl = tls->ssl();
    if (!login.upstream.ca.empty()) {
      SSL_set_verify(ssl, SSL_VERIFY_PEER, nullptr);
      SSL_set1_host(ssl, login.upstream.host.c_str());  // like verify-full
    } else {
      SSL_set_verify(ssl, SSL_VERIFY_NONE, nullptr);
    }
    SSL_set_tlsext_host_name(ssl, login.upstream.host.c_str());
    if (auto hec = co_await c.stream.Handshake())
      co_return Unavailable("TLS handshake with upstream " + endpoint +
                            " failed: " + hec.message());
  }
  if (co_await c.stream.WriteAll(StartupMessage(login.startup_params)))
    co_return Unavailable("cannot write to upstream " + endpoint);
  std::string buf, storage;
  std::optional<ScramClient> scram;
  std::string user;
  for (const auto& [k, v] : login.startup_params)
    if (k == "user") user = v;
  auto need_password = [&]() -> Status {
    if (!login.credential || login.credential->password.empty())
      return FailedPrecondition(
          "upstream " + endpoint + " asks for a password for role \"" + user +
          "\" but the proxy holds no credentials for it (add it to credentials)");
    return Status::OK();
  };
  while (true) {
    Message m;
    Status st = co_await ReadMessage(c, buf, storage, &m);
    if (!st.ok()) co_return st;
    BodyReader r(m.body);
    switch (m.type) {
      case 'R': {
        int32_t code = -1;
        if (!r.ReadInt32(&code))
          co_return Internal("malformed authentication request from upstream");
        if (code == 0) break;
        if (code == 3) {
          if (Status np = need_password(); !np.ok()) co_return np;
          co_await c.stream.WriteAll(PasswordMessage(login.credential->password));
        } else if (code == 5) {
          if (Status np = need_password(); !np.ok()) co_return np;
          std::string_view salt;
          if (!r.ReadBytes(4, &salt)) co_return Internal("malformed md5 request from upstream");
          co_await c.stream.WriteAll(
              PasswordMessage(Md5PasswordHash(user, login.credential->password, salt)));
        } else if (code == 10) {
          if (Status np = need_password(); !np.ok()) co_return np;
          bool has_scram = false;
          std::string_view mech;
          while (r.ReadCString(&mech) && !mech.empty())
            if (mech == "SCRAM-SHA-256") has_scram = true;
          if (!has_scram)
            co_return Unavailable("upstream " + endpoint +
                                  " offers no SASL mechanism the proxy supports");
          scram.emplace(login.credential->password);
          co_await c.stream.WriteAll(SaslInitialResponse("SCRAM-SHA-256", scram->ClientFirst()));
        } else if (code == 11) {
          if (!scram) co_return Internal("SASLContinue without SASL from upstream");
          auto final_msg = scram->ClientFinal(r.Rest());
          if (!final_msg.ok()) co_return final_msg.status();
          co_await c.stream.WriteAll(SaslResponse(*final_msg));
        } else if (code == 12) {
          if (!scram) co_return Internal("SASLFinal without SASL from upstream");
          if (Status vs = scram->VerifyServerFinal(r.Rest()); !vs.ok()) co_return vs;
        } else {
          co_return Unavailable("upstream " + endpoint + " asks for authentication method " +
                                std::to_string(code) + ", which the proxy does not support");
        }
        break;
      }
      case 'E':
        *server_error = storage;
        co_return Unavailable("upstream " + endpoint + " refused the login: " + ErrorText(m.body));
      case 'S':
        NoteParameterStatus(m.body, &c.parameters);
        break;
      case 'K': {
        int32_t pid = 0, key = 0;
        if (!r.ReadInt32(&pid) || !r.ReadInt32(&key))
          co_return Internal("malformed BackendKeyData");
        c.backend_pid = static_cast<uint32_t>(pid);
        c.backend_key = static_cast<uint32_t>(key);
        break;
      }
      case 'Z':
        c.leftover = buf;
        co_return Status::OK();
      case 'N':
        break;
      default:
        co_return Internal(std::string("unexpected message '") + m.type +
                           "' from upstream during login");
    }
  }
}

}  // namespace

bool NoteParameterStatus(std::string_view body,
                         std::vector<std::pair<std::string, std::string>>* params) {
  BodyReader r(body);
  std::string_view k, v;
  if (!r.ReadCString(&k) || !r.ReadCString(&v)) return false;
  for (auto& [name, value] : *params) {
    if (name == k) {
      value = v;
      return true;
    }
  }
  params->emplace_back(k, v);
  return true;
}

asio::awaitable<Result<GenericSocket>> ConnectSocket(const UpstreamConfig& upstream,
                                                     int timeout_ms) {
  auto ex = co_await asio::this_coro::executor;
  std::string endpoint = upstream.host + ":" + std::to_string(upstream.port);
  std::vector<asio::generic::stream_protocol::endpoint> endpoints;
  bool is_tcp = upstream.host.empty() || upstream.host[0] != '/';
  if (!is_tcp) {
    endpoint = upstream.host + "/.s.PGSQL." + std::to_string(upstream.port);
    endpoints.emplace_back(asio::local::stream_protocol::endpoint(endpoint));
  } else {
    tcp::resolver resolver(ex);
    auto [rec, results] =
        co_await resolver.async_resolve(upstream.host, std::to_string(upstream.port), kNoThrow);
    if (rec) co_return Unavailable("cannot resolve upstream " + endpoint + ": " + rec.message());
    for (const auto& r : results) endpoints.emplace_back(r.endpoint());
  }
  asio::error_code last = asio::error::host_not_found;
  for (const auto& ep : endpoints) {
    auto s = std::make_shared<GenericSocket>(ex);
    asio::steady_timer timer(ex);
    timer.expires_after(std::chrono::milliseconds(timeout_ms));
    auto expired = std::make_shared<bool>(false);
    timer.async_wait([s, expired](asio::error_code ec) {
      if (ec) return;
      *expired = true;
      asio::error_code ig;
      s->close(ig);
    });
    auto [ec] = co_await s->async_connect(ep, kNoThrow);
    timer.cancel();
    if (!ec && !*expired) {
      if (is_tcp) {
        int one = 1;
        ::setsockopt(s->native_handle(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      }
      // The connect left the socket registered for EPOLLOUT for good (Asio
      // never drops it), and every ACK would then wake the event loop: a
      // fresh registration watches reads only. It matters most for a session
      // the kernel forwards (splice/), where nothing else should wake us.
      asio::error_code rec;
      int fd = s->release(rec);
      if (rec) co_return Unavailable("upstream " + endpoint + ": " + rec.message());
      GenericSocket fresh(ex);
      fresh.assign(ep.protocol(), fd, rec);
      if (rec) {
        ::close(fd);
        co_return Unavailable("upstream " + endpoint + ": " + rec.message());
      }
      co_return std::move(fresh);
    }
    last = *expired ? asio::error::timed_out : ec;
  }
  co_return Unavailable("cannot connect to upstream " + endpoint + ": " + last.message());
}

asio::awaitable<LoginOutcome> ConnectUpstream(UpstreamLogin login) {
  auto ex = co_await asio::this_coro::executor;
  LoginOutcome out;
  std::string endpoint = login.upstream.host + ":" + std::to_string(login.upstream.port);
  asio::steady_timer deadline(ex);
  deadline.expires_after(std::chrono::milliseconds(login.timeout_ms));
  auto timed_out = std::make_shared<bool>(false);
  auto sock = co_await ConnectSocket(login.upstream, login.timeout_ms);
  if (!sock.ok()) {
    out.status = sock.status();
    co_return out;
  }
  std::shared_ptr<asio::ssl::context> verifying;
  if (login.upstream.tls && !login.upstream.ca.empty()) {
    verifying = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_client);
    SSL_CTX_set_min_proto_version(verifying->native_handle(), TLS1_2_VERSION);
    asio::error_code ec;
    verifying->load_verify_file(login.upstream.ca, ec);
    if (ec) {
      out.status = InvalidArgument("cannot load upstream CA file " + login.upstream.ca + ": " +
                                   ec.message());
      co_return out;
    }
  }
  auto conn = std::make_shared<ServerConn>(std::move(*sock), verifying, *login.tls_context);
  deadline.async_wait([conn, timed_out](asio::error_code ec) {
    if (!ec) {
      *timed_out = true;
      conn->stream.Close();
    }
  });
  conn->upstream = login.upstream;
  Status st = co_await Login(*conn, login, &out.server_error);
  deadline.cancel();
  if (*timed_out) st = Timeout("login to upstream " + endpoint + " timed out");
  if (!st.ok()) {
    conn->stream.Close();
    out.status = st;
    co_return out;
  }
  out.conn = conn;
  co_return out;
}

asio::awaitable<Result<std::vector<std::vector<std::string>>>> SimpleQuery(ServerConn& c,
                                                                           std::string sql) {
  if (co_await c.stream.WriteAll(QueryMessage(sql)))
    co_return Unavailable("cannot write to upstream");
  std::vector<std::vector<std::string>> rows;
  Status error;
  std::string buf = std::move(c.leftover), storage;
  c.leftover.clear();
  while (true) {
    Message m;
    Status st = co_await ReadMessage(c, buf, storage, &m);
    if (!st.ok()) co_return st;
    if (m.type == 'D') {
      BodyReader r(m.body);
      int16_t n = 0;
      r.ReadInt16(&n);
      std::vector<std::string> row;
      for (int i = 0; i < n; i++) {
        int32_t len = 0;
        std::string_view v;
        if (!r.ReadInt32(&len)) break;
        if (len >= 0 && r.ReadBytes(static_cast<size_t>(len), &v))
          row.emplace_back(v);
        else
          row.emplace_back();
      }
      rows.push_back(std::move(row));
    } else if (m.type == 'S') {
      NoteParameterStatus(m.body, &c.parameters);
    } else if (m.type == 'E') {
      error = Internal(ErrorText(m.body));
    } else if (m.type == 'Z') {
      c.leftover = buf;
      if (!error.ok()) co_return error;
      co_return rows;
    }
  }
}

asio::awaitable<Status> ParseOnly(ServerConn& c, std::vector<std::string> texts) {
  if (texts.empty()) co_return Status::OK();
  std::string out;
  for (const auto& t : texts) {
    std::string body(1, '\0');  // the unnamed statement
    body += t;
    body += '\0';
    AppendInt16(&body, 0);  // no parameter types: the server infers them
    out += EncodeMessage('P', body);
    out += EncodeMessage('S', "");
  }
  if (co_await c.stream.WriteAll(out)) co_return Unavailable("cannot write to upstream");
  std::string buf = std::move(c.leftover), storage;
  c.leftover.clear();
  size_t ready = 0;
  while (ready < texts.size()) {
    Message m;
    Status st = co_await ReadMessage(c, buf, storage, &m);
    if (!st.ok()) co_return st;
    if (m.type == 'Z') ready++;
  }
  c.leftover = buf;
  co_return Status::OK();
}

asio::awaitable<void> SendCancel(UpstreamConfig upstream, uint32_t pid, uint32_t key) {
  auto sock = co_await ConnectSocket(upstream, kCancelConnectTimeoutMs);
  if (!sock.ok()) co_return;
  std::string req = CancelRequest(pid, key);
  co_await asio::async_write(*sock, asio::buffer(req), kNoThrow);
  // The server closes after reading the request; wait for that so the cancel is delivered.
  char b;
  co_await sock->async_read_some(asio::buffer(&b, 1), kNoThrow);
}

}  // namespace pgshift::proxy
