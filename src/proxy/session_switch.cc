// Session, part three: moving a session to the route's current endpoint at
// a transaction boundary — a new upstream connection with the client's
// startup parameters, its captured SET values re-applied. Same
// thread-safety as session.h: one session runs on one strand.
#include <poll.h>
#include <spdlog/spdlog.h>

#include "proxy/session.h"

namespace pgshift::proxy {
namespace {

// A session waiting for a release is woken by it; it also looks at the hold
// this often, in case a wake-up raced with its registration.
constexpr int kReleasePollMs = 100;
// A move waits for the session's settings capture, or for a login a prewarm
// is opening, in steps of this (the awaited event wakes it sooner).
constexpr int kMovePollMs = 50;
// How long a move waits for a login that a prewarm is still opening before
// it logs in itself; the login's end wakes it sooner.
constexpr int kPrewarmWaitMs = 10000;

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

// Re-applies the settings a session changed on a fresh login (one SELECT of
// set_config calls); nothing to do when there are none. On failure the
// connection is closed.
asio::awaitable<Status> ApplySettings(
    ServerConn& c, const std::vector<std::pair<std::string, std::string>>& settings) {
  if (settings.empty()) co_return Status::OK();
  std::string sql = "SELECT ";
  for (size_t i = 0; i < settings.size(); i++) {
    if (i) sql += ", ";
    sql += "pg_catalog.set_config(" + Literal(settings[i].first) + ", " +
           Literal(settings[i].second) + ", false)";
  }
  auto r = co_await SimpleQuery(c, sql);
  if (!r.ok()) c.stream.Close();
  co_return r.status();
}

// Ends a server connection a move replaced, at `when` (RetireSchedule). It is
// idle: the move happened at a transaction boundary.
asio::awaitable<void> Retire(std::shared_ptr<ServerConn> old,
                             RetireSchedule::Clock::time_point when, std::shared_ptr<Route> route) {
  route->retiring_connections++;
  asio::steady_timer timer(co_await asio::this_coro::executor, when);
  co_await timer.async_wait(kNoThrow);
  old->outbox.Append(TerminateMessage());
  co_await old->outbox.Flush(old->stream);
  old->stream.Close();
  route->retiring_connections--;
}

// A pre-opened login whose server hung up is not worth taking.
bool StillGood(ServerConn& c) {
  pollfd p{c.stream.native_fd(), POLLRDHUP, 0};
  return poll(&p, 1, 0) == 0;
}

}  // namespace

asio::awaitable<void> Session::MoveFailed(const std::string& message) {
  route_->ended_move_failed++;
  route_->switches.Ended(route_->generation(), EndReason::kMoveFailed);
  co_await Refuse("08006", message);
}

asio::awaitable<void> Session::Prewarm(UpstreamConfig to) {
  if (closed_ || replication_ || prewarm_inflight_) co_return;
  // A login opened ahead that still fits is kept; one whose settings the
  // session has changed since is replaced.
  if ((prewarmed_ && prewarm_to_ == to && prewarm_settings_ == settings_) ||
      (server_ && server_->upstream == to))
    co_return;
  prewarm_inflight_ = true;
  auto settings = settings_;
  UpstreamLogin login{to, startup_params_, credential_, &shared_.upstream_tls};
  LoginOutcome lo = co_await ConnectUpstream(login);
  if (lo.conn && !(co_await ApplySettings(*lo.conn, settings)).ok()) lo.conn.reset();
  // A fresh backend's first statements cost several times the usual while it
  // loads its caches; pay that now, not at the switch.
  if (lo.conn && !(co_await ParseOnly(*lo.conn, warm_texts_)).ok()) lo.conn.reset();
  prewarm_inflight_ = false;
  wake_->cancel();  // a move may be waiting for this login
  if (!lo.conn) co_return;
  if (closed_) {
    lo.conn->stream.Close();
    co_return;
  }
  if (prewarmed_) prewarmed_->stream.Close();
  prewarmed_ = lo.conn;
  prewarm_to_ = to;
  prewarm_settings_ = settings;
}

std::shared_ptr<ServerConn> Session::TakePrewarmed(const UpstreamConfig& to) {
  auto c = std::move(prewarmed_);
  prewarmed_.reset();
  if (!c) return nullptr;
  if (prewarm_to_ == to && prewarm_settings_ == settings_ && StillGood(*c)) return c;
  c->stream.Close();
  return nullptr;
}

bool Session::BeginTransactionNow() {
  // Mark first, then look at the hold: Route::Hold does the reverse.
  Advance(SessionEvent::kClientBegins);
  // Under uncarriable: wait a session holding what cannot move goes on
  // through a hold on its server; the hold waits for it (Route::HoldLeased).
  if ((!route_->held() || KeptOnSource()) && route_->generation() == generation_ && !server_lost_ &&
      !CarriersAhead())
    return true;
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
  while (route_->held() && !closed_) co_await WaitWake(kReleasePollMs);
  route_->RemoveWaiter(id);
}

asio::awaitable<bool> Session::EnterTransaction() {
  while (!closed_) {
    // A hold asked this session to end (uncarriable: wait, past the wait).
    if (end_kept_ && route_->held() && co_await EndKept()) co_return false;
    end_kept_ = false;
    if (BeginTransactionNow()) co_return true;
    if (route_->held()) {
      Advance(SessionEvent::kHoldWait);
      co_await WaitForRelease();
      if (closed_) co_return false;
      Advance(SessionEvent::kHoldReleased);
      continue;
    }
    // The hold may have ended since the check above: look again.
    if (route_->generation() == generation_ && !server_lost_) {
      // After a switch, sessions holding advisory locks move first.
      if (CarriersAhead()) co_await WaitForCarriers();
      continue;
    }
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
  while (capture_inflight_ && !server_lost_ && !closed_) co_await WaitWake(kMovePollMs);
  if (settings_dirty_ && !replication_ && !server_lost_ && !closed_) {
    StartCapture();
    co_await FlushServer();
    while (capture_inflight_ && !server_lost_ && !closed_) co_await WaitWake(kMovePollMs);
  }
  if (closed_) co_return false;
  if (settings_dirty_ && !replication_) {
    co_await MoveFailed("pgshift-proxy: cannot move this session to " + dest +
                        ": the session settings it changed could not be read from "
                        "its previous server; reconnect to continue");
    co_return false;
  }
  if (!replication_ && !co_await ProbeState(dest)) co_return false;
  // A login opened ahead (Prewarm, before the cutover's hold) saves logging in now.
  for (int waited = 0; prewarm_inflight_ && !closed_ && waited < kPrewarmWaitMs;
       waited += kMovePollMs)
    co_await WaitWake(kMovePollMs);
  if (closed_) co_return false;
  LoginOutcome lo;
  lo.conn = TakePrewarmed(target.upstream);
  const bool prewarmed = lo.conn != nullptr;
  if (!prewarmed) {
    UpstreamLogin login{target.upstream, startup_params_, credential_, &shared_.upstream_tls};
    lo = co_await ConnectUpstream(login);
  }
  if (!lo.conn) {
    co_await MoveFailed("pgshift-proxy: cannot move this session to " + dest + ": " +
                        lo.status.message());
    co_return false;
  }
  if (!prewarmed) {
    Status st = co_await ApplySettings(*lo.conn, settings_);
    if (!st.ok()) {
      co_await MoveFailed("pgshift-proxy: cannot move this session to " + dest +
                          ": re-applying its settings failed: " + st.message());
      co_return false;
    }
  }
  if (!co_await CarryState(*lo.conn, dest)) co_return false;
  if (closed_) {
    lo.conn->stream.Close();
    co_return false;
  }
  DetachSplice();  // the slot holds the old server's socket
  auto old = server_;
  server_ = lo.conn;
  route_->switches.Moved(generation_, target.generation,
                         {.prewarmed = prewarmed,
                          .settings = static_cast<int64_t>(settings_.size()),
                          .protocol_statements = static_cast<int64_t>(statements_.size()),
                          .prepared_statements = static_cast<int64_t>(probe_.prepared.size()),
                          .listen_channels = static_cast<int64_t>(probe_.channels.size()),
                          .advisory_locks = static_cast<int64_t>(probe_.locks.size())});
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
  route_->switched_sessions++;
  if (prewarmed) route_->prewarmed_switches++;
  StateCarried();
  auto self = shared_from_this();
  auto sc = server_;
  auto ex = co_await asio::this_coro::executor;
  if (old) asio::co_spawn(ex, Retire(old, shared_.retire.Next(), route_), asio::detached);
  asio::co_spawn(
      ex, [self, sc]() -> asio::awaitable<void> { co_await self->ServerPump(sc); }, asio::detached);
  spdlog::info("pgshift-proxy: {} moved to {}", Tag(), dest);
  co_return true;
}

}  // namespace pgshift::proxy
