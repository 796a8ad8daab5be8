// Session, part six: replication connections (replication=database) and what
// a cutover needs of the CDC consumers streaming through them. The admin API
// lists them (Route::ReplicationSessions), asks the streaming ones for
// feedback (a keepalive with replyRequested set, so the client reports its
// flushed position at once instead of at its next status interval) and
// pauses them (the session ends; the client's reconnect waits in the hold
// like any login and then goes wherever the route points). Same
// thread-safety as session.h: one session runs on one strand.
#include <spdlog/spdlog.h>

#include <chrono>

#include "proxy/session.h"

namespace pgshift::proxy {
namespace {

// The ErrorResponse a paused replication client gets: 57P01 (admin_shutdown)
// like a server shutting down, which consumers such as pg_recvlogical answer
// by reconnecting.
constexpr const char* kPausedSqlstate = "57P01";
constexpr const char* kPausedMessage =
    "pgshift-proxy: replication stream paused because the database is moving to another server; "
    "reconnect to continue streaming from there";

// A paused client that does not read its ErrorResponse is closed anyway
// after this.
constexpr std::chrono::seconds kEndDeliveryTimeout{10};
// How often the delivery looks whether another coroutine's write has ended.
constexpr std::chrono::milliseconds kDeliveryPoll{5};

int64_t PgEpochMicrosNow() {
  const auto since_unix = std::chrono::duration_cast<std::chrono::microseconds>(
      std::chrono::system_clock::now().time_since_epoch());
  return since_unix.count() - kPgEpochUnixSeconds * 1000000;
}

}  // namespace

void Session::RegisterReplication() {
  replication_view_ = std::make_shared<ReplicationView>();
  ReplicationSessionInfo& info = replication_view_->info;  // not shared yet
  info.database = database_;
  info.user = user_;
  for (const auto& [k, v] : startup_params_)
    if (k == "application_name") info.application_name = v;
  asio::error_code ec;
  auto peer = client_.socket().remote_endpoint(ec);
  if (!ec) info.client_addr = peer.address().to_string() + ":" + std::to_string(peer.port());

  std::weak_ptr<Session> weak = weak_from_this();
  auto ex = client_.socket().get_executor();
  replication_id_ = route_->AddReplication({
      .describe =
          [view = replication_view_, target = cancel_target_] {
            ReplicationSessionInfo out;
            {
              std::lock_guard<std::mutex> l(view->mu);
              out = view->info;
            }
            std::lock_guard<std::mutex> l(target->mu);
            out.backend_pid = target->pid;
            out.server = target->upstream;
            return out;
          },
      .request_feedback =
          [weak, ex] {
            asio::post(ex, [weak] {
              if (auto s = weak.lock()) s->OnFeedbackRequest();
            });
          },
      .pause =
          [weak, ex](std::shared_ptr<Countdown> done) {
            asio::post(ex, [weak, done = std::move(done)]() mutable {
              if (auto s = weak.lock()) s->OnPauseRequest(std::move(done));
            });
          },
  });
}

void Session::SetReplicationStreaming(bool streaming) {
  if (!replication_view_) return;
  std::lock_guard<std::mutex> l(replication_view_->mu);
  replication_view_->info.streaming = streaming;
}

void Session::SetReplicationSlot(std::string slot) {
  if (!replication_view_) return;
  std::lock_guard<std::mutex> l(replication_view_->mu);
  replication_view_->info.slot = std::move(slot);
}

std::string Session::ReplicationSlot() const {
  if (!replication_view_) return "";
  std::lock_guard<std::mutex> l(replication_view_->mu);
  return replication_view_->info.slot;
}

void Session::OnReplicationQuery(std::string_view sql) {
  std::string slot;
  if (ParseStartReplicationSlot(sql, &slot)) SetReplicationSlot(std::move(slot));
}

void Session::OnReplicationCommandDone() {
  copy_out_open_ = false;
  feedback_pending_ = false;  // nothing to answer outside a stream
  SetReplicationSlot("");
}

bool Session::CanInjectKeepalive() const {
  return state_ == SessionState::kStreaming && copy_out_open_ && !s2c_open_ && !stream_ending_ &&
         !closed_;
}

std::string Session::TakeKeepalive() {
  feedback_pending_ = false;
  route_->replication_feedback_requests++;
  // walEnd 0 (InvalidXLogRecPtr): a client takes the larger of it and what
  // it has written, so the keepalive never makes it claim more.
  return PrimaryKeepalive(0, PgEpochMicrosNow(), /*reply_requested=*/true);
}

void Session::OnFeedbackRequest() {
  if (state_ != SessionState::kStreaming || !copy_out_open_ || stream_ending_ || closed_) return;
  if (s2c_open_) {  // the ServerPump adds it after the message it is forwarding
    feedback_pending_ = true;
    return;
  }
  std::string k = TakeKeepalive();
  route_->bytes_to_clients += static_cast<int64_t>(k.size());
  client_out_.Append(k);
  FlushClientSoon();
}

void Session::OnPauseRequest(std::shared_ptr<Countdown> done) {
  if (stream_ending_ || closed_) return;  // `done` goes with this call
  pause_done_ = std::move(done);
  if (s2c_open_) {
    pause_pending_ = true;
    return;
  }
  EndReplicationStream();
}

void Session::EndReplicationStream() {
  pause_pending_ = false;
  stream_ending_ = true;
  route_->replication_pauses++;
  if (server_) server_->stream.Close();
  // No longer a replication session of the route, before the pause's wait ends.
  route_->RemoveReplication(replication_id_);
  replication_id_ = 0;
  pause_done_.reset();
  spdlog::info(
      "pgshift-proxy: {}: replication paused (slot \"{}\"); the client is told to reconnect", Tag(),
      ReplicationSlot());
  client_out_.Append(ErrorResponse("FATAL", kPausedSqlstate, kPausedMessage));
  // Close waits for this (end_delivered_), whoever calls it.
  auto self = shared_from_this();
  auto ex = client_.socket().get_executor();
  auto deadline = std::make_shared<asio::steady_timer>(ex, kEndDeliveryTimeout);
  deadline->async_wait([weak = weak_from_this()](asio::error_code ec) {
    auto s = weak.lock();
    if (ec || !s) return;
    s->end_delivered_ = true;
    s->Close();
  });
  asio::co_spawn(
      ex,
      [self, deadline]() -> asio::awaitable<void> {
        co_await self->DeliverEnd();
        deadline->cancel();
        self->end_delivered_ = true;
        self->Close();
      },
      asio::detached);
}

asio::awaitable<void> Session::DeliverEnd() {
  // Flush returns while another coroutine's flush still writes (it takes our
  // bytes too): look again until nothing is queued or in flight.
  asio::steady_timer poll(client_.socket().get_executor());
  while (!client_out_.idle() && !client_out_.failed()) {
    if (!co_await FlushClient()) break;
    if (client_out_.idle()) break;
    poll.expires_after(kDeliveryPoll);
    co_await poll.async_wait(kNoThrow);
  }
}

void Session::FlushClientSoon() {
  if (client_out_.WriteNow(client_)) return;
  auto self = shared_from_this();
  asio::co_spawn(
      client_.socket().get_executor(),
      [self]() -> asio::awaitable<void> { co_await self->FlushClient(); }, asio::detached);
}

}  // namespace pgshift::proxy
