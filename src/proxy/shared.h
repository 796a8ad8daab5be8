// State shared by all sessions of one pgshift-proxy: the configuration, the
// route table, TLS contexts, the cancel-key registry and the proxy-wide stats.
//
// Thread-safe: the config's non-route parts are immutable after Start; routes
// and the cancel registry lock internally.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "proxy/config.h"
#include "proxy/net.h"
#include "proxy/route.h"
#include "proxy/splice/splicer.h"
#include "proxy/stats.h"
#include "proxy/upstream_pool.h"

namespace pgshift::proxy {

// Where a client's cancel key leads now; updated when the session moves.
struct CancelTarget {
  std::mutex mu;
  UpstreamConfig upstream;
  uint32_t pid = 0;
  uint32_t key = 0;
};

class CancelRegistry {
 public:
  // Registers a fresh random (pid, key) pair for a session.
  std::pair<uint32_t, uint32_t> Register(std::shared_ptr<CancelTarget> t);
  void Unregister(uint32_t pid, uint32_t key);
  std::shared_ptr<CancelTarget> Find(uint32_t pid, uint32_t key) const;
  // The server backend pids of every logged-in session whose upstream
  // connection is to host:port now (each session's target follows its moves).
  std::vector<uint32_t> UpstreamPidsOn(const std::string& host, int port) const;

 private:
  mutable std::mutex mu_;
  std::unordered_map<uint64_t, std::shared_ptr<CancelTarget>> targets_;
};

// When the server connections that sessions' moves replaced may close: each
// waits `delay` and then closes `spacing` after the one before. A switch moves
// every session at once, and as many backends exiting on the old server at
// once take CPU the new server needs when both share a host (on the
// benchmark VM a backend's exit costs ~25 ms of CPU).
class RetireSchedule {
 public:
  using Clock = std::chrono::steady_clock;
  RetireSchedule(std::chrono::milliseconds delay, std::chrono::milliseconds spacing)
      : delay_(delay), spacing_(spacing) {}
  Clock::time_point Next() {
    std::lock_guard<std::mutex> l(mu_);
    last_ = std::max(Clock::now() + delay_, last_ + spacing_);
    return last_;
  }

 private:
  std::mutex mu_;
  std::chrono::milliseconds delay_, spacing_;
  Clock::time_point last_{};
};

struct ProxyShared {
  explicit ProxyShared(ProxyConfig c) : config(std::move(c)) {}
  ProxyConfig config;
  RouteTable routes;
  std::unique_ptr<asio::ssl::context> server_tls;         // null: TLS not configured
  asio::ssl::context plain_ctx{asio::ssl::context::tls};  // unused TLS side of plain streams
  asio::ssl::context upstream_tls{asio::ssl::context::tls_client};
  CancelRegistry cancels;
  RetireSchedule retire{
      std::chrono::milliseconds(config.retire_delay_ms),
      std::chrono::milliseconds(config.retire_delay_ms > 0 ? config.retire_interval_ms : 0)};
  std::unique_ptr<Splicer> splicer;  // null: kernel splice off or unavailable
  // The proxy-wide rows of stats.h (PGSHIFT_PROXY_STATS), one atomic each.
  PGSHIFT_PROXY_STATS(PGSHIFT_STAT_NONE, PGSHIFT_STAT_NONE, PGSHIFT_STAT_NONE, PGSHIFT_STAT_ATOMIC)
  // Backends between clients (upstream_pool.h), counted in the pool_* rows.
  UpstreamPool pool{config.upstream_pool,
                    [this](PoolEvent e, int64_t idle) { CountPoolEvent(e, idle); }};
  void CountPoolEvent(PoolEvent e, int64_t idle);

  // Every proxy-wide row of stats.h (the route rows are 0).
  StatValues Stats() const {
    StatValues v{};
#define PGSHIFT_STAT_LOAD(name, type, metric, help) \
  v[static_cast<size_t>(Stat::name)] = name.load();
    PGSHIFT_PROXY_STATS(PGSHIFT_STAT_NONE, PGSHIFT_STAT_NONE, PGSHIFT_STAT_NONE, PGSHIFT_STAT_LOAD)
#undef PGSHIFT_STAT_LOAD
    return v;
  }
};

}  // namespace pgshift::proxy
