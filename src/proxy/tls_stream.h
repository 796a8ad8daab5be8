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
// Without kTLS the socket BIO's reads are replaced by the caller's own
// (own_io): the caller receives ciphertext into InputSpace with Asio's
// async_read_some and OpenSSL takes each record's header and body from
// there, fewer BIO and socket calls per record (−14% proxy CPU per mTLS
// transaction, bench/proxy/README.md). Writes go to the socket directly
// either way.
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
#include <utility>

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

  // An SSL on `fd` (already non-blocking) for the server or client side;
  // own_io unless the context enables kTLS. Failure (out of memory) leaves
  // ok() false.
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
  // OpenSSL (or the input buffer) holds received bytes that the socket no longer shows.
  bool HasPending() const { return in_end_ > in_pos_ || SSL_has_pending(ssl_.get()) == 1; }

  // own_io: the caller reads the socket into InputSpace (all of it free once
  // OpenSSL consumed what was there: it asks for more only then) and reports
  // what it got with Received.
  bool own_io() const { return in_ != nullptr; }
  std::pair<char*, size_t> InputSpace();
  void Received(size_t n) { in_end_ += n; }

  // What failed (kError), as an Asio error code whose message is OpenSSL's.
  asio::error_code error() const { return error_; }
  // Whether the kernel took over the record layer after the handshake.
  bool ktls_send() const;
  bool ktls_recv() const;
  // "kernel TLS (send+receive)" / "user-space TLS" and the protocol and cipher.
  std::string Describe() const;

 private:
  Io Fail(int ret);
  static int BioRead(BIO* b, char* p, int n);
  static int BioWrite(BIO* b, const char* p, int n);

  struct SslFree {
    void operator()(SSL* s) const { SSL_free(s); }
  };
  std::unique_ptr<SSL, SslFree> ssl_;
  int verify_error_ = 0;
  asio::error_code error_;
  // own_io: ciphertext received, in_[in_pos_, in_end_) not yet given to OpenSSL.
  int fd_;
  std::unique_ptr<char[]> in_;
  size_t in_pos_ = 0, in_end_ = 0;
};

}  // namespace pgshift::proxy
