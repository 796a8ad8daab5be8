// One client session of pgshift-proxy: TLS and policy checks, the upstream
// login, then two coroutines that forward bytes (client → server and
// server → client) while tracking the transaction state, named prepared
// statements and session settings, so the session can be held at a
// transaction boundary and moved to another endpoint.
//
// A session lives on one io_context thread; all its members are touched only
// from that thread (no locks). Shared state goes through ProxyShared.
#pragma once

#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "proxy/protocol.h"
#include "proxy/session_carry.h"
#include "proxy/session_state.h"
#include "proxy/shared.h"
#include "proxy/upstream.h"

namespace pgshift::proxy {

// What the admin API sees of a replication session besides its server (which
// the cancel target tracks): written on the session's thread, read by the
// admin thread under `mu`.
struct ReplicationView {
  std::mutex mu;
  ReplicationSessionInfo info;
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket client, ProxyShared& shared);
  ~Session();
  asio::awaitable<void> Run();

 private:
  asio::awaitable<bool> Startup();
  asio::awaitable<bool> CheckIdentity(const std::string& user, const std::string& database);
  asio::awaitable<void> HandleCancel(const StartupPacket& p);
  asio::awaitable<void> Refuse(std::string_view sqlstate, const std::string& message);
  // Counts a client TLS handshake and logs the path the session takes.
  void NoteTlsSession(const TlsConn& tls);
  asio::awaitable<void> ClientPump();
  asio::awaitable<void> ServerPump(std::shared_ptr<ServerConn> sc);
  // Before the first message of a new transaction: hold, move. False: close.
  asio::awaitable<bool> EnterTransaction();
  // Its fast path without a coroutine: true when the session may go on now
  // (then it is active); false leaves it idle for EnterTransaction.
  bool BeginTransactionNow();
  asio::awaitable<bool> Migrate();
  // Opens a login to `to` for the next move there (Route::Prewarm).
  asio::awaitable<void> Prewarm(UpstreamConfig to);
  // The pre-opened login for `to` when it is still good, else null (and closed).
  std::shared_ptr<ServerConn> TakePrewarmed(const UpstreamConfig& to);
  asio::awaitable<void> WaitWake(int ms);
  // Until the route's hold is released (or the session closes).
  asio::awaitable<void> WaitForRelease();
  asio::awaitable<bool> FlushClient();
  asio::awaitable<bool> FlushServer();

  // Client message handlers; append to the upstream outbox. False: protocol error.
  bool OnClientMessage(const Message& m);
  // Server message handler: true when the message goes on to the client.
  bool OnServerMessage(const Message& m);
  void OnReadyForQuery(char status);
  // What a move carries beyond settings (session_carry_state.cc; session_carry.h).
  // NoteStateKeywords: a query text the client sends; marks the session for a
  // probe at its next move, and registers one that may take advisory locks.
  void NoteStateKeywords(std::string_view sql);
  void StartProbe();
  void OnProbeMessage(const Message& m);
  // In Migrate, before the new login: reads what the session holds (only a
  // marked session) and ends the session when that cannot move. False: ended.
  asio::awaitable<bool> ProbeState(const std::string& dest);
  // On the new login: re-creates what the probe found. False: ended.
  asio::awaitable<bool> CarryState(ServerConn& c, const std::string& dest);
  // After the swap: counts what moved, keeps the marks for what the session still holds.
  void StateCarried();
  // Ends the session with a FATAL naming why it cannot go on; bumps `counter`
  // and the report of the switch it was moving to (switch_log.h).
  // `before_switch`: a hold ends it before its switch (EndKept).
  asio::awaitable<void> EndSession(std::atomic<int64_t>& counter, EndReason why,
                                   const std::string& message, bool before_switch = false);
  // A move that cannot log in on the new server: counted, then Refuse.
  asio::awaitable<void> MoveFailed(const std::string& message);
  // State a move cannot carry (temporary tables, WITH HOLD cursors) under
  // uncarriable: wait. NoteUncarriable registers a session whose statements
  // may have created it (Route::AddUncarriable); while the route is held
  // such a session goes on on its server (KeptOnSource), is probed at each
  // boundary it reaches (ProbeInHold) and leaves the set once it holds none
  // (LeaveUncarriable); asked to end near the hold's deadline, it ends at its
  // next boundary (EndKept).
  void NoteUncarriable();
  bool KeptOnSource() const;
  bool ProbeInHoldDue() const;
  asio::awaitable<void> ProbeInHold();
  // True when the session was ended (or is being ended); false when a last
  // probe found it holds none of that state any more.
  asio::awaitable<bool> EndKept();
  void LeaveUncarriable();
  // True when a lost server connection costs the session nothing the proxy
  // does not restore: the proxy is moving it anyway (a hold or a repoint) and
  // it holds no state but what a move carries without its old server.
  bool MoveCoversLoss() const;
  // The advisory-lock gate (CarryGate): whether this session must wait for
  // lock holders to move first, and the wait.
  bool CarriersAhead() const;
  asio::awaitable<void> WaitForCarriers();
  void LeaveCarryGate();
  // While the session holds state: its move right after a switch, without
  // waiting for its client.
  asio::awaitable<void> WatchForSwitch();
  void RememberForWarmUp(std::string_view text);
  void StartCapture();
  // Kernel splice (session_splice.cc). CanSplice: at a boundary with nothing
  // buffered or owed anywhere; EnterSplice hands the sockets to the kernel;
  // LeaveSplice takes them back and accounts for what the kernel forwarded
  // (first thing on any wake-up, and when a hold or repoint asks);
  // DetachSplice frees the slot (close, move).
  bool CanSplice() const;
  void EnterSplice();
  void LeaveSplice();
  void DetachSplice();
  // While spliced: notices a peer that closed (no segment tells the verdict).
  asio::awaitable<void> SpliceSweep(uint64_t round);
  // Replication sessions (session_replication.cc). Anything the proxy adds
  // to the server → client stream goes in only between whole messages:
  // s2c_open_ says a server message is partly forwarded, and then the
  // ServerPump adds it once that message is complete.
  void RegisterReplication();
  void SetReplicationStreaming(bool streaming);
  void SetReplicationSlot(std::string slot);
  std::string ReplicationSlot() const;
  // A replication command from the client (Query text), and its end (ReadyForQuery).
  void OnReplicationQuery(std::string_view sql);
  void OnReplicationCommandDone();
  void OnFeedbackRequest();
  void OnPauseRequest(std::shared_ptr<Countdown> done);
  bool CanInjectKeepalive() const;
  std::string TakeKeepalive();  // counts it as a feedback request
  // At a boundary: closes the server connection (the walsender exits), sends
  // the client a FATAL 57P01 that says to reconnect, and closes once that is
  // written (Close waits for it).
  void EndReplicationStream();
  asio::awaitable<void> DeliverEnd();  // until client_out_ is written out (or failed)
  void FlushClientSoon();              // from a handler that is not a coroutine
  // The upstream pool (session_pool.cc). CanPark: the client is leaving
  // (Terminate) with its backend idle at a transaction boundary, on the
  // route's current upstream, and nothing of the proxy's is in flight on it.
  // ReleaseServer, from Close: hands such a backend to ResetAndPark (else it
  // closes). TakePooled: a parked backend for this session's login, or null.
  bool CanPark() const;
  // At the client's Terminate: lets a capture or probe of the proxy's own
  // (after a SET, say) finish first, briefly, so its backend can be parked.
  asio::awaitable<void> SettleForPark();
  void ReleaseServer();
  std::shared_ptr<ServerConn> TakePooled(const Route::Target& target);
  PoolKey PoolKeyFor(const UpstreamConfig& upstream, uint64_t generation) const;
  void Advance(SessionEvent e);
  // At the boundary that ends a transaction: its latency and failure.
  void CountTransaction();
  void Close();
  bool AtBoundary() const { return pending_ == 0 && !batch_open_ && txn_status_ == 'I'; }
  std::string Tag() const;

  ProxyShared& shared_;
  Stream client_;
  Outbox client_out_;
  SessionState state_ = SessionState::kStartup;
  bool closed_ = false;
  std::shared_ptr<Route> route_;
  std::vector<std::pair<std::string, std::string>> startup_params_;
  std::string user_, database_, identity_;
  std::optional<Credential> credential_;
  bool replication_ = false;

  std::shared_ptr<ServerConn> server_;
  bool park_ = false;             // the client left cleanly: the backend goes to the pool
  bool server_released_ = false;  // ReleaseServer ran
  uint64_t generation_ = 0;
  bool server_lost_ = false;

  // Transaction tracking.
  char txn_status_ = 'I';
  int64_t pending_ = 0;      // Query/Sync/FunctionCall sent, ReadyForQuery not yet seen
  bool batch_open_ = false;  // extended-protocol messages sent since the last Sync
  uint64_t syncs_sent_ = 0;  // sync points sent upstream (ours included)
  // The transaction in flight, for the route's latency and failure counts:
  // when its first client message arrived (steady clock, µs; 0: none yet,
  // kUntimedTxn: the kernel splice began it unseen), and whether it saw an
  // ErrorResponse.
  static constexpr int64_t kUntimedTxn = -1;
  int64_t txn_start_us_ = 0;
  bool txn_failed_ = false;
  uint64_t rfq_seen_ = 0;
  struct ParseExpect {
    uint64_t sync_index;
    bool injected;  // ours: swallow its ParseComplete
  };
  std::deque<ParseExpect> parse_expect_;
  std::unordered_map<std::string, std::string> statements_;  // name → raw Parse message
  std::unordered_set<std::string> prepared_upstream_;        // prepared on the current server

  // Session settings: captured from the server at a boundary after the client changed any.
  bool settings_dirty_ = false;
  bool capture_inflight_ = false;
  bool capture_failed_ = false;
  std::vector<std::pair<std::string, std::string>> settings_;
  std::vector<std::pair<std::string, std::string>> capture_rows_;

  // Session state beyond settings (session_carry.h): the kinds the client's
  // statements may have created since a probe last found none of them, the
  // probe on the old server, and the session's place in the route's CarryGate.
  uint32_t state_kinds_ = 0;
  bool probe_inflight_ = false;
  bool probe_failed_ = false;
  CarriedState probe_;
  uint64_t gate_id_ = 0;
  uint64_t gate_passed_generation_ = 0;  // waited the full bound for this generation
  // WatchForSwitch runs while the session holds such state; a release wakes it.
  bool watching_ = false;
  uint64_t watch_waiter_id_ = 0;
  std::shared_ptr<asio::steady_timer> watch_timer_;
  bool eager_move_ = false;  // WatchForSwitch is moving the session: the client pump waits
  // Under uncarriable: wait (NoteUncarriable): the session's place in the
  // route's set, whether a hold asked it to end, whether a probe in the hold
  // found such state (and what, for the FATAL), and the sync points sent when
  // that probe looked (only a session that ran something since looks again).
  uint64_t uncarriable_id_ = 0;
  bool end_kept_ = false;
  bool kept_ending_ = false;  // EndKept is ending it
  uint32_t kept_kinds_ = 0;   // kStateTemporary | kStateHoldable as the probe found them
  std::string kept_why_;
  uint64_t probed_at_syncs_ = 0;
  bool server_ended_ = false;  // the server ended the session: its error went to the client

  // Kernel splice: the slot (-1: none), whether the kernel forwards now, the
  // route registration, and the bytes each socket had queued at the start.
  int splice_slot_ = -1;
  bool spliced_ = false;
  bool splice_off_ = false;  // attaching failed once: this session stays in user space
  bool closing_ = false;     // Close is under way: parked sockets are closed, not unparked
  uint64_t splice_id_ = 0;
  uint64_t splice_round_ = 0;  // entries into kernel mode, for the sweep
  uint64_t splice_base_client_ = 0, splice_base_server_ = 0;
  std::string client_in_;  // client bytes read, not yet a whole message

  // A login opened ahead of a move (Route::Prewarm), on prewarm_to_, with the
  // settings it was given.
  uint64_t member_id_ = 0;
  std::shared_ptr<ServerConn> prewarmed_;
  UpstreamConfig prewarm_to_;
  std::vector<std::pair<std::string, std::string>> prewarm_settings_;
  bool prewarm_inflight_ = false;
  // The first distinct statement texts the proxy saw (kernel mode forwards
  // the rest unseen): a login opened ahead parses them, to warm its caches.
  std::vector<std::string> warm_texts_;

  // Replication (session_replication.cc).
  uint64_t replication_id_ = 0;
  std::shared_ptr<ReplicationView> replication_view_;
  bool copy_out_open_ = false;  // the server's side of CopyBoth: 'W' seen, no 'c' / 'E' / 'Z' yet
  bool s2c_open_ = false;       // a server message is partly forwarded to the client
  bool feedback_pending_ = false;
  bool pause_pending_ = false;
  bool stream_ending_ = false;  // EndReplicationStream ran: the pumps forward nothing more
  bool end_delivered_ = false;  // ... its ErrorResponse is written (or given up): Close may go on
  std::shared_ptr<Countdown> pause_done_;

  std::shared_ptr<CancelTarget> cancel_target_;
  uint32_t cancel_pid_ = 0, cancel_key_ = 0;
  std::shared_ptr<asio::steady_timer> wake_;
};

}  // namespace pgshift::proxy
