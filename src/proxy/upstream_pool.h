// The upstream pool of pgshift-proxy: PostgreSQL backends whose client ended
// cleanly between transactions, reset with DISCARD ALL and parked for the
// next client with the same key, which then skips the fork and login of a
// new backend (PgBouncer keeps its server connections the same way).
//
// A parked backend belongs to no session and to no event loop: it is a
// descriptor with its TLS state, which the loop of whichever session takes
// it adopts. It is not a session either: it is in no route counter, no
// cancel registration and no hold's backend listing, so a cutover's fence
// terminates it like any other backend of the old server.
//
// The key is the route and its generation, the upstream endpoint and the
// exact startup parameters (user, database, application_name, options...).
// A hold or a repoint flushes the route's parked backends
// (Route::SetParkedFlush), and Park refuses a backend whose route is held or
// has moved past its generation, checked under the pool's lock: Hold and
// Repoint change the route before they flush, so a backend parked
// concurrently is either refused or flushed, never handed out afterwards.
//
// Thread-safe: one mutex. Sessions of every event loop park and take; the
// proxy's lease thread expires idle backends.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "common/clock.h"
#include "proxy/config.h"
#include "proxy/net.h"
#include "proxy/route.h"
#include "proxy/upstream.h"

namespace pgshift::proxy {

// DISCARD ALL on a backend being parked must answer within this, or the
// backend closes instead (it waits for no lock a client could hold, so only
// a server in trouble takes longer).
inline constexpr int kPoolResetTimeoutMs = 5000;

// An owned file descriptor; closes it when destroyed.
class OwnedFd {
 public:
  explicit OwnedFd(int fd = -1) : fd_(fd) {}
  ~OwnedFd();
  OwnedFd(OwnedFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  OwnedFd& operator=(OwnedFd&& o) noexcept;
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

// A parked backend: its connection and what its next session replays to the
// client. Destroying it sends the backend a Terminate (best effort, so it
// exits at once) and closes the connection.
struct IdleBackend {
  IdleBackend() = default;
  ~IdleBackend();
  IdleBackend(const IdleBackend&) = delete;
  IdleBackend& operator=(const IdleBackend&) = delete;

  // False when the backend closed or sent anything since it was parked (a
  // terminated backend sends a FATAL, then EOF).
  bool Alive() const;

  OwnedFd fd;
  asio::generic::stream_protocol protocol{AF_UNSPEC, 0};
  std::unique_ptr<TlsConn> tls;  // declared after fd: freed before it closes
  std::shared_ptr<asio::ssl::context> tls_context;
  UpstreamConfig upstream;
  std::vector<std::pair<std::string, std::string>> parameters;  // ParameterStatus, as last sent
  uint32_t backend_pid = 0;
  uint32_t backend_key = 0;
  int64_t parked_at_ms = 0;
};

struct PoolKey {
  std::string route;
  uint64_t generation = 0;
  UpstreamConfig upstream;
  std::vector<std::pair<std::string, std::string>> startup_params;
  // Every field, unambiguously (protocol strings hold no NUL).
  std::string Encode() const;
};

// What the pool did, for the stats (stats.h's pool_* rows).
enum class PoolEvent {
  kHit,
  kMiss,
  kParked,
  kDroppedUnclean,  // the session did not end cleanly between transactions
  kDroppedRoute,    // held or switched route
  kDroppedResetFailed,
  kDroppedFull,
  kDroppedDead,
  kDroppedIdleTimeout,
};

class UpstreamPool {
 public:
  // Called under the pool's lock with each event and the number parked after it.
  using Sink = std::function<void(PoolEvent, int64_t idle)>;
  UpstreamPool(UpstreamPoolConfig cfg, Sink sink, std::function<int64_t()> now_ms = MonotonicMs);
  ~UpstreamPool();

  bool enabled() const { return cfg_.enabled(); }
  // Parks `b` under `key`; closes it instead when `route` is held or has
  // moved past key.generation, or a cap is reached.
  void Park(const Route& route, const PoolKey& key, std::unique_ptr<IdleBackend> b);
  // The most recently parked live backend of `key`; null (a miss) when none.
  // Expired and dead backends met on the way are closed.
  std::unique_ptr<IdleBackend> Take(const PoolKey& key);
  // Closes every backend parked for `route`.
  void FlushRoute(const std::string& route);
  // Closes the backends parked longer than the idle timeout.
  void Expire();
  // Closes every parked backend.
  void Clear();
  // Counts a backend that never reached the pool (unclean end, failed reset).
  void Note(PoolEvent e);
  int64_t idle() const;

 private:
  struct Slot {
    std::string route;
    std::deque<std::unique_ptr<IdleBackend>> backends;  // oldest first
  };
  bool ExpiredLocked(const IdleBackend& b, int64_t now) const;
  // Under mu_: moves out the backends matching `drop` (counted as `why`),
  // for the caller to close once the lock is dropped.
  template <typename Pred>
  void DropLocked(Pred drop, PoolEvent why, std::vector<std::unique_ptr<IdleBackend>>* out);

  const UpstreamPoolConfig cfg_;
  const Sink sink_;
  const std::function<int64_t()> now_ms_;
  mutable std::mutex mu_;
  std::map<std::string, Slot> slots_;  // guarded by mu_; by PoolKey::Encode
  int64_t idle_ = 0;                   // guarded by mu_
};

// A logged-in connection's backend out of its event loop, for the pool. Null
// when the socket cannot be detached (the connection is closed then).
std::unique_ptr<IdleBackend> ToIdle(ServerConn& c);
// A parked backend as a connection on `ex`; null when its descriptor cannot
// join the loop (it is closed then). `fallback` as ServerConn's.
std::shared_ptr<ServerConn> FromIdle(std::unique_ptr<IdleBackend> b,
                                     const asio::any_io_executor& ex, asio::ssl::context& fallback);
// Resets `c` with DISCARD ALL and parks it under `key`; closes it when the
// reset fails or takes longer than kPoolResetTimeoutMs. Runs on the
// connection's executor once its session let go of it (nothing else reads it).
asio::awaitable<void> ResetAndPark(UpstreamPool& pool, std::shared_ptr<const Route> route,
                                   PoolKey key, std::shared_ptr<ServerConn> c);

}  // namespace pgshift::proxy
