// Session, part three: moving a session to the route's current endpoint at
// a transaction boundary — a new upstream connection with the client's
// startup parameters, its captured SET values re-applied. Same
// thread-safety as session.h: one session runs on one strand.
#include <spdlog/spdlog.h>

#include "proxy/session.h"

namespace pgshift::proxy {
namespace {

std::string Literal(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'')
      out += "''";
    else
      out += c;
  }
  return out + "'";
}

}  // namespace

bool Session::BeginTransactionNow() {
  // Mark first, then look at the hold: Route::Hold does the reverse.
  Advance(SessionEvent::kClientBegins);
  if (!route_->held() && route_->generation() == generation_ && !server_lost_) return true;
  Advance(SessionEvent::kBoundaryReached);
  return false;
}

asio::awaitable<void> Session::WaitForRelease() {
  auto ex = co_await asio::this_coro::executor;
  std::weak_ptr<asio::steady_timer> weak = wake_;
  uint64_t id = route_->AddWaiter([ex, weak] {
    asio::post(ex, [weak] {
      if (auto t = weak.lock()) t->cancel();
    });
  });
  while (route_->held() && !closed_) co_await WaitWake(100);
  route_->RemoveWaiter(id);
}

asio::awaitable<bool> Session::EnterTransaction() {
  while (!closed_) {
    if (BeginTransactionNow()) co_return true;
    if (route_->held()) {
      Advance(SessionEvent::kHoldWait);
      co_await WaitForRelease();
      if (closed_) co_return false;
      Advance(SessionEvent::kHoldReleased);
      continue;
    }
    // The hold may have ended since the check above: look again.
    if (route_->generation() == generation_ && !server_lost_) continue;
    Advance(SessionEvent::kMigrateBegin);
    bool ok = co_await Migrate();
    if (!ok || closed_) co_return false;
    Advance(SessionEvent::kMigrateDone);
  }
  co_return false;
}

asio::awaitable<bool> Session::Migrate() {
  Route::Target target = route_->target();
  std::string dest = target.upstream.host + ":" + std::to_string(target.upstream.port);
  while (capture_inflight_ && !server_lost_ && !closed_) co_await WaitWake(50);
  if (settings_dirty_ && !replication_ && !server_lost_ && !closed_) {
    StartCapture();
    co_await FlushServer();
    while (capture_inflight_ && !server_lost_ && !closed_) co_await WaitWake(50);
  }
  if (closed_) co_return false;
  if (settings_dirty_ && !replication_) {
    co_await Refuse("08006", "pgshift-proxy: cannot move this session to " + dest +
                                 ": the session settings it changed could not be read from "
                                 "its previous server; reconnect to continue");
    co_return false;
  }
  UpstreamLogin login{target.upstream, startup_params_, credential_, &shared_.upstream_tls};
  LoginOutcome lo = co_await ConnectUpstream(login);
  if (!lo.conn) {
    co_await Refuse(
        "08006", "pgshift-proxy: cannot move this session to " + dest + ": " + lo.status.message());
    co_return false;
  }
  if (!settings_.empty()) {
    std::string sql = "SELECT ";
    for (size_t i = 0; i < settings_.size(); i++) {
      if (i) sql += ", ";
      sql += "pg_catalog.set_config(" + Literal(settings_[i].first) + ", " +
             Literal(settings_[i].second) + ", false)";
    }
    auto r = co_await SimpleQuery(*lo.conn, sql);
    if (!r.ok()) {
      lo.conn->stream.Close();
      co_await Refuse("08006", "pgshift-proxy: cannot move this session to " + dest +
                                   ": re-applying its settings failed: " + r.status().message());
      co_return false;
    }
  }
  DetachSplice();  // the slot holds the old server's socket
  auto old = server_;
  server_ = lo.conn;
  generation_ = target.generation;
  server_lost_ = false;
  prepared_upstream_.clear();
  parse_expect_.clear();
  rfq_seen_ = syncs_sent_;  // nothing is outstanding at a boundary (a lost capture included)
  txn_status_ = 'I';
  {
    std::lock_guard<std::mutex> l(cancel_target_->mu);
    cancel_target_->upstream = server_->upstream;
    cancel_target_->pid = server_->backend_pid;
    cancel_target_->key = server_->backend_key;
  }
  route_->switches++;
  if (old) {
    old->outbox.Append(TerminateMessage());
    co_await old->outbox.Flush(old->stream);
    old->stream.Close();
  }
  auto self = shared_from_this();
  auto sc = server_;
  auto ex = co_await asio::this_coro::executor;
  asio::co_spawn(
      ex, [self, sc]() -> asio::awaitable<void> { co_await self->ServerPump(sc); }, asio::detached);
  spdlog::info("pgshift-proxy: {} moved to {}", Tag(), dest);
  co_return true;
}

}  // namespace pgshift::proxy
