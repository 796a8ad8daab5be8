// Session, part six: what a move carries beyond settings and protocol-level
// statements (session_carry.h). A session whose statements may have created
// server-side state is probed on its old server when it moves; SQL-level
// prepared statements, LISTEN channels and session advisory locks are
// re-created on the new server, anything else ends the session with a FATAL
// that names it. Sessions holding such state move right after a switch (not
// at their client's next statement), and the route's other sessions wait for
// those that may hold advisory locks (CarryGate), so none takes a carried
// lock first. Same thread-safety as session.h: one
// session runs on one strand.
#include <spdlog/spdlog.h>

#include "proxy/session.h"

namespace pgshift::proxy {
namespace {

// A session holding state looks for a switch this often (a release wakes it
// sooner).
constexpr int kWatchMs = 100;
// The kinds a move cannot carry.
constexpr uint32_t kUncarriableKinds = kStateTemporary | kStateHoldable;
// Sessions waiting for lock holders to move look again this often.
constexpr int kGatePollMs = 5;
// A session that cannot move is told so with the server's own code for a
// session ended from outside: poolers reconnect on it.
constexpr std::string_view kEndedState = "57P01";

asio::awaitable<void> Sleep(int ms) {
  asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::milliseconds(ms));
  co_await t.async_wait(kNoThrow);
}

}  // namespace

void Session::NoteStateKeywords(std::string_view sql) {
  uint32_t kinds = StateKeywords(sql);
  if (kinds == 0 || replication_) return;
  state_kinds_ |= kinds;
  if ((kinds & kStateAdvisory) && gate_id_ == 0) gate_id_ = route_->carry_gate.Add(generation_);
  if (kinds & kUncarriableKinds) NoteUncarriable();
  if (watching_) return;
  // An idle session holding state moves right after a switch: a listener
  // that only waits for notifications would otherwise stay on the old server.
  watching_ = true;
  auto ex = client_.socket().get_executor();
  if (!watch_timer_) watch_timer_ = std::make_shared<asio::steady_timer>(ex);
  std::weak_ptr<asio::steady_timer> weak = watch_timer_;
  watch_waiter_id_ = route_->AddWaiter([ex, weak] {
    asio::post(ex, [weak] {
      if (auto t = weak.lock()) t->cancel();
    });
  });
  auto self = shared_from_this();
  asio::co_spawn(
      ex, [self]() -> asio::awaitable<void> { co_await self->WatchForSwitch(); }, asio::detached);
}

void Session::LeaveCarryGate() {
  if (gate_id_ == 0) return;
  route_->carry_gate.Remove(gate_id_);
  gate_id_ = 0;
}

void Session::StartProbe() {
  probe_inflight_ = true;
  probe_failed_ = false;
  probe_ = CarriedState{};
  syncs_sent_++;
  server_->outbox.Append(QueryMessage(kProbeSql));
}

void Session::OnProbeMessage(const Message& m) {
  if (m.type == 'D') {
    std::vector<std::string> cols;
    if (!ParseDataRow(m.body, &cols) || !AddProbeRow(cols, &probe_).ok()) probe_failed_ = true;
  } else if (m.type == 'E') {
    probe_failed_ = true;
  } else if (m.type == 'Z') {
    rfq_seen_++;
    probe_inflight_ = false;
    wake_->cancel();
  }
}

bool Session::MoveCoversLoss() const {
  bool moving = route_->held() || route_->generation() != generation_;
  return moving && state_kinds_ == 0 && !settings_dirty_;
}

asio::awaitable<void> Session::EndSession(std::atomic<int64_t>& counter, EndReason why,
                                          const std::string& message, bool before_switch) {
  counter++;
  if (before_switch)
    route_->switches.EndedInHold(why);
  else
    route_->switches.Ended(route_->generation(), why);
  route_->errors++;
  spdlog::info("pgshift-proxy: {} ended: {}", Tag(), message);
  client_out_.Append(ErrorResponse("FATAL", kEndedState, message));
  co_await FlushClient();
}

asio::awaitable<bool> Session::ProbeState(const std::string& dest) {
  probe_ = CarriedState{};
  if (state_kinds_ == 0) co_return true;
  const std::string prefix =
      "pgshift-proxy: terminating this session: its database moved to " + dest + " and ";
  if (!server_lost_ && !closed_) {
    StartProbe();
    co_await FlushServer();
    while (probe_inflight_ && !server_lost_ && !closed_) co_await WaitWake(kWatchMs);
  }
  if (closed_) co_return false;
  if (server_lost_ || probe_inflight_ || probe_failed_) {
    probe_inflight_ = false;
    co_await EndSession(route_->ended_carry_failed, EndReason::kCarryFailed,
                        prefix +
                            "what the session held on its previous server (prepared "
                            "statements, LISTEN, advisory locks, temporary tables) could not "
                            "be read; reconnect to continue");
    co_return false;
  }
  std::string why = Uncarriable(probe_);
  if (!why.empty()) {
    auto& counter = probe_.temp_tables.empty() ? route_->ended_holdable_cursors
                                               : route_->ended_temporary_tables;
    if (!probe_.temp_tables.empty() && !probe_.holdable_cursors.empty())
      route_->ended_holdable_cursors++;
    co_await EndSession(
        counter,
        probe_.temp_tables.empty() ? EndReason::kHoldableCursors : EndReason::kTemporaryTables,
        prefix + "it holds " + why +
            ", which cannot move to another server; reconnect to "
            "continue");
    co_return false;
  }
  co_return true;
}

asio::awaitable<bool> Session::CarryState(ServerConn& c, const std::string& dest) {
  if (probe_.empty()) co_return true;
  const std::string prefix =
      "pgshift-proxy: terminating this session: its database moved to " + dest + " and ";
  auto sql = RecreateSql(probe_);
  Status st = sql.status();
  if (st.ok() && !sql->empty()) st = (co_await SimpleQuery(c, *sql)).status();
  if (!st.ok()) {
    c.stream.Close();
    co_await EndSession(
        route_->ended_carry_failed, EndReason::kCarryFailed,
        prefix + "re-creating its prepared statements or LISTEN there failed: " + st.message());
    co_return false;
  }
  std::string locks = LockSql(probe_);
  if (locks.empty()) co_return true;
  auto r = co_await SimpleQuery(c, locks);
  std::string missing;
  if (r.ok() && r->size() == 1 && (*r)[0].size() == probe_.locks.size()) {
    for (size_t i = 0; i < probe_.locks.size(); i++)
      if ((*r)[0][i] != "t") missing += (missing.empty() ? "" : "; ") + probe_.locks[i].key;
  } else {
    missing = r.ok() ? "unexpected answer" : r.status().message();
  }
  if (!missing.empty()) {
    c.stream.Close();
    co_await EndSession(
        route_->ended_carry_failed, EndReason::kCarryFailed,
        prefix + "its session advisory lock(s) could not be taken there (" + missing + ")");
    co_return false;
  }
  co_return true;
}

void Session::NoteUncarriable() {
  if (uncarriable_id_ != 0) return;
  auto ex = client_.socket().get_executor();
  std::weak_ptr<Session> weak = shared_from_this();
  uncarriable_id_ = route_->AddUncarriable([ex, weak] {
    asio::post(ex, [weak] {
      auto s = weak.lock();
      if (!s || s->closed_) return;
      s->end_kept_ = true;
      if (s->watch_timer_) s->watch_timer_->cancel();
    });
  });
}

void Session::LeaveUncarriable() {
  if (uncarriable_id_ == 0) return;
  route_->RemoveUncarriable(uncarriable_id_);
  uncarriable_id_ = 0;
  // It held what cannot move while a hold waited for it, and let go in time.
  if (kept_kinds_ != 0 && !kept_ending_ && route_->held()) {
    route_->uncarriable_waited++;
    route_->switches.WaitedInHold();
  }
  kept_kinds_ = 0;
  kept_why_.clear();
}

bool Session::KeptOnSource() const {
  return uncarriable_id_ != 0 && !end_kept_ && !kept_ending_ &&
         route_->uncarriable() == UncarriableMode::kWait && route_->generation() == generation_ &&
         !server_lost_;
}

bool Session::ProbeInHoldDue() const {
  return uncarriable_id_ != 0 && route_->uncarriable() == UncarriableMode::kWait &&
         route_->held() && state_ == SessionState::kIdle && AtBoundary() && !probe_inflight_ &&
         !capture_inflight_ && !server_lost_ && !closed_ && server_ &&
         syncs_sent_ != probed_at_syncs_;
}

asio::awaitable<void> Session::ProbeInHold() {
  StartProbe();
  co_await FlushServer();
  while (probe_inflight_ && !server_lost_ && !closed_) co_await WaitWake(kWatchMs);
  probed_at_syncs_ = syncs_sent_;
  if (closed_ || server_lost_ || probe_inflight_ || probe_failed_) {
    probe_inflight_ = false;
    probe_ = CarriedState{};
    co_return;  // still counted: a hold goes on waiting, and ends it at its deadline
  }
  const std::string why = Uncarriable(probe_);
  const uint32_t kinds = (probe_.temp_tables.empty() ? 0u : kStateTemporary) |
                         (probe_.holdable_cursors.empty() ? 0u : kStateHoldable);
  probe_ = CarriedState{};
  if (kinds == 0) {
    state_kinds_ &= ~kUncarriableKinds;
    LeaveUncarriable();
    co_return;
  }
  if (why != kept_why_)
    spdlog::info("pgshift-proxy: {} holds {}: it goes on on its server while the route is held",
                 Tag(), why);
  kept_kinds_ = kinds;
  kept_why_ = why;
}

asio::awaitable<bool> Session::EndKept() {
  if (kept_ending_ || closed_) co_return true;
  while (probe_inflight_ && !server_lost_ && !closed_) co_await WaitWake(kWatchMs);
  if (ProbeInHoldDue()) co_await ProbeInHold();
  if (kept_ending_ || closed_) co_return true;
  if (uncarriable_id_ == 0) co_return false;  // it let go: held like any other session now
  kept_ending_ = true;
  const uint32_t kinds = kept_kinds_;
  const std::string what = kept_why_;
  LeaveUncarriable();
  const std::string prefix =
      "pgshift-proxy: terminating this session: its database is moving to another server and ";
  const std::string wait = ": the switch waited for the session until the hold's deadline";
  if (kinds == 0) {
    co_await EndSession(
        route_->ended_carry_failed, EndReason::kCarryFailed,
        prefix + "what it held on its server could not be read" + wait + "; reconnect to continue",
        /*before_switch=*/true);
    co_return true;
  }
  if ((kinds & kStateTemporary) && (kinds & kStateHoldable)) route_->ended_holdable_cursors++;
  const bool temp = kinds & kStateTemporary;
  co_await EndSession(
      temp ? route_->ended_temporary_tables : route_->ended_holdable_cursors,
      temp ? EndReason::kTemporaryTables : EndReason::kHoldableCursors,
      prefix + "it still holds " + what + ", which cannot move" + wait + "; reconnect to continue",
      /*before_switch=*/true);
  co_return true;
}

void Session::StateCarried() {
  route_->carried_prepared_statements += static_cast<int64_t>(probe_.prepared.size());
  route_->carried_listen_channels += static_cast<int64_t>(probe_.channels.size());
  route_->carried_advisory_locks += static_cast<int64_t>(probe_.locks.size());
  if (state_kinds_ != 0 && !probe_.empty())
    spdlog::info(
        "pgshift-proxy: {} carried {} prepared statement(s), {} LISTEN channel(s), {} advisory "
        "lock(s)",
        Tag(), probe_.prepared.size(), probe_.channels.size(), probe_.locks.size());
  // What the session holds now is exactly what was carried: the next move
  // looks only if it holds any of it (or runs such statements again).
  if (state_kinds_ != 0) {
    state_kinds_ = (probe_.prepared.empty() ? 0u : kStatePrepared) |
                   (probe_.channels.empty() ? 0u : kStateListen) |
                   (probe_.locks.empty() ? 0u : kStateAdvisory);
  }
  LeaveUncarriable();  // it moved: it held none of it
  if (gate_id_ != 0) {
    if (probe_.locks.empty())
      LeaveCarryGate();
    else
      route_->carry_gate.Update(gate_id_, generation_);
  }
  probe_ = CarriedState{};
}

bool Session::CarriersAhead() const {
  if (gate_id_ != 0) return false;  // holders move together; none waits for another
  uint64_t g = route_->generation();
  return g != gate_passed_generation_ && route_->carry_gate.Behind(g);
}

asio::awaitable<void> Session::WaitForCarriers() {
  uint64_t g = route_->generation();
  const int bound = static_cast<int>(route_->hold_timeout_ms());
  int waited = 0;
  while (!closed_ && route_->carry_gate.Behind(g) && waited < bound) {
    co_await Sleep(kGatePollMs);
    waited += kGatePollMs;
  }
  if (waited >= bound) {
    spdlog::warn(
        "pgshift-proxy: {}: sessions holding advisory locks did not move within {} ms; going on",
        Tag(), bound);
    gate_passed_generation_ = g;
  }
}

asio::awaitable<void> Session::WatchForSwitch() {
  auto timer = watch_timer_;
  while (!closed_ && state_kinds_ != 0) {
    timer->expires_after(std::chrono::milliseconds(kWatchMs));
    co_await timer->async_wait(kNoThrow);
    if (closed_) break;
    if (route_->held()) {
      // Under uncarriable: wait: what the session holds, looked at again at
      // each boundary it reaches; asked to end by the hold, it ends here.
      if (uncarriable_id_ != 0) LeaveSplice();  // the hold takes it back anyway
      if (end_kept_ && state_ == SessionState::kIdle && AtBoundary()) {
        if (co_await EndKept()) {
          Close();
          break;
        }
        end_kept_ = false;
      }
      if (ProbeInHoldDue()) co_await ProbeInHold();
      continue;
    }
    end_kept_ = false;  // the hold ended before the session reached a boundary
    if (route_->generation() == generation_) continue;
    LeaveSplice();  // only now: it would keep an idle session out of kernel mode
    if (state_ != SessionState::kIdle) continue;
    eager_move_ = true;
    Advance(SessionEvent::kMigrateBegin);
    bool ok = co_await Migrate();
    eager_move_ = false;
    if (!ok || closed_) {
      Close();
      break;
    }
    Advance(SessionEvent::kMigrateDone);
  }
  route_->RemoveWaiter(watch_waiter_id_);
  watching_ = false;
}

}  // namespace pgshift::proxy
