// Session, part six: the upstream pool (upstream_pool.h). A client that
// leaves cleanly between transactions leaves its backend to the pool, reset
// with DISCARD ALL; a new client with the same key takes a parked backend
// instead of logging in. Same thread-safety as session.h: one session runs
// on one strand.
#include <spdlog/spdlog.h>

#include <chrono>

#include "proxy/session.h"

namespace pgshift::proxy {
namespace {

// How long a leaving client's backend may take to answer the proxy's own
// capture or probe before it is closed instead of parked (a round trip on
// any healthy server), and how often the wait looks.
constexpr auto kParkSettleLimit = std::chrono::milliseconds(1000);
constexpr int kParkSettlePollMs = 50;

}  // namespace

PoolKey Session::PoolKeyFor(const UpstreamConfig& upstream, uint64_t generation) const {
  return PoolKey{.route = route_->name(),
                 .generation = generation,
                 .upstream = upstream,
                 .startup_params = startup_params_};
}

asio::awaitable<void> Session::SettleForPark() {
  if (!shared_.pool.enabled() || replication_) co_return;
  const auto until = std::chrono::steady_clock::now() + kParkSettleLimit;
  // Their answers cancel wake_ (OnServerMessage): the wait ends as they do.
  while ((capture_inflight_ || probe_inflight_) && !closed_ &&
         std::chrono::steady_clock::now() < until)
    co_await WaitWake(kParkSettlePollMs);
}

bool Session::CanPark() const {
  // Not at a boundary, in COPY, or with a probe or capture of the proxy's
  // own in flight, the backend is busy; a held or switched route parks
  // nothing (its backends are about to be fenced or belong to the old server).
  return shared_.pool.enabled() && !replication_ && server_ && !closed_ &&
         state_ == SessionState::kIdle && AtBoundary() && !copy_out_open_ && !server_lost_ &&
         !server_ended_ && !capture_inflight_ && !probe_inflight_ && !eager_move_ &&
         !stream_ending_ && parse_expect_.empty() && server_->outbox.idle() &&
         server_->leftover.empty() && generation_ == route_->generation() && !route_->held();
}

void Session::ReleaseServer() {
  if (!server_ || server_released_) return;
  server_released_ = true;
  // park_ was decided at the client's Terminate; what may have changed since
  // (a hold, a switch, the server ending the session) ResetAndPark and Park see.
  if (!park_) {
    const bool route_moved = route_->held() || generation_ != route_->generation();
    if (shared_.pool.enabled() && !replication_)
      shared_.pool.Note(route_moved ? PoolEvent::kDroppedRoute : PoolEvent::kDroppedUnclean);
    server_->stream.Close();
    return;
  }
  std::shared_ptr<ServerConn> sc = std::move(server_);
  // The server pump's wait ends (it sees the session closed and leaves the
  // socket alone); from here ResetAndPark is the connection's only reader.
  asio::error_code ig;
  sc->stream.socket().cancel(ig);
  auto ex = sc->stream.socket().get_executor();
  asio::co_spawn(ex, ResetAndPark(shared_.pool, route_, PoolKeyFor(sc->upstream, generation_), sc),
                 asio::detached);
}

std::shared_ptr<ServerConn> Session::TakePooled(const Route::Target& target) {
  if (replication_ || !shared_.pool.enabled()) return nullptr;
  auto idle = shared_.pool.Take(PoolKeyFor(target.upstream, target.generation));
  if (!idle) return nullptr;
  const uint32_t pid = idle->backend_pid;
  auto sc = FromIdle(std::move(idle), client_.socket().get_executor(), shared_.upstream_tls);
  if (!sc) {
    spdlog::warn("pgshift-proxy: {}: a parked backend (pid {}) could not join the event loop",
                 Tag(), pid);
    return nullptr;
  }
  return sc;
}

}  // namespace pgshift::proxy
