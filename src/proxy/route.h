// Runtime route table of pgshift-proxy: where each route points, whether it
// is held, and its counters.
//
// Thread-safe: session threads read targets and bump counters; the admin
// thread repoints, holds and releases. The hold protocol relies on
// sequentially consistent atomics: a session marks itself in a transaction
// before it checks `held`, and Hold sets `held` before it counts sessions in
// a transaction, so one of the two always sees the other.
//
// A drained hold has a lease: its holder (pgshiftd) renews it, and past the
// lease without a renewal ExpireLease releases it on its own, so clients do
// not wait for a controller that died inside the hold. Each hold has an
// epoch that renew, release and switch name, so a controller whose hold
// lapsed learns it instead of acting on a hold that is no longer its own.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "proxy/config.h"
#include "proxy/session_carry.h"
#include "proxy/stats.h"
#include "proxy/switch_log.h"

namespace pgshift::proxy {

// Callbacks that sessions register with their route. Snapshot copies them so
// the caller runs them outside the lock; ForEach runs `f` under it.
// Thread-safe.
template <typename T>
class Registry {
 public:
  uint64_t Add(T v) {
    std::lock_guard<std::mutex> l(mu_);
    uint64_t id = next_++;
    items_.emplace(id, std::move(v));
    return id;
  }
  bool Remove(uint64_t id) {
    std::lock_guard<std::mutex> l(mu_);
    return items_.erase(id) > 0;
  }
  std::vector<T> Snapshot() const {
    std::lock_guard<std::mutex> l(mu_);
    std::vector<T> out;
    for (const auto& [id, v] : items_) out.push_back(v);
    return out;
  }
  template <typename F>
  void ForEach(F f) const {
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& [id, v] : items_) f(v);
  }

 private:
  mutable std::mutex mu_;
  uint64_t next_ = 1;
  std::map<uint64_t, T> items_;
};

// A replication connection (replication=database) as the admin API lists it.
struct ReplicationSessionInfo {
  // The server session's pid from its BackendKeyData: the walsender, which
  // pg_replication_slots.active_pid shows while it streams a slot.
  uint32_t backend_pid = 0;
  UpstreamConfig server;
  std::string database, user, application_name;
  std::string client_addr;  // "ip:port" of the client's connection to the proxy
  bool streaming = false;   // in CopyBoth
  std::string slot;         // while "START_REPLICATION SLOT <slot> LOGICAL" runs, else ""
};
nlohmann::json ToJson(const ReplicationSessionInfo& r);

// Counts down when the last copy goes: a session keeps its copy until it has
// done what the admin thread waits for (or is gone).
class Countdown {
 public:
  explicit Countdown(std::shared_ptr<std::atomic<int64_t>> left) : left_(std::move(left)) {}
  ~Countdown() { (*left_)--; }
  Countdown(const Countdown&) = delete;
  Countdown& operator=(const Countdown&) = delete;

 private:
  std::shared_ptr<std::atomic<int64_t>> left_;
};

class Route {
 public:
  // `now_ms` is the clock of the hold's lease (monotonic ms); tests pass their own.
  explicit Route(RouteConfig cfg, std::function<int64_t()> now_ms = MonotonicMs);

  const std::string& name() const { return cfg_.name; }
  const std::string& database() const { return cfg_.database; }
  bool allow_plaintext() const { return cfg_.allow_plaintext; }
  int64_t hold_timeout_ms() const { return cfg_.hold_timeout_ms; }
  UncarriableMode uncarriable() const { return cfg_.uncarriable; }

  struct Target {
    UpstreamConfig upstream;
    uint64_t generation = 0;  // bumped by every repoint that changes the upstream
  };
  Target target() const;
  uint64_t generation() const { return generation_.load(); }
  // Returns true when the upstream changed.
  bool Repoint(const UpstreamConfig& upstream);
  RouteConfig config() const;  // with the current upstream

  bool held() const { return held_.load(); }
  // Sets the hold, then waits until no session of the route is inside a
  // transaction. Past `timeout_ms` the hold is released and Timeout says how
  // many sessions were still in a transaction. Blocks the calling thread.
  // Returns the hold's epoch, which no other hold of this proxy (nor of an
  // earlier run of it: epochs start at the wall clock in microseconds) had.
  // Holding a held route joins that hold: its epoch, its lease renewed and
  // set to `lease_ms`. Once drained the hold lasts `lease_ms` after its last
  // renewal. Aborted when the hold ended (a release) while it drained.
  // Under uncarriable: wait it also waits for the sessions that hold state a
  // move cannot carry (AddUncarriable) and, kUncarriableEndGraceMs before its
  // deadline (at most a fifth of timeout_ms), asks those left to end.
  Result<uint64_t> HoldLeased(int64_t timeout_ms, int64_t lease_ms);
  Status Hold(int64_t timeout_ms) { return HoldLeased(timeout_ms, kDefaultHoldLeaseMs).status(); }
  // Extends hold `epoch` by its lease from now. FailedPrecondition saying
  // what became of it (released, lapsed, timed out, unknown to this proxy:
  // it may have restarted) when it is not the route's hold now.
  Status Renew(uint64_t epoch);
  // Ends whichever hold is in place (none: nothing happens).
  void Release();
  // Ends hold `epoch`. OK when it was in place or nothing is held (a
  // release is idempotent); FailedPrecondition when another hold is.
  Status ReleaseHold(uint64_t epoch);
  // The repoint of a switch: only while hold `epoch` is in place, checked
  // under the same lock as the repoint, so a lease that lapses concurrently
  // either comes first (the switch fails, nothing moved) or after (it then
  // releases onto the new upstream, which is what the switch was for).
  // Returns whether the upstream changed.
  Result<bool> RepointHeld(uint64_t epoch, const UpstreamConfig& upstream);
  // A hold ExpireLease released.
  struct LapsedHold {
    uint64_t epoch = 0;
    int64_t lease_ms = 0;
    UpstreamConfig released_to;
  };
  // Releases the hold if it drained and its lease ran out (the route's
  // clock is past its last renewal + lease); says what it released.
  std::optional<LapsedHold> ExpireLease();
  // The epoch of the hold in place, 0 when none.
  uint64_t hold_epoch() const;
  // True while a hold is in place that has drained (Hold returned OK, no
  // Release since): every session of the route is at a boundary and stays
  // there until the release.
  bool drained() const;
  // For a fence that leaves the backends of held sessions alive: when the
  // drained hold ends, the generation moves even without a repoint, so every
  // session logs in again before its next transaction and a backend left
  // alive never runs another client statement (not even after a release
  // that nobody followed with a repoint). False, and no pin, when the route
  // has no drained hold.
  bool PinBackends();

  // The upstream pool's flush of this route's parked backends
  // (upstream_pool.h): HoldLeased calls it once the route is held, Repoint
  // and RepointHeld once the generation moved, so no parked backend outlives
  // a hold or serves a client after a switch. Set before sessions use the route.
  void SetParkedFlush(std::function<void()> flush) { flush_parked_ = std::move(flush); }

  // Sessions holding (or that may hold: not probed yet) temporary tables or
  // WITH HOLD cursors, counted in uncarriable_sessions. `end` asks one to end
  // (posted to its thread): under uncarriable: wait a hold calls it for
  // those left near its deadline; the session ends at its next boundary.
  uint64_t AddUncarriable(std::function<void()> end);
  void RemoveUncarriable(uint64_t id);

  // The route's switch reports (switch_log.h); Repoint and RepointHeld begin one.
  SwitchLog switches;

  // Wakers of sessions waiting at a boundary, called on Release.
  uint64_t AddWaiter(std::function<void()> wake);
  void RemoveWaiter(uint64_t id);

  // Sessions whose bytes the kernel forwards now (splice/): they sit between
  // transactions as far as the counters know, but may start one at any time
  // without the proxy seeing it. A hold and a repoint therefore take them all
  // back to user space (take_back is posted to the session's thread) and a
  // hold waits until none is left. A session registers first and then checks
  // held() and generation() (the reverse of Hold and Repoint), so one of the
  // two always sees the other. `peek` reads the counters the kernel keeps for
  // it, for the stats: one field per LIVE row of stats.h.
  struct SpliceLive {
    int64_t bytes_from_clients = 0, bytes_to_clients = 0, transactions = 0;
    // kTxnLatency (stats.h): what the kernel timed and has not handed back yet.
    std::array<int64_t, kLatencyBuckets> latency{};
    int64_t latency_sum_us = 0;
  };
  struct Spliced {
    std::function<void()> take_back;
    std::function<SpliceLive()> peek;
  };
  uint64_t AddSpliced(Spliced s);
  void RemoveSpliced(uint64_t id);
  void TakeBackSpliced();

  // Every logged-in session of the route, for Prewarm: asks each to open a
  // login to `to` now (its startup parameters and settings), to be taken at
  // its next move there instead of logging in then. Inside a cutover's hold
  // `to` is the standby about to be promoted: sessions opened during recovery
  // carry on as read-write sessions after it. Returns how many were asked.
  // Each member's login ends with PrewarmDone(), whether it opened or not.
  uint64_t AddMember(std::function<void(const UpstreamConfig&)> prewarm);
  void RemoveMember(uint64_t id);
  int Prewarm(const UpstreamConfig& to);
  void PrewarmDone() { prewarms_pending--; }
  // Waits (sleeping, on the caller's thread) until no login asked by Prewarm
  // is still being opened, or timeout_ms passed; returns how many still are.
  int64_t WaitPrewarmed(int64_t timeout_ms) const;

  // Replication sessions of the route (registered once logged in). describe
  // is thread-safe; request_feedback and pause post to the session's thread.
  // pause ends the session at its next message boundary and drops `done`
  // once its server connection is closed.
  struct ReplicationMember {
    std::function<ReplicationSessionInfo()> describe;
    std::function<void()> request_feedback;
    std::function<void(std::shared_ptr<Countdown> done)> pause;
  };
  uint64_t AddReplication(ReplicationMember m);
  void RemoveReplication(uint64_t id);
  std::vector<ReplicationSessionInfo> ReplicationSessions() const;
  // Asks every streaming session to inject a keepalive that requests a reply
  // (the client answers with its flushed position); returns how many.
  int RequestReplicationFeedback();
  // Asks every replication session to end (see Session); waits, sleeping on
  // the caller's thread, up to timeout_ms until each has closed its server
  // connection.
  struct PauseOutcome {
    int asked = 0;
    int64_t pending = 0;  // asked but not closed yet when the wait ended
  };
  PauseOutcome PauseReplication(int64_t timeout_ms);

  // The route's rows of stats.h (PGSHIFT_PROXY_STATS): one atomic per ROUTE
  // and LIVE row, named like the row.
  PGSHIFT_PROXY_STATS(PGSHIFT_STAT_ATOMIC, PGSHIFT_STAT_ATOMIC, PGSHIFT_STAT_NONE,
                      PGSHIFT_STAT_NONE)
  // The DERIVED rows.
  int64_t route_held() const { return held() ? 1 : 0; }
  // stats.h's kTxnLatency.
  LatencyCounter txn_latency;

  // Sessions that may hold session advisory locks (session_carry.h).
  CarryGate carry_gate;

  // The LIVE counters and txn_latency plus what spliced sessions did that the
  // kernel has not handed back yet.
  SpliceLive LiveTotals() const;
  // Every route row of stats.h, as exported (the other rows are 0).
  StatValues Stats() const;
  nlohmann::json StatsJson() const;
  // {"name","database","upstream","held","hold","ended_holds","stats",...}:
  // "hold" describes the hold in place (null when none), "ended_holds" the
  // last few that ended and how.
  nlohmann::json ToJson() const;

 private:
  // How a hold ended, for a holder that asks about it afterwards.
  enum class HoldEnd { kReleased, kLapsed, kTimedOut };
  struct EndedHold {
    uint64_t epoch = 0;
    HoldEnd how = HoldEnd::kReleased;
    int64_t at_ms = 0;  // the route's clock
    int64_t lease_ms = 0;
    UpstreamConfig released_to;
  };
  // Under mu_: ends the hold in place, if any, remembering how. The caller
  // wakes the waiters once the lock is dropped.
  void EndHoldLocked(HoldEnd how);
  void WakeWaiters();
  // Under mu_: why `epoch` is not the hold in place.
  Status NotHeldLocked(uint64_t epoch, const std::string& action) const;

  RouteConfig cfg_;
  std::function<int64_t()> now_ms_;
  mutable std::mutex mu_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> held_{false};
  bool drained_ = false;  // guarded by mu_
  bool pinned_ = false;   // guarded by mu_
  // Guarded by mu_: the hold in place repointed the route (its report began).
  bool switched_in_hold_ = false;
  uint64_t releases_ = 0;  // guarded by mu_; tells Hold that its hold ended meanwhile
  uint64_t epoch_ = 0;     // guarded by mu_; the hold in place (0: none)
  int64_t lease_ms_ = 0;   // guarded by mu_
  // Guarded by mu_: when the drained hold lapses (route clock); 0 while it drains.
  int64_t lease_until_ms_ = 0;
  std::deque<EndedHold> ended_;  // guarded by mu_; the latest last
  Registry<std::function<void()>> waiters_;
  Registry<Spliced> spliced_;
  Registry<std::function<void(const UpstreamConfig&)>> members_;
  Registry<ReplicationMember> replication_;
  Registry<std::function<void()>> uncarriable_;
  std::function<void()> flush_parked_;
  void FlushParked() {
    if (flush_parked_) flush_parked_();
  }
};

// The rows of `scope` in `v` as a JSON object keyed by the rows' names.
nlohmann::json StatsJson(const StatValues& v, StatScope scope);

class RouteTable {
 public:
  void Add(std::shared_ptr<Route> r);
  std::shared_ptr<Route> Find(const std::string& name) const;
  std::shared_ptr<Route> FindByDatabase(const std::string& database) const;
  std::vector<std::shared_ptr<Route>> List() const;

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<Route>> routes_;
};

}  // namespace pgshift::proxy
