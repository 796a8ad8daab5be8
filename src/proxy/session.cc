// Session, part one: its life (state transitions and the route's gauges,
// close) and the two pumps that forward bytes, client → server and
// server → client, handing the messages the proxy must see to part five
// (session_messages.cc). Same thread-safety as session.h: one session runs
// on one strand.
#include "proxy/session.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

namespace pgshift::proxy {
namespace {

int64_t SteadyNowUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Bytes a pump reads from a socket at once.
constexpr size_t kReadChunk = 16384;
// Like the server's authentication_timeout: a client must finish its startup
// (TLS, startup packet, upstream login) within this.
constexpr int kLoginTimeoutSeconds = 60;

}  // namespace

Session::Session(tcp::socket client, ProxyShared& shared)
    : shared_(shared),
      client_(std::move(client), shared.server_tls ? *shared.server_tls : shared.plain_ctx),
      client_out_(client_.socket().get_executor()) {
  wake_ = std::make_shared<asio::steady_timer>(client_.socket().get_executor());
}

Session::~Session() {
  end_delivered_ = true;  // nothing is left to deliver it
  Close();
}

std::string Session::Tag() const {
  return "session " + std::to_string(cancel_pid_) + " (" + user_ + "@" + database_ + ")";
}

void Session::Advance(SessionEvent e) {
  auto next = Transition(state_, e);
  if (!next) {
    spdlog::error("pgshift-proxy: {}: event {} is not allowed in state {}; closing", Tag(),
                  EventName(e), StateName(state_));
    next = SessionState::kClosed;
    closed_ = true;
  }
  if (replication_view_ &&
      (state_ == SessionState::kStreaming) != (*next == SessionState::kStreaming))
    SetReplicationStreaming(*next == SessionState::kStreaming);
  if (route_) {
    // An upstream login counts as work in flight: a hold waits for it, so no
    // login reaches the old server once the hold is in place (and the fence).
    auto busy = [](SessionState s) {
      return s == SessionState::kActive || s == SessionState::kAuthenticating;
    };
    auto waiting = [](SessionState s) {
      return s == SessionState::kHeld || s == SessionState::kLoginHeld;
    };
    auto pre_login = [](SessionState s) {
      return s == SessionState::kStartup || s == SessionState::kAuthenticating ||
             s == SessionState::kLoginHeld;
    };
    if (busy(state_) && !busy(*next)) route_->in_transaction--;
    if (!busy(state_) && busy(*next)) route_->in_transaction++;
    if (waiting(state_) && !waiting(*next)) route_->held_sessions--;
    if (!waiting(state_) && waiting(*next)) route_->held_sessions++;
    if (*next == SessionState::kIdle && state_ == SessionState::kAuthenticating) {
      route_->sessions++;
      route_->switches.Joined(generation_);
    }
    if (*next == SessionState::kClosed && state_ != SessionState::kClosed && !pre_login(state_)) {
      route_->sessions--;
      route_->switches.Left(generation_);
    }
  }
  // The first message of a transaction: a wait in a hold that follows is
  // part of its latency (BeginTransactionNow may step back to idle first).
  if (*next == SessionState::kActive && txn_start_us_ == 0) txn_start_us_ = SteadyNowUs();
  state_ = *next;
}

void Session::CountTransaction() {
  route_->transactions++;
  if (txn_failed_) route_->failed_transactions++;
  if (txn_start_us_ > 0 && !replication_) route_->txn_latency.Record(SteadyNowUs() - txn_start_us_);
  txn_start_us_ = 0;
  txn_failed_ = false;
}

void Session::Close() {
  // A paused replication stream closes once its ErrorResponse is written
  // (EndReplicationStream), not when a pump notices the server is gone.
  if (stream_ending_ && !end_delivered_) return;
  closing_ = true;
  DetachSplice();  // before the sockets close, with the kernel's counts accounted
  if (state_ != SessionState::kClosed) Advance(SessionEvent::kClose);
  closed_ = true;
  ReleaseServer();
  pause_done_.reset();  // after the server connection closed
  client_.Close();
  if (cancel_target_) {
    shared_.cancels.Unregister(cancel_pid_, cancel_key_);
    cancel_target_.reset();
  }
  if (member_id_ != 0) {
    route_->RemoveMember(member_id_);
    member_id_ = 0;
  }
  LeaveCarryGate();
  LeaveUncarriable();                        // a hold waiting for it stops waiting
  if (watch_timer_) watch_timer_->cancel();  // WatchForSwitch ends
  if (replication_id_ != 0) {
    route_->RemoveReplication(replication_id_);
    replication_id_ = 0;
  }
  if (prewarmed_) {
    prewarmed_->stream.Close();
    prewarmed_.reset();
  }
  if (wake_) wake_->cancel();
}

asio::awaitable<void> Session::Run() {
  auto self = shared_from_this();
  asio::error_code ig;
  client_.socket().set_option(tcp::no_delay(true), ig);
  // Like the server's authentication_timeout: a client that never finishes its
  // startup (TLS, startup packet, upstream login) does not hold a session forever.
  auto login_deadline = std::make_shared<asio::steady_timer>(client_.socket().get_executor());
  login_deadline->expires_after(std::chrono::seconds(kLoginTimeoutSeconds));
  std::weak_ptr<Session> weak = self;
  login_deadline->async_wait([weak](asio::error_code ec) {
    auto s = weak.lock();
    if (ec || !s) return;
    if (s->state_ == SessionState::kStartup || s->state_ == SessionState::kAuthenticating) {
      spdlog::info("pgshift-proxy: closing a client that did not finish its startup in {} s",
                   kLoginTimeoutSeconds);
      s->client_.Close();
    }
  });
  bool started = co_await Startup();
  login_deadline->cancel();
  if (started) {
    auto ex = co_await asio::this_coro::executor;
    auto sc = server_;
    asio::co_spawn(
        ex, [self, sc]() -> asio::awaitable<void> { co_await self->ServerPump(sc); },
        asio::detached);
    co_await ClientPump();
  }
  Close();
}

asio::awaitable<bool> Session::FlushClient() { co_return co_await client_out_.Flush(client_); }

asio::awaitable<bool> Session::FlushServer() {
  auto sc = server_;
  if (!sc) co_return false;
  co_return co_await sc->outbox.Flush(sc->stream);
}

asio::awaitable<void> Session::WaitWake(int ms) {
  wake_->expires_after(std::chrono::milliseconds(ms));
  co_await wake_->async_wait(kNoThrow);
}

asio::awaitable<void> Session::ClientPump() {
  std::string& in = client_in_;
  size_t skip = 0;  // bytes of a streamed CopyData message still to forward
  char tmp[kReadChunk];
  while (!closed_) {
    auto [ec, n] = co_await client_.ReadSome(tmp, sizeof(tmp));
    LeaveSplice();  // whatever woke us, the kernel's part comes first
    if (ec || closed_) break;
    if (stream_ending_) continue;  // ended for a pause: nothing more goes upstream
    route_->bytes_from_clients += static_cast<int64_t>(n);
    in.append(tmp, n);
    size_t pos = 0;
    bool stop = false;
    while (pos < in.size() && !stop) {
      if (skip > 0) {
        size_t take = std::min(skip, in.size() - pos);
        server_->outbox.Append(std::string_view(in).substr(pos, take));
        pos += take;
        skip -= take;
        continue;
      }
      MessageHeader h;
      std::string err;
      DecodeStatus st = DecodeHeader(std::string_view(in).substr(pos), &h, &err);
      if (st == DecodeStatus::kNeedMoreData) break;
      if (st == DecodeStatus::kError) {
        shared_.protocol_errors++;
        co_await Refuse("08P01", "pgshift-proxy: invalid message from client: " + err);
        stop = true;
        break;
      }
      if (h.type == 'X') {
        co_await SettleForPark();
        park_ = CanPark();
        if (!park_) server_->outbox.Append(TerminateMessage());
        stop = true;
        break;
      }
      while (eager_move_ && !closed_) {  // WatchForSwitch is moving the session
        asio::steady_timer t(client_.socket().get_executor(), std::chrono::milliseconds(1));
        co_await t.async_wait(kNoThrow);
      }
      // The server ended the session and the client has its error: nothing
      // more goes upstream, as on a direct connection.
      if (closed_ || server_ended_) {
        stop = true;
        break;
      }
      if (state_ == SessionState::kIdle) {
        if ((!server_->outbox.WriteNow(server_->stream) && !co_await FlushServer()) ||
            (!BeginTransactionNow() && !co_await EnterTransaction())) {
          stop = true;
          break;
        }
      }
      if (h.type == 'd') {  // CopyData: stream it through without buffering it whole
        size_t take = std::min(h.total(), in.size() - pos);
        server_->outbox.Append(std::string_view(in).substr(pos, take));
        skip = h.total() - take;
        pos += take;
        continue;
      }
      if (in.size() - pos < h.total()) break;
      Message m{h.type, std::string_view(in).substr(pos + 5, h.length - 4), h.total()};
      if (!OnClientMessage(m)) {
        shared_.protocol_errors++;
        co_await Refuse(
            "08P01", std::string("pgshift-proxy: malformed '") + h.type + "' message from client");
        stop = true;
        break;
      }
      pos += h.total();
    }
    in.erase(0, pos);
    if (server_ && !server_->outbox.WriteNow(server_->stream) && !co_await FlushServer()) break;
    if (stop) break;
  }
  Close();
}

asio::awaitable<void> Session::ServerPump(std::shared_ptr<ServerConn> sc) {
  std::string in = std::move(sc->leftover);
  sc->leftover.clear();
  size_t skip = 0;
  bool skip_forward = true;
  std::string out;
  char tmp[kReadChunk];
  bool fatal_at_boundary = false;
  while (true) {
    size_t pos = 0;
    bool capture_was = capture_inflight_;
    while (pos < in.size()) {
      if (skip > 0) {
        size_t take = std::min(skip, in.size() - pos);
        if (skip_forward) out.append(in, pos, take);
        pos += take;
        skip -= take;
        continue;
      }
      // A message boundary: what the proxy adds to the stream goes here.
      if (feedback_pending_ || pause_pending_) {
        s2c_open_ = false;
        if (feedback_pending_ && CanInjectKeepalive()) out += TakeKeepalive();
        if (pause_pending_) break;  // nothing more is forwarded
      }
      MessageHeader h;
      std::string err;
      DecodeStatus st = DecodeHeader(std::string_view(in).substr(pos), &h, &err);
      if (st == DecodeStatus::kNeedMoreData) break;
      if (st == DecodeStatus::kError) {
        spdlog::error("pgshift-proxy: {}: malformed message from upstream: {}", Tag(), err);
        Close();
        co_return;
      }
      bool inspect = capture_inflight_ || probe_inflight_ || h.type == 'Z' || h.type == '1' ||
                     h.type == 'S' || h.type == 'E' || h.type == 'C' || h.type == 'W' ||
                     (replication_ && h.type == 'c');
      if (!inspect) {
        size_t take = std::min(h.total(), in.size() - pos);
        out.append(in, pos, take);
        skip = h.total() - take;
        skip_forward = true;
        pos += take;
        continue;
      }
      if (in.size() - pos < h.total()) break;
      Message m{h.type, std::string_view(in).substr(pos + 5, h.length - 4), h.total()};
      bool forward = true;
      if (h.type == 'E' && state_ != SessionState::kActive && state_ != SessionState::kStreaming &&
          IsFatalError(m.body)) {
        // The server ends a session between transactions (pg_terminate_backend,
        // an idle timeout, a restart, a cutover's fence). Only when the proxy
        // is moving the session anyway and loses nothing by it does the
        // client not hear of it; otherwise it gets the server's error and the
        // connection closes, as it would directly.
        capture_inflight_ = probe_inflight_ = false;
        capture_failed_ = probe_failed_ = true;
        wake_->cancel();
        if (MoveCoversLoss()) {
          forward = false;
          fatal_at_boundary = true;
        } else {
          server_ended_ = true;
          route_->errors++;
          route_->server_ended_sessions++;
        }
      } else {
        forward = OnServerMessage(m);
      }
      if (forward) out.append(in, pos, h.total());
      pos += h.total();
    }
    in.erase(0, pos);
    s2c_open_ = skip > 0;
    if (feedback_pending_ && CanInjectKeepalive()) out += TakeKeepalive();
    if (!out.empty() && sc == server_) {
      route_->bytes_to_clients += static_cast<int64_t>(out.size());
      client_out_.Append(out);
      out.clear();
      if (!client_out_.WriteNow(client_) && !co_await FlushClient()) {
        Close();
        co_return;
      }
    }
    out.clear();
    if (sc != server_ || closed_ || stream_ending_) co_return;
    if (pause_pending_ && !s2c_open_) {
      EndReplicationStream();
      co_return;
    }
    if (!capture_was && capture_inflight_) co_await FlushServer();
    if (state_ == SessionState::kIdle && settings_dirty_ && !capture_inflight_ &&
        !probe_inflight_ && !replication_ && !capture_failed_ && !fatal_at_boundary) {
      StartCapture();
      co_await FlushServer();
    }
    if (in.empty() && skip == 0 && !fatal_at_boundary && CanSplice()) EnterSplice();
    auto [ec, n] = co_await sc->stream.ReadSome(tmp, sizeof(tmp));
    if (sc != server_ || closed_ || stream_ending_) co_return;
    LeaveSplice();
    if (ec) break;
    in.append(tmp, n);
  }
  // The upstream connection ended.
  const bool boundary = state_ == SessionState::kIdle || state_ == SessionState::kHeld ||
                        state_ == SessionState::kMigrating;
  if (boundary && !server_ended_ && (fatal_at_boundary || MoveCoversLoss())) {
    server_lost_ = true;
    capture_inflight_ = false;
    sc->stream.Close();
    wake_->cancel();
    spdlog::info(
        "pgshift-proxy: {}: upstream closed at a transaction boundary; the session "
        "reconnects at its next transaction",
        Tag());
    co_return;
  }
  if (boundary) {
    if (!server_ended_) route_->server_ended_sessions++;
    spdlog::info("pgshift-proxy: {}: the server ended the session between transactions{}; closing",
                 Tag(), server_ended_ ? " (its error went to the client)" : "");
  }
  Close();
}

}  // namespace pgshift::proxy
