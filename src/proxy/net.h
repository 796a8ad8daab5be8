// Asio plumbing shared by the proxy's client and upstream sides: a stream
// that is plain TCP or TLS after a switch-over (PostgreSQL's SSLRequest
// upgrades a connection in place; TLS is OpenSSL on the socket itself, see
// tls_stream.h), and an outbox that lets two coroutines of
// one session write to the same socket without interleaving partial writes.
// Everything here is used from one io_context thread per session.
#pragma once

#include <sys/socket.h>
#include <unistd.h>

#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/ssl.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>

#include "proxy/splice/splicer.h"
#include "proxy/tls_stream.h"

namespace pgshift::proxy {

using tcp = asio::ip::tcp;
using GenericSocket = asio::generic::stream_protocol::socket;  // TCP or Unix-domain
inline constexpr auto kNoThrow = asio::experimental::as_tuple(asio::use_awaitable);

template <typename Socket>
class BasicStream {
 public:
  // `ctx` is the TLS side's context, used if the stream is upgraded.
  BasicStream(Socket s, asio::ssl::context& ctx)
      : s_(std::move(s)), tls_ctx_(ctx), park_(s_.get_executor()) {}

  // Plain streams wait for readability and then read what is there, instead of
  // Asio's speculative read, a recv that fails with EAGAIN after every message.
  // Asio re-arms the wait with an epoll_ctl, so the syscall count is the same;
  // the wait only avoids reading a socket known to be empty. A read that
  // filled the buffer may have left more behind: the next one tries at once.
  // TLS streams follow the same rule with what OpenSSL holds: a read that left
  // nothing in OpenSSL's buffer waits for the socket before the next.
  asio::awaitable<std::tuple<asio::error_code, size_t>> ReadSome(char* p, size_t n) {
    if (tls_on_) co_return co_await ReadTls(p, n);
    while (true) {
      if (parked_) {
        co_await park_.async_wait(kNoThrow);  // until Unpark (or Close)
        if (closed_) co_return std::tuple{asio::error_code(asio::error::bad_descriptor), size_t{0}};
        continue;
      }
      if (!drained_) {
        asio::error_code ec;
        size_t got = TryRead(p, n, ec);
        if (ec != asio::error::would_block) {
          drained_ = got < n;
          co_return std::tuple{ec, got};
        }
        drained_ = true;
      }
      const uint64_t parks = parks_;
      auto [ec] = co_await socket().async_wait(Socket::wait_read, kNoThrow);
      if (ec == asio::error::operation_aborted && parks_ != parks) continue;  // parked meanwhile
      if (ec) co_return std::tuple{ec, size_t{0}};
      drained_ = false;
    }
  }
  // Plain streams: reads what the socket holds now; would_block when it is empty.
  size_t TryRead(char* p, size_t n, asio::error_code& ec) {
    if (!nonblocking_) SetNonBlocking(ec);
    if (ec) return 0;
    size_t got = socket().read_some(asio::buffer(p, n), ec);
    if (ec == asio::error::interrupted) ec = asio::error::would_block;
    return got;
  }
  // Kernel splice: the kernel redirected bytes onto this socket, and a kernel
  // worker queues them shortly after. Nothing the proxy writes may overtake
  // them: writes wait until the socket has queued `bytes` in all (see
  // Splicer::QueuedBytes). 0 = no fence.
  void SetWriteFence(uint64_t bytes) { write_fence_ = bytes; }
  uint64_t write_fence() const { return write_fence_; }
  // Plain streams: writes what the socket takes now, without waiting.
  // TLS: the whole of `d` goes into as few records as fit (one for a round
  // trip's messages), each sent at once.
  size_t TryWrite(std::string_view d, asio::error_code& ec) {
    if (tls_on_) return TryWriteTls(d, ec);
    if (!nonblocking_) SetNonBlocking(ec);
    if (ec) return 0;
    if (!WriteFenceOpen()) {
      ec = asio::error::would_block;
      return 0;
    }
    size_t done = 0;
    while (done < d.size() && !ec) done += socket().write_some(asio::buffer(d.substr(done)), ec);
    if (ec == asio::error::interrupted) ec = asio::error::would_block;
    return done;
  }
  asio::awaitable<asio::error_code> WriteAll(std::string_view d) {
    if (tls_on_) {
      while (true) {
        asio::error_code ec;
        d.remove_prefix(TryWriteTls(d, ec));
        if (ec != asio::error::would_block) co_return ec;
        auto [wec] = co_await s_.async_wait(Socket::wait_write, kNoThrow);
        if (wec) co_return wec;
      }
    }
    if (write_fence_ != 0) {
      asio::error_code fec = co_await WaitWriteFence();
      if (fec) co_return fec;
    }
    asio::error_code ec;
    size_t done = TryWrite(d, ec);
    if (ec != asio::error::would_block) co_return ec;
    auto [wec, n] = co_await asio::async_write(s_, asio::buffer(d.substr(done)), kNoThrow);
    co_return wec;
  }
  void Close() {
    closed_ = true;
    if (parked_) {
      ::shutdown(parked_fd_, SHUT_RDWR);
      ::close(parked_fd_);
      parked_ = false;
      park_.cancel();
      return;
    }
    asio::error_code ec;
    s_.shutdown(Socket::shutdown_both, ec);
    s_.close(ec);
  }
  // Kernel splice: while the kernel forwards this socket's bytes, the socket
  // leaves the event loop (each segment the kernel redirects would still wake
  // it), and a pending read waits until Unpark. Plain streams only; nothing
  // may be written while parked.
  asio::error_code Park() {
    asio::error_code ec;
    auto proto = socket().local_endpoint(ec).protocol();
    if (ec) return ec;
    int fd = socket().release(ec);
    if (ec) return ec;
    parked_fd_ = fd;
    parked_proto_ = proto;
    parked_ = true;
    parks_++;
    park_.expires_at(asio::steady_timer::time_point::max());
    return ec;
  }
  // Back into the event loop; false when that failed (the socket is closed then).
  bool Unpark() {
    if (!parked_) return true;
    parked_ = false;
    asio::error_code ec;
    socket().assign(*parked_proto_, parked_fd_, ec);
    if (ec) {
      ::close(parked_fd_);
      closed_ = true;
    }
    nonblocking_ = false;  // a fresh Asio socket: set it again before the first read
    drained_ = false;
    park_.cancel();
    return !ec;
  }
  // Hands the connection to another owner (the upstream pool, between two
  // clients): the socket leaves this event loop and its descriptor is
  // returned (-1 on failure), its TLS state moved to *tls. Nothing may wait
  // on the socket. The stream is closed afterwards.
  int Detach(std::unique_ptr<TlsConn>* tls) {
    if (parked_ || closed_) return -1;
    closed_ = true;
    asio::error_code ec;
    int fd = s_.release(ec);
    if (ec) return -1;
    *tls = std::move(tls_);
    tls_on_ = false;
    return fd;
  }
  // On a stream made from a detached descriptor: its TLS state (null: plain).
  void AdoptTls(std::unique_ptr<TlsConn> tls) {
    asio::error_code ec;
    SetNonBlocking(ec);
    tls_ = std::move(tls);
    tls_on_ = tls_ != nullptr;
    drained_ = false;
  }
  int native_fd() { return parked_ ? parked_fd_ : socket().native_handle(); }
  Socket& socket() { return s_; }
  bool tls() const { return tls_on_; }
  // TLS upgrade, in two steps so the caller can set verification (and SNI)
  // on the SSL in between: StartTls creates it (null when that failed),
  // Handshake runs it; from then on reads and writes are TLS.
  TlsConn* StartTls(bool server) {
    asio::error_code ec;
    SetNonBlocking(ec);
    if (ec) return nullptr;
    tls_ = std::make_unique<TlsConn>(tls_ctx_.native_handle(), s_.native_handle(), server);
    if (!tls_->ok()) tls_.reset();
    return tls_.get();
  }
  asio::awaitable<asio::error_code> Handshake() {
    while (true) {
      if (closed_) co_return asio::error::bad_descriptor;
      TlsConn::Io io = tls_->Handshake();
      if (io == TlsConn::Io::kOk) break;
      if (io == TlsConn::Io::kClosed) co_return asio::error::eof;
      if (io == TlsConn::Io::kError) co_return tls_->error();
      auto [ec] = co_await s_.async_wait(
          io == TlsConn::Io::kWantRead ? Socket::wait_read : Socket::wait_write, kNoThrow);
      if (ec) co_return ec;
    }
    tls_on_ = true;
    drained_ = false;
    co_return asio::error_code{};
  }
  TlsConn* tls_conn() { return tls_.get(); }

 private:
  asio::awaitable<std::tuple<asio::error_code, size_t>> ReadTls(char* p, size_t n) {
    while (true) {
      if (closed_) co_return std::tuple{asio::error::bad_descriptor, size_t{0}};
      if (!drained_) {
        size_t got = 0;
        TlsConn::Io io = tls_->Read(p, n, &got);
        if (io == TlsConn::Io::kOk) {
          drained_ = !tls_->HasPending();
          co_return std::tuple{asio::error_code{}, got};
        }
        if (io == TlsConn::Io::kClosed) co_return std::tuple{asio::error::eof, size_t{0}};
        if (io == TlsConn::Io::kError) co_return std::tuple{tls_->error(), size_t{0}};
        drained_ = true;
        if (io == TlsConn::Io::kWantWrite) {  // a TLS 1.3 key update answers first
          auto [ec] = co_await s_.async_wait(Socket::wait_write, kNoThrow);
          if (ec) co_return std::tuple{ec, size_t{0}};
          drained_ = false;
          continue;
        }
      }
      auto [ec] = co_await s_.async_wait(Socket::wait_read, kNoThrow);
      if (ec) co_return std::tuple{ec, size_t{0}};
      drained_ = false;
    }
  }
  size_t TryWriteTls(std::string_view d, asio::error_code& ec) {
    if (closed_) {
      ec = asio::error::bad_descriptor;
      return 0;
    }
    size_t done = 0;
    TlsConn::Io io = tls_->Write(d, &done);
    if (io == TlsConn::Io::kWantWrite || io == TlsConn::Io::kWantRead)
      ec = asio::error::would_block;
    else if (io == TlsConn::Io::kClosed)
      ec = asio::error::eof;
    else if (io == TlsConn::Io::kError)
      ec = tls_->error();
    return done;
  }
  void SetNonBlocking(asio::error_code& ec) {
    socket().non_blocking(true, ec);
    nonblocking_ = !ec;
  }
  bool WriteFenceOpen() {
    if (write_fence_ == 0) return true;
    auto q = Splicer::QueuedBytes(socket().native_handle());
    // A socket that cannot say (closed, reset) fails the write itself.
    if (!q.ok() || *q >= write_fence_) write_fence_ = 0;
    return write_fence_ == 0;
  }
  // Usually open at once or within microseconds; a peer that stopped reading
  // can keep the kernel's bytes unqueued, so the wait is bounded.
  static constexpr std::chrono::seconds kWriteFenceTimeout{30};
  static constexpr std::chrono::microseconds kWriteFencePoll{200};
  asio::awaitable<asio::error_code> WaitWriteFence() {
    asio::steady_timer t(socket().get_executor());
    auto deadline = std::chrono::steady_clock::now() + kWriteFenceTimeout;
    while (!WriteFenceOpen()) {
      if (std::chrono::steady_clock::now() > deadline) co_return asio::error::timed_out;
      t.expires_after(kWriteFencePoll);
      co_await t.async_wait(kNoThrow);
    }
    co_return asio::error_code{};
  }

  Socket s_;
  asio::ssl::context& tls_ctx_;
  // Set by StartTls. OpenSSL holds the descriptor's number: once Close ran,
  // nothing may reach it (the number may already name another connection).
  std::unique_ptr<TlsConn> tls_;
  bool tls_on_ = false;       // the handshake finished: reads and writes are TLS
  bool nonblocking_ = false;  // plain reads and writes never block the thread
  bool drained_ = false;      // the last read emptied the socket
  uint64_t write_fence_ = 0;
  asio::steady_timer park_;  // a parked read waits on it; Unpark cancels it
  bool parked_ = false;
  bool closed_ = false;
  uint64_t parks_ = 0;
  int parked_fd_ = -1;
  std::optional<typename Socket::protocol_type> parked_proto_;
};

using Stream = BasicStream<tcp::socket>;            // client side
using UpstreamStream = BasicStream<GenericSocket>;  // server side (TCP or Unix socket)

// Queued writes to one Stream. Append, then Flush: if another coroutine is
// already flushing, it picks the data up; the caller waits only while the
// queue is above `kHighWater` (back-pressure for large COPY / results).
class Outbox {
 public:
  static constexpr size_t kHighWater = 1 << 20;
  // A writer above kHighWater looks again this often (the flush wakes it sooner).
  static constexpr std::chrono::milliseconds kBackPressurePoll{5};
  explicit Outbox(asio::any_io_executor ex) : drained_(ex) {}

  void Append(std::string_view d) { queued_.append(d); }
  bool empty() const { return queued_.empty(); }
  bool idle() const { return queued_.empty() && !writing_; }
  bool failed() const { return failed_; }

  // Writes the queue now when a plain socket takes all of it: true when nothing
  // is left to wait for. The hot path of forwarding: no coroutine suspends.
  template <typename S>
  bool WriteNow(S& s) {
    if (queued_.empty()) return !failed_;
    if (writing_ || failed_) return false;
    asio::error_code ec;
    size_t done = s.TryWrite(queued_, ec);
    queued_.erase(0, done);
    if (ec && ec != asio::error::would_block) failed_ = true;
    return queued_.empty() && !failed_;
  }

  // Returns false when the stream failed.
  template <typename S>
  asio::awaitable<bool> Flush(S& s) {
    if (WriteNow(s)) co_return true;
    if (writing_) {
      while (writing_ && queued_.size() > kHighWater && !failed_) {
        drained_.expires_after(kBackPressurePoll);
        waiters_++;
        co_await drained_.async_wait(kNoThrow);
        waiters_--;
      }
      co_return !failed_;
    }
    writing_ = true;
    while (!queued_.empty() && !failed_) {
      inflight_.clear();
      inflight_.swap(queued_);
      asio::error_code ec = co_await s.WriteAll(inflight_);
      if (ec) failed_ = true;
    }
    writing_ = false;
    if (waiters_ > 0) drained_.cancel();
    co_return !failed_;
  }

 private:
  std::string queued_, inflight_;
  bool writing_ = false;
  bool failed_ = false;
  int waiters_ = 0;
  asio::steady_timer drained_;
};

}  // namespace pgshift::proxy
