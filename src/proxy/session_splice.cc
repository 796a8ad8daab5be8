// Session, part four: the kernel splice (splice/splicer.h). Between
// transactions a plain-text session may leave its bytes to a BPF sockmap,
// which forwards whole messages the proxy need not see without waking it.
// Anything else (a SET result, an error, a named Parse, Terminate, a hold or
// repoint of the route) brings the session back to user space, where the
// counters the kernel kept restore the transaction state. Same thread-safety
// as session.h: one session runs on one strand.
#include <poll.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>

#include "proxy/session.h"

namespace pgshift::proxy {
namespace {

constexpr bool SameLatencyLayout() {
  constexpr uint64_t kernel[PG_SPLICE_LAT_BOUNDS] = PG_SPLICE_LAT_BOUNDS_US;
  if (std::size(kernel) != kLatencyBoundsUs.size()) return false;
  for (size_t i = 0; i < kLatencyBoundsUs.size(); i++)
    if (kernel[i] != static_cast<uint64_t>(kLatencyBoundsUs[i])) return false;
  return true;
}
static_assert(SameLatencyLayout(), "the kernel splice times in the buckets of common/latency.h");

// How often a spliced session checks that its peers are still there.
constexpr int kSpliceSweepMs = 500;

// Bytes waiting on either socket: they arrived before kernel mode began and
// sit in the proxy's own queue, so the session goes back to user space.
bool Unread(int a, int b) {
  pollfd p[2] = {{a, POLLIN, 0}, {b, POLLIN, 0}};
  return poll(p, 2, 0) != 0;
}

}  // namespace

bool Session::CanSplice() const {
  // Every named statement must be prepared on this server: the kernel passes
  // a Bind as it is, and only the proxy re-prepares.
  return shared_.splicer && !splice_off_ && !spliced_ && !replication_ && !closed_ && server_ &&
         state_ == SessionState::kIdle && AtBoundary() && !client_.tls() &&
         !server_->stream.tls() && !server_->upstream.host.empty() &&
         server_->upstream.host[0] != '/' && !settings_dirty_ && !capture_inflight_ &&
         !probe_inflight_ && !eager_move_ && !server_ended_ && parse_expect_.empty() &&
         statements_.size() == prepared_upstream_.size() && client_in_.empty() &&
         client_out_.idle() && server_->outbox.idle() && !server_lost_ &&
         generation_ == route_->generation() && !route_->held();
}

void Session::EnterSplice() {
  Splicer* sp = shared_.splicer.get();
  const int cfd = client_.socket().native_handle();
  const int sfd = server_->stream.socket().native_handle();
  if (splice_slot_ < 0) {
    auto slot = sp->Attach(cfd, sfd);
    if (!slot.ok()) {
      static std::atomic<bool> logged{false};
      if (!logged.exchange(true))
        spdlog::warn("pgshift-proxy: {}: forwarding in user space: {}", Tag(),
                     slot.status().message());
      splice_off_ = true;
      return;
    }
    splice_slot_ = *slot;
    // The verdict announces a segment it hands back to us on its event ring.
    std::weak_ptr<Session> weak = weak_from_this();
    auto ex = client_.socket().get_executor();
    sp->SetWaker(splice_slot_, [ex, weak] {
      asio::post(ex, [weak] {
        if (auto s = weak.lock()) s->LeaveSplice();
      });
    });
  }
  auto qc = Splicer::QueuedBytes(cfd);
  auto qs = Splicer::QueuedBytes(sfd);
  if (!qc.ok() || !qs.ok()) return;
  // Bytes redirected in an earlier round may not be queued yet: they come
  // before anything redirected in this one.
  splice_base_client_ = std::max(*qc, client_.write_fence());
  splice_base_server_ = std::max(*qs, server_->stream.write_fence());
  std::weak_ptr<Session> weak = weak_from_this();
  auto ex = client_.socket().get_executor();
  const int slot = splice_slot_;
  // Register, then look at the hold and the generation (Hold and Repoint do
  // the reverse; see Route::AddSpliced).
  splice_id_ = route_->AddSpliced({
      .take_back =
          [ex, weak] {
            asio::post(ex, [weak] {
              if (auto s = weak.lock()) s->LeaveSplice();
            });
          },
      .peek =
          [sp, slot] {
            SpliceCounters c = sp->Peek(slot);
            Route::SpliceLive live{static_cast<int64_t>(c.c2s_bytes),
                                   static_cast<int64_t>(c.s2c_bytes),
                                   static_cast<int64_t>(c.s2c_idle)};
            for (size_t b = 0; b < c.lat.size(); b++)
              live.latency[b] = static_cast<int64_t>(c.lat[b]);
            live.latency_sum_us = static_cast<int64_t>(c.lat_sum_us);
            return live;
          },
  });
  // Checked before the kernel may forward anything: a hold that has not seen
  // this session's registration has therefore already been seen here.
  if (route_->held() || route_->generation() != generation_) {
    route_->RemoveSpliced(splice_id_);
    return;
  }
  spliced_ = true;
  sp->Enter(slot);
  if (Unread(cfd, sfd)) {
    LeaveSplice();
    return;
  }
  // Out of the event loop until the kernel hands the session back: the ring
  // (a segment for us), a hold or repoint, or the sweep (a peer closed).
  if (client_.Park() || server_->stream.Park()) {
    LeaveSplice();
    return;
  }
  uint64_t round = ++splice_round_;
  auto self = shared_from_this();
  asio::co_spawn(
      ex, [self, round]() -> asio::awaitable<void> { co_await self->SpliceSweep(round); },
      asio::detached);
}

asio::awaitable<void> Session::SpliceSweep(uint64_t round) {
  asio::steady_timer t(co_await asio::this_coro::executor);
  while (spliced_ && splice_round_ == round && !closed_) {
    t.expires_after(std::chrono::milliseconds(kSpliceSweepMs));
    co_await t.async_wait(kNoThrow);
    if (!spliced_ || splice_round_ != round || closed_) break;
    // POLLIN too: should an announcement ever be lost (a full ring), the
    // segment the verdict handed back still gets read.
    pollfd p[2] = {{client_.native_fd(), POLLIN | POLLRDHUP, 0},
                   {server_->stream.native_fd(), POLLIN | POLLRDHUP, 0}};
    if (poll(p, 2, 0) != 0) LeaveSplice();
  }
}

void Session::LeaveSplice() {
  if (!spliced_) return;
  spliced_ = false;
  SpliceCounters c = shared_.splicer->TakeBack(splice_slot_);
  // Back into the event loop (Close closes parked sockets itself).
  if (!closing_) {
    client_.Unpark();
    server_->stream.Unpark();
  }
  // What the kernel redirected is queued on the peers shortly: the proxy's
  // next writes there wait for it.
  if (c.s2c_bytes > 0) client_.SetWriteFence(splice_base_client_ + c.s2c_bytes);
  if (c.c2s_bytes > 0) server_->stream.SetWriteFence(splice_base_server_ + c.c2s_bytes);
  syncs_sent_ += c.c2s_syncs;
  rfq_seen_ += c.s2c_rfq;
  pending_ += static_cast<int64_t>(c.c2s_syncs) - static_cast<int64_t>(c.s2c_rfq);
  if (pending_ < 0) pending_ = 0;
  if (c.last_status != 0) txn_status_ = c.last_status;
  batch_open_ = c.batch_open;
  route_->bytes_from_clients += static_cast<int64_t>(c.c2s_bytes);
  route_->bytes_to_clients += static_cast<int64_t>(c.s2c_bytes);
  route_->transactions += static_cast<int64_t>(c.s2c_idle);
  route_->txn_latency.Add(c.lat, static_cast<int64_t>(c.lat_sum_us));
  // A transaction the kernel began is in flight: count it before leaving the
  // spliced set, so a hold never sees neither (Route::Hold reads the reverse).
  // Its latency runs from the kernel's start (CLOCK_MONOTONIC, steady_clock's
  // clock too), or it is not timed when the kernel has none.
  if (!AtBoundary() && state_ == SessionState::kIdle) {
    txn_start_us_ = c.txn_start_ns != 0 ? static_cast<int64_t>(c.txn_start_ns / 1000) : kUntimedTxn;
    Advance(SessionEvent::kClientBegins);
  }
  route_->RemoveSpliced(splice_id_);
}

void Session::DetachSplice() {
  LeaveSplice();
  if (splice_slot_ < 0) return;
  shared_.splicer->Detach(splice_slot_);
  splice_slot_ = -1;
}

}  // namespace pgshift::proxy
