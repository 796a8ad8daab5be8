#include "proxy/route.h"

#include <algorithm>
#include <chrono>
#include <thread>

namespace pgshift::proxy {
namespace {

// How often a waiting Hold or WaitPrewarmed (admin thread) looks at the
// counters: a drained hold returns within this, inside the cutover's pause.
constexpr std::chrono::milliseconds kDrainPollInterval{2};
// How many ended holds a route remembers, for holders that ask about theirs.
constexpr size_t kEndedHoldsKept = 16;
// Under uncarriable: wait, sessions still holding what cannot move are asked
// to end this long before the hold's deadline (at most a fifth of the hold's
// bound), so that their ends land inside it.
constexpr int64_t kUncarriableEndGraceMs = 1000;

// Epochs of every route of this process; the first is the wall clock in
// microseconds, so a proxy that restarts does not hand out an epoch that a
// controller still holds from its previous run.
uint64_t NextHoldEpoch() {
  static std::atomic<uint64_t> next{
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count())};
  return next++;
}

std::string Where(const UpstreamConfig& u) { return u.host + ":" + std::to_string(u.port); }

}  // namespace

Route::Route(RouteConfig cfg, std::function<int64_t()> now_ms)
    : cfg_(std::move(cfg)), now_ms_(std::move(now_ms)) {}

Route::Target Route::target() const {
  std::lock_guard<std::mutex> l(mu_);
  return {cfg_.upstream, generation_.load()};
}

bool Route::Repoint(const UpstreamConfig& upstream) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (cfg_.upstream == upstream) return false;
    switches.Began(generation_ + 1, epoch_, cfg_.upstream, upstream);
    switched_in_hold_ = held_.load();
    cfg_.upstream = upstream;
    generation_++;
  }
  // A spliced session would not see the new generation before its next
  // transaction: the kernel would carry that one to the old server.
  TakeBackSpliced();
  FlushParked();
  return true;
}

RouteConfig Route::config() const {
  std::lock_guard<std::mutex> l(mu_);
  return cfg_;
}

Result<uint64_t> Route::HoldLeased(int64_t timeout_ms, int64_t lease_ms) {
  uint64_t releases, epoch;
  {
    std::lock_guard<std::mutex> l(mu_);
    releases = releases_;
    if (!held_.load()) epoch_ = NextHoldEpoch();
    epoch = epoch_;
    lease_ms_ = lease_ms;
    if (drained_) lease_until_ms_ = now_ms_() + lease_ms;  // joined: renewed
    held_.store(true);
  }
  TakeBackSpliced();
  FlushParked();
  const bool wait_uncarriable = cfg_.uncarriable == UncarriableMode::kWait;
  // Sessions that may hold what cannot move look now (session_carry_state.cc)
  // rather than at their next tick.
  if (wait_uncarriable && uncarriable_sessions.load() > 0) WakeWaiters();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  const auto end_uncarriable_at =
      deadline - std::chrono::milliseconds(std::min(kUncarriableEndGraceMs, timeout_ms / 5));
  bool asked_to_end = false;
  while (true) {
    // Spliced first: a session taken back inside a transaction counts itself
    // in `in_transaction` before it leaves `spliced_sessions`.
    int64_t spliced = spliced_sessions.load();
    int64_t open = in_transaction.load() + spliced +
                   (wait_uncarriable ? uncarriable_sessions.load() : int64_t{0});
    if (wait_uncarriable && !asked_to_end && uncarriable_sessions.load() > 0 &&
        std::chrono::steady_clock::now() >= end_uncarriable_at) {
      asked_to_end = true;
      for (auto& end : uncarriable_.Snapshot()) end();
    }
    if (open <= 0) {
      std::lock_guard<std::mutex> l(mu_);
      if (releases_ != releases) {
        return Aborted("hold " + std::to_string(epoch) + " on route \"" + name() +
                       "\" was released while it drained");
      }
      // The lease runs from here: while it drains, timeout_ms bounds the hold.
      if (!drained_) lease_until_ms_ = now_ms_() + lease_ms_;
      drained_ = true;
      return epoch;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      {
        std::lock_guard<std::mutex> l(mu_);
        if (epoch_ == epoch) EndHoldLocked(HoldEnd::kTimedOut);
      }
      WakeWaiters();
      const int64_t kept = wait_uncarriable ? uncarriable_sessions.load() : 0;
      return Timeout("hold on route \"" + name() + "\" released after " +
                     std::to_string(timeout_ms) + " ms: " + std::to_string(open - kept) +
                     " session(s) still in a transaction" +
                     (kept > 0 ? ", " + std::to_string(kept) +
                                     " still holding temporary tables or WITH HOLD cursors"
                               : "") +
                     "; traffic continues on " + Where(target().upstream));
    }
    std::this_thread::sleep_for(kDrainPollInterval);
  }
}

void Route::EndHoldLocked(HoldEnd how) {
  // The generation moves before the hold ends: a session that sees the
  // route unheld also sees the new generation (both sequentially consistent).
  if (pinned_) generation_++;
  pinned_ = false;
  if (held_.load() && !switched_in_hold_) switches.HoldEndedWithoutSwitch();
  switched_in_hold_ = false;
  drained_ = false;
  releases_++;
  if (held_.load()) {
    ended_.push_back({.epoch = epoch_,
                      .how = how,
                      .at_ms = now_ms_(),
                      .lease_ms = lease_ms_,
                      .released_to = cfg_.upstream});
    if (ended_.size() > kEndedHoldsKept) ended_.pop_front();
  }
  epoch_ = 0;
  lease_until_ms_ = 0;
  held_.store(false);
}

void Route::WakeWaiters() {
  for (auto& fn : waiters_.Snapshot()) fn();
}

void Route::Release() {
  {
    std::lock_guard<std::mutex> l(mu_);
    EndHoldLocked(HoldEnd::kReleased);
  }
  WakeWaiters();
}

Status Route::NotHeldLocked(uint64_t epoch, const std::string& action) const {
  std::string why;
  for (const EndedHold& e : ended_) {
    if (e.epoch != epoch) continue;
    const std::string ago = std::to_string(now_ms_() - e.at_ms) + " ms ago";
    switch (e.how) {
      case HoldEnd::kLapsed:
        why = "it lapsed " + ago + ": its lease of " + std::to_string(e.lease_ms) +
              " ms was not renewed, so the proxy released traffic to " + Where(e.released_to);
        break;
      case HoldEnd::kTimedOut:
        why = "it timed out " + ago + " before it drained";
        break;
      case HoldEnd::kReleased:
        why = "it was released " + ago;
        break;
    }
  }
  if (why.empty()) why = "this proxy does not know it (it may have restarted since)";
  const std::string now = held_.load() ? "; the route is held by hold " + std::to_string(epoch_)
                                       : "; the route is not held";
  return FailedPrecondition("cannot " + action + " hold " + std::to_string(epoch) + " on route \"" +
                            name() + "\": " + why + now);
}

Status Route::Renew(uint64_t epoch) {
  std::lock_guard<std::mutex> l(mu_);
  if (!held_.load() || epoch_ != epoch) return NotHeldLocked(epoch, "renew");
  // While it drains the lease has not started; the renewal counts from the drain.
  if (drained_) lease_until_ms_ = now_ms_() + lease_ms_;
  hold_renewals++;
  return Status::OK();
}

Status Route::ReleaseHold(uint64_t epoch) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!held_.load()) return Status::OK();
    if (epoch_ != epoch) return NotHeldLocked(epoch, "release");
    EndHoldLocked(HoldEnd::kReleased);
  }
  WakeWaiters();
  return Status::OK();
}

Result<bool> Route::RepointHeld(uint64_t epoch, const UpstreamConfig& upstream) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!held_.load() || epoch_ != epoch) return NotHeldLocked(epoch, "switch under");
    if (cfg_.upstream == upstream) return false;
    switches.Began(generation_ + 1, epoch_, cfg_.upstream, upstream);
    switched_in_hold_ = true;
    cfg_.upstream = upstream;
    generation_++;
  }
  TakeBackSpliced();
  FlushParked();
  return true;
}

std::optional<Route::LapsedHold> Route::ExpireLease() {
  LapsedHold lapsed;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!held_.load() || !drained_ || now_ms_() < lease_until_ms_) return std::nullopt;
    // Why releasing to the current upstream is safe here, whatever the
    // holder had done when it stopped renewing:
    //  - Nothing is half-done by the release itself: a drained hold has no
    //    session inside a transaction, and the released sessions start new
    //    ones on whatever the route points at now.
    //  - Before the holder's switch the route still points at the source
    //    (only a switch repoints it, and RepointHeld checks this hold under
    //    this lock). If the source is not fenced yet it is authoritative: the
    //    standby only replays it, so clients carry on there as if the
    //    cutover had not started, and the holder, back, aborts it.
    //  - If the source is already fenced it refuses logins, and the held
    //    sessions' own backends were either pinned (PinBackends: the release
    //    moves the generation) or terminated by the fence, so every session
    //    logs in again and gets the fence's error at once instead of
    //    waiting for a controller that may never come back. No write reaches the fenced source, so
    //    nothing after its final WAL marker is lost; the holder, back, unfences it (aborted
    //    cutover) or rolls back once the target was promoted.
    //  - After RepointHeld the route points at the promoted target, and the
    //    release is the one the switch was about to make.
    lapsed = {.epoch = epoch_, .lease_ms = lease_ms_, .released_to = cfg_.upstream};
    EndHoldLocked(HoldEnd::kLapsed);
    hold_lapses++;
  }
  WakeWaiters();
  return lapsed;
}

uint64_t Route::hold_epoch() const {
  std::lock_guard<std::mutex> l(mu_);
  return epoch_;
}

bool Route::drained() const {
  std::lock_guard<std::mutex> l(mu_);
  return drained_;
}

bool Route::PinBackends() {
  std::lock_guard<std::mutex> l(mu_);
  if (drained_) pinned_ = true;
  return drained_;
}

uint64_t Route::AddUncarriable(std::function<void()> end) {
  uint64_t id = uncarriable_.Add(std::move(end));
  uncarriable_sessions++;
  return id;
}

void Route::RemoveUncarriable(uint64_t id) {
  if (uncarriable_.Remove(id)) uncarriable_sessions--;
}

uint64_t Route::AddWaiter(std::function<void()> wake) { return waiters_.Add(std::move(wake)); }

void Route::RemoveWaiter(uint64_t id) { waiters_.Remove(id); }

Route::SpliceLive Route::LiveTotals() const {
  // What spliced sessions did since they were last taken back is still in the kernel's counters.
  SpliceLive t;
  // Under the registry's lock: a session unregisters before it frees its slot.
  spliced_.ForEach([&t](const Spliced& s) {
    SpliceLive k = s.peek();
#define PGSHIFT_STAT_ADD_KERNEL(name, type, metric, help) t.name += k.name;
    PGSHIFT_PROXY_STATS(PGSHIFT_STAT_NONE, PGSHIFT_STAT_ADD_KERNEL, PGSHIFT_STAT_NONE,
                        PGSHIFT_STAT_NONE)
#undef PGSHIFT_STAT_ADD_KERNEL
    for (size_t b = 0; b < kLatencyBuckets; b++) t.latency[b] += k.latency[b];
    t.latency_sum_us += k.latency_sum_us;
  });
  const auto own = txn_latency.Counts();
  for (size_t b = 0; b < kLatencyBuckets; b++) t.latency[b] += own[b];
  t.latency_sum_us += txn_latency.SumUs();
#define PGSHIFT_STAT_ADD_OWN(name, type, metric, help) t.name += name.load();
  PGSHIFT_PROXY_STATS(PGSHIFT_STAT_NONE, PGSHIFT_STAT_ADD_OWN, PGSHIFT_STAT_NONE, PGSHIFT_STAT_NONE)
#undef PGSHIFT_STAT_ADD_OWN
  return t;
}

StatValues Route::Stats() const {
  StatValues v{};
  const SpliceLive live = LiveTotals();
#define PGSHIFT_STAT_SLOT(name) v[static_cast<size_t>(Stat::name)]
#define PGSHIFT_STAT_OWN(name, type, metric, help) PGSHIFT_STAT_SLOT(name) = name.load();
#define PGSHIFT_STAT_LIVE(name, type, metric, help) PGSHIFT_STAT_SLOT(name) = live.name;
#define PGSHIFT_STAT_DERIVED(name, type, metric, help) PGSHIFT_STAT_SLOT(name) = name();
  PGSHIFT_PROXY_STATS(PGSHIFT_STAT_OWN, PGSHIFT_STAT_LIVE, PGSHIFT_STAT_DERIVED, PGSHIFT_STAT_NONE)
#undef PGSHIFT_STAT_SLOT
#undef PGSHIFT_STAT_OWN
#undef PGSHIFT_STAT_LIVE
#undef PGSHIFT_STAT_DERIVED
  return v;
}

nlohmann::json Route::StatsJson() const {
  nlohmann::json j = proxy::StatsJson(Stats(), StatScope::kRoute);
  nlohmann::json upper = nlohmann::json::array();
  for (int64_t b : kLatencyBoundsUs) upper.push_back(static_cast<double>(b) / 1000.0);
  const SpliceLive live = LiveTotals();
  j[std::string(kTxnLatency.name)] = {
      {"upper_ms", upper}, {"counts", live.latency}, {"sum_us", live.latency_sum_us}};
  return j;
}

nlohmann::json StatsJson(const StatValues& v, StatScope scope) {
  nlohmann::json j = nlohmann::json::object();
  for (size_t i = 0; i < kStatCount; i++)
    if (kStats[i].scope == scope) j[std::string(kStats[i].name)] = v[i];
  return j;
}

nlohmann::json Route::ToJson() const {
  RouteConfig c;
  nlohmann::json hold = nullptr;
  nlohmann::json ended = nlohmann::json::array();
  {
    std::lock_guard<std::mutex> l(mu_);
    c = cfg_;
    if (held_.load()) {
      hold = {{"epoch", epoch_},
              {"lease_ms", lease_ms_},
              {"drained", drained_},
              // Until it drains the lease has not started.
              {"lease_left_ms",
               drained_ ? std::max<int64_t>(lease_until_ms_ - now_ms_(), 0) : lease_ms_}};
    }
    static constexpr const char* kHow[] = {"released", "lapsed", "timed_out"};
    for (const EndedHold& e : ended_) {
      ended.push_back({{"epoch", e.epoch},
                       {"how", kHow[static_cast<int>(e.how)]},
                       {"ms_ago", now_ms_() - e.at_ms},
                       {"released_to", proxy::ToJson(e.released_to)}});
    }
  }
  return {{"name", c.name},
          {"database", c.database},
          {"upstream", proxy::ToJson(c.upstream)},
          {"held", held()},
          {"hold", hold},
          {"ended_holds", ended},
          {"allow_plaintext", c.allow_plaintext},
          {"hold_timeout_ms", c.hold_timeout_ms},
          {"uncarriable", UncarriableModeName(c.uncarriable)},
          {"last_switch", switches.LastJson()},
          {"stats", StatsJson()}};
}

uint64_t Route::AddSpliced(Spliced s) {
  uint64_t id = spliced_.Add(std::move(s));
  spliced_sessions++;
  splices++;
  return id;
}

void Route::RemoveSpliced(uint64_t id) {
  if (spliced_.Remove(id)) spliced_sessions--;
}

void Route::TakeBackSpliced() {
  for (auto& s : spliced_.Snapshot()) s.take_back();
}

uint64_t Route::AddMember(std::function<void(const UpstreamConfig&)> prewarm) {
  return members_.Add(std::move(prewarm));
}

void Route::RemoveMember(uint64_t id) { members_.Remove(id); }

int Route::Prewarm(const UpstreamConfig& to) {
  auto calls = members_.Snapshot();
  prewarms_pending += static_cast<int64_t>(calls.size());
  for (auto& fn : calls) fn(to);
  return static_cast<int>(calls.size());
}

int64_t Route::WaitPrewarmed(int64_t timeout_ms) const {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (prewarms_pending.load() > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(kDrainPollInterval);
  return std::max<int64_t>(prewarms_pending.load(), 0);
}

uint64_t Route::AddReplication(ReplicationMember m) {
  uint64_t id = replication_.Add(std::move(m));
  replication_sessions++;
  return id;
}

void Route::RemoveReplication(uint64_t id) {
  if (replication_.Remove(id)) replication_sessions--;
}

std::vector<ReplicationSessionInfo> Route::ReplicationSessions() const {
  std::vector<ReplicationSessionInfo> out;
  for (const auto& m : replication_.Snapshot()) out.push_back(m.describe());
  return out;
}

int Route::RequestReplicationFeedback() {
  int asked = 0;
  for (const auto& m : replication_.Snapshot()) {
    if (!m.describe().streaming) continue;
    m.request_feedback();
    asked++;
  }
  return asked;
}

Route::PauseOutcome Route::PauseReplication(int64_t timeout_ms) {
  auto members = replication_.Snapshot();
  auto left = std::make_shared<std::atomic<int64_t>>(static_cast<int64_t>(members.size()));
  for (const auto& m : members) m.pause(std::make_shared<Countdown>(left));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (left->load() > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(kDrainPollInterval);
  return {static_cast<int>(members.size()), std::max<int64_t>(left->load(), 0)};
}

nlohmann::json ToJson(const ReplicationSessionInfo& r) {
  return {{"backend_pid", r.backend_pid},
          {"server", ToJson(r.server)},
          {"database", r.database},
          {"user", r.user},
          {"application_name", r.application_name},
          {"client_addr", r.client_addr},
          {"streaming", r.streaming},
          {"slot", r.slot}};
}

void RouteTable::Add(std::shared_ptr<Route> r) {
  std::lock_guard<std::mutex> l(mu_);
  routes_[r->name()] = std::move(r);
}

std::shared_ptr<Route> RouteTable::Find(const std::string& name) const {
  std::lock_guard<std::mutex> l(mu_);
  auto it = routes_.find(name);
  return it == routes_.end() ? nullptr : it->second;
}

std::shared_ptr<Route> RouteTable::FindByDatabase(const std::string& database) const {
  std::lock_guard<std::mutex> l(mu_);
  for (const auto& [n, r] : routes_)
    if (r->database() == database) return r;
  return nullptr;
}

std::vector<std::shared_ptr<Route>> RouteTable::List() const {
  std::lock_guard<std::mutex> l(mu_);
  std::vector<std::shared_ptr<Route>> out;
  for (const auto& [n, r] : routes_) out.push_back(r);
  return out;
}

}  // namespace pgshift::proxy
