// TLS on a connected, non-blocking socket with OpenSSL reading and writing
// the socket itself (a socket BIO), in place of Asio's ssl::stream. Asio's
// stream runs OpenSSL on memory BIOs: every record is received into Asio's
// buffer, copied into the BIO, decrypted, and on the way out encrypted into a
// BIO and copied out again, each step a coroutine suspension; a read also
// starts with a speculative recv that fails with EAGAIN. Here SSL_read
// decrypts straight into the caller's buffer from one large read-ahead recv,
// and SSL_write encrypts the caller's whole queue (the messages of one round
// trip) into one record and one send. With a socket BIO OpenSSL 3 can also
// hand the record layer to the kernel (kTLS), which a memory BIO never can.
//
// The calls never block and never suspend: they say what the socket must
// become (readable, writable) before the caller tries again. Thread-compatible:
// one session's thread uses it.
#pragma once

#include <openssl/ssl.h>

#include <asio/error.hpp>
#include <asio/ssl/error.hpp>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"
#include "proxy/config.h"

namespace pgshift::proxy {

// Whether this kernel offers the "tls" upper-layer protocol on TCP sockets
// (CONFIG_TLS): tried once on a loopback connection; the reason when not.
Status ProbeKernelTls();

// Server-side TLS settings of the client listener: TLS 1.2+, AES-GCM first
// (AES-NI; and what kTLS offloads), session tickets for clients that
// reconnect, renegotiation off, kTLS when `ktls` is auto.
void TuneServerContext(SSL_CTX* ctx, KtlsMode ktls);

class TlsConn {
 public:
  enum class Io { kOk, kWantRead, kWantWrite, kClosed, kError };

  // An SSL on `fd` (already non-blocking) for the server or client side.
  // Failure (out of memory) leaves ok() false.
  TlsConn(SSL_CTX* ctx, int fd, bool server);
  ~TlsConn() = default;
  TlsConn(const TlsConn&) = delete;
  TlsConn& operator=(const TlsConn&) = delete;

  bool ok() const { return ssl_ != nullptr; }
  SSL* ssl() const { return ssl_.get(); }

  // Server side: asks for a client certificate but lets the handshake finish
  // whatever it is, remembering the first verification error, so the session
  // can refuse the client with a PostgreSQL error instead of a bare alert.
  void VerifyAfterHandshake();
  int verify_error() const { return verify_error_; }

  Io Handshake();
  // Decrypts into p (up to n bytes, several records when OpenSSL holds them).
  Io Read(char* p, size_t n, size_t* got);
  // Encrypts and sends from d; *done may be short of d.size() (kWantWrite):
  // the caller retries with the unsent rest, which begins with the same bytes.
  Io Write(std::string_view d, size_t* done);
  // OpenSSL holds received bytes (decrypted or not) that the socket no longer shows.
  bool HasPending() const { return SSL_has_pending(ssl_.get()) == 1; }

  // What failed (kError), as an Asio error code whose message is OpenSSL's.
  asio::error_code error() const { return error_; }
  // Whether the kernel took over the record layer after the handshake.
  bool ktls_send() const;
  bool ktls_recv() const;
  // "kernel TLS (send+receive)" / "user-space TLS" and the protocol and cipher.
  std::string Describe() const;

 private:
  Io Fail(int ret);

  struct SslFree {
    void operator()(SSL* s) const { SSL_free(s); }
  };
  std::unique_ptr<SSL, SslFree> ssl_;
  int verify_error_ = 0;
  asio::error_code error_;
};

}  // namespace pgshift::proxy
