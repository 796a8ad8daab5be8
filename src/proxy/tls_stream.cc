#include "proxy/tls_stream.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace pgshift::proxy {
namespace {

// One recv takes this much when the socket holds it (OpenSSL's read-ahead
// buffer): a burst of records costs one syscall instead of two per record
// (header, then body). Four maximal records.
constexpr size_t kReadAheadBytes = 4 * (16384 + 256);
// TLS 1.3: AES-128-GCM first (AES-NI, the cheapest; kTLS offloads AES-GCM),
// ChaCha20 for clients without AES hardware.
constexpr const char* kCipherSuites =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
// TLS 1.2 clients: ECDHE with AES-GCM first, then OpenSSL's secure defaults.
constexpr const char* kCipherList = "ECDHE+AESGCM:ECDHE+CHACHA20:DEFAULT:!aNULL:!eNULL";
// One ticket per full handshake: a client that reconnects resumes with it
// (TLS 1.3 PSK) and skips the certificate exchange and signatures.
constexpr size_t kTicketsPerHandshake = 1;
// How long a ticket resumes a session: the client certificate was verified
// at the full handshake, so this bounds how long that check is reused.
constexpr long kSessionLifetimeSeconds = 3600;
constexpr unsigned char kSessionIdContext[] = "pgshift-proxy";

int ConnIndex() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

// RAII for the probe's sockets.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

Status ProbeKernelTls() {
  // The "tls" ULP attaches only to an established TCP socket: a loopback pair.
  Fd lst{::socket(AF_INET, SOCK_STREAM, 0)}, cli{::socket(AF_INET, SOCK_STREAM, 0)};
  if (lst.fd < 0 || cli.fd < 0) return Unavailable(std::string("socket: ") + strerror(errno));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  if (::bind(lst.fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || ::listen(lst.fd, 1) != 0 ||
      ::getsockname(lst.fd, reinterpret_cast<sockaddr*>(&a), &len) != 0 ||
      ::connect(cli.fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0)
    return Unavailable(std::string("loopback probe connection: ") + strerror(errno));
  Fd srv{::accept(lst.fd, nullptr, nullptr)};
  if (srv.fd < 0) return Unavailable(std::string("accept: ") + strerror(errno));
  static constexpr char kUlp[] = "tls";
  if (::setsockopt(cli.fd, SOL_TCP, TCP_ULP, kUlp, sizeof(kUlp) - 1) != 0) {
    int e = errno;
    if (e == ENOENT)
      return Unavailable("the kernel has no TLS module (CONFIG_TLS; setsockopt TCP_ULP \"tls\": " +
                         std::string(strerror(e)) + ")");
    return Unavailable(std::string("setsockopt TCP_ULP \"tls\": ") + strerror(e));
  }
  return Status::OK();
}

void TuneServerContext(SSL_CTX* ctx, KtlsMode ktls) {
  SSL_CTX_set_ciphersuites(ctx, kCipherSuites);
  SSL_CTX_set_cipher_list(ctx, kCipherList);
  uint64_t opts = SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION;
  if (ktls == KtlsMode::kAuto) opts |= SSL_OP_ENABLE_KTLS;
  SSL_CTX_set_options(ctx, opts);
  SSL_CTX_set_session_id_context(ctx, kSessionIdContext, sizeof(kSessionIdContext) - 1);
  SSL_CTX_set_num_tickets(ctx, kTicketsPerHandshake);
  SSL_CTX_set_timeout(ctx, kSessionLifetimeSeconds);
}

TlsConn::TlsConn(SSL_CTX* ctx, int fd, bool server) : ssl_(SSL_new(ctx)) {
  if (!ssl_) return;
  SSL* s = ssl_.get();
  SSL_set_ex_data(s, ConnIndex(), this);
  // Writes may stop after any record (the caller keeps the rest queued) and
  // retry from a queue that moved; a peer closing without close_notify is a
  // plain end of stream (PostgreSQL clients often just close).
  SSL_set_mode(s, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_set_options(s, SSL_OP_IGNORE_UNEXPECTED_EOF);
  SSL_set_read_ahead(s, 1);
  SSL_set_default_read_buffer_len(s, kReadAheadBytes);
  if (SSL_set_fd(s, fd) != 1) {
    ssl_.reset();
    return;
  }
  if (server)
    SSL_set_accept_state(s);
  else
    SSL_set_connect_state(s);
}

void TlsConn::VerifyAfterHandshake() {
  SSL_set_verify(ssl_.get(), SSL_VERIFY_PEER, [](int preverified, X509_STORE_CTX* x) {
    auto* ssl =
        static_cast<SSL*>(X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx()));
    auto* self = static_cast<TlsConn*>(SSL_get_ex_data(ssl, ConnIndex()));
    if (!preverified && self->verify_error_ == 0) self->verify_error_ = X509_STORE_CTX_get_error(x);
    return 1;  // decided after the handshake, so the client gets a clear error
  });
}

TlsConn::Io TlsConn::Fail(int ret) {
  switch (SSL_get_error(ssl_.get(), ret)) {
    case SSL_ERROR_WANT_READ:
      return Io::kWantRead;
    case SSL_ERROR_WANT_WRITE:
      return Io::kWantWrite;
    case SSL_ERROR_ZERO_RETURN:
      return Io::kClosed;
    case SSL_ERROR_SYSCALL:
      error_ = errno != 0 ? asio::error_code(errno, asio::system_category())
                          : asio::error_code(asio::error::eof);
      break;
    default: {
      unsigned long e = ERR_peek_last_error();
      error_ = asio::error_code(static_cast<int>(e), asio::error::get_ssl_category());
      break;
    }
  }
  ERR_clear_error();
  return error_ == asio::error::eof ? Io::kClosed : Io::kError;
}

TlsConn::Io TlsConn::Handshake() {
  ERR_clear_error();
  int ret = SSL_do_handshake(ssl_.get());
  return ret == 1 ? Io::kOk : Fail(ret);
}

TlsConn::Io TlsConn::Read(char* p, size_t n, size_t* got) {
  *got = 0;
  while (*got < n) {
    size_t r = 0;
    ERR_clear_error();
    int ret = SSL_read_ex(ssl_.get(), p + *got, n - *got, &r);
    if (ret == 1) {
      *got += r;
      if (!HasPending()) break;  // the socket's turn: the caller waits or reads again
      continue;
    }
    if (*got > 0) {
      ERR_clear_error();  // the condition recurs on the next call
      break;
    }
    return Fail(ret);
  }
  return Io::kOk;
}

TlsConn::Io TlsConn::Write(std::string_view d, size_t* done) {
  *done = 0;
  while (*done < d.size()) {
    size_t w = 0;
    ERR_clear_error();
    int ret = SSL_write_ex(ssl_.get(), d.data() + *done, d.size() - *done, &w);
    if (ret != 1) return Fail(ret);
    *done += w;
  }
  return Io::kOk;
}

bool TlsConn::ktls_send() const { return BIO_get_ktls_send(SSL_get_wbio(ssl_.get())) != 0; }
bool TlsConn::ktls_recv() const { return BIO_get_ktls_recv(SSL_get_rbio(ssl_.get())) != 0; }

std::string TlsConn::Describe() const {
  std::string path = ktls_send() && ktls_recv() ? "kernel TLS (send+receive)"
                     : ktls_send()              ? "kernel TLS (send), user-space receive"
                     : ktls_recv()              ? "kernel TLS (receive), user-space send"
                                                : "user-space TLS";
  return path + ", " + SSL_get_version(ssl_.get()) + " " + SSL_get_cipher_name(ssl_.get()) +
         (SSL_session_reused(ssl_.get()) ? ", resumed" : "");
}

}  // namespace pgshift::proxy
