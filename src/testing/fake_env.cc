#include "testing/fake_env.h"

#include <algorithm>
#include <cmath>

#include "common/clock.h"

namespace pgshift {
namespace {

class FakeRouter : public Router {
 public:
  explicit FakeRouter(FakeWorld& w) : w_(w) {}
  std::string Kind() const override { return "fake"; }
  Status Hold(int64_t) override {
    Note("Hold");
    if (w_.hold_times_out) return Timeout("fake: a transaction stayed open past the hold deadline");
    w_.held = true;
    return Status::OK();
  }
  Result<HoldLease> HoldLeased(int64_t timeout_ms, int64_t lease_ms) override {
    LapseIfExpired();
    PGSHIFT_RETURN_IF_ERROR(Hold(timeout_ms));
    if (!w_.router_leases) return HoldLease{};
    if (w_.hold_epoch == 0) w_.hold_epoch = ++w_.last_epoch;  // else joins the hold in place
    lease_ms_ = lease_ms;
    w_.lease_until_ms = MonotonicMs() + lease_ms;
    return HoldLease{.epoch = w_.hold_epoch, .lease_ms = lease_ms};
  }
  // On the renewer's thread: atomics only, no Note.
  Status RenewHold(const HoldLease& hold) override {
    if (w_.hold_epoch != hold.epoch || Expired())
      return FailedPrecondition("fake: hold " + std::to_string(hold.epoch) + " lapsed");
    w_.lease_until_ms = MonotonicMs() + lease_ms_;
    w_.renewals++;
    return Status::OK();
  }
  Status SwitchHeld(const Endpoint& to, const HoldLease& hold) override {
    LapseIfExpired();
    if (w_.hold_epoch != hold.epoch)
      return FailedPrecondition("fake: hold " + std::to_string(hold.epoch) + " lapsed");
    return SwitchTo(to);
  }
  Status Release() override {
    LapseIfExpired();
    w_.held = false;
    w_.hold_epoch = 0;
    Note("Release");
    return Status::OK();
  }
  Status Repoint(const Endpoint& to) override {
    LapseIfExpired();
    w_.routed = to;
    Note("Repoint");
    return Status::OK();
  }
  Result<Endpoint> Current() override { return w_.routed; }
  Result<RouteStats> Stats() override {
    if (w_.stats_fail) return Unavailable("fake: the router's stats do not answer");
    const FakeWorld::Traffic& t = w_.routed == w_.target_ep ? w_.target_traffic : w_.source_traffic;
    RouteStats& s = w_.route_stats;
    if (s.latency.empty()) s.latency = LatencyHistogram::ProxyLayout();
    const int64_t us = std::llround(t.latency_ms * 1000);
    s.transactions += t.per_read;
    s.failed_transactions = s.failed_transactions.value_or(0) +
                            std::llround(static_cast<double>(t.per_read) * t.error_rate);
    s.timed_transactions += t.per_read;
    s.latency_sum_us += us * t.per_read;
    s.latency.counts[LatencyBucketOf(us)] += t.per_read;
    return s;
  }
  Status Prewarm(const Endpoint& to) override {
    Note("Prewarm");
    w_.prewarmed_on = to;
    return Status::OK();
  }
  Result<std::vector<ReplicationSession>> ReplicationSessions(const Endpoint&) override {
    Note("ReplicationSessions");
    return w_.replication_sessions;
  }
  Result<int> RequestReplicationFeedback() override {
    Note("RequestReplicationFeedback");
    if (!w_.consumers_confirm) return 0;
    for (auto& s : w_.logical_slots) {
      if (s.active) s.confirmed_flush_lsn = Lsn{w_.source_lsn}.ToString();
    }
    return static_cast<int>(w_.replication_sessions.size());
  }
  Result<int> PauseReplication() override {
    Note("PauseReplication");
    ++w_.replication_pauses;
    for (auto& s : w_.logical_slots) s.active = false;
    return static_cast<int>(w_.replication_sessions.size());
  }
  Result<HeldBackends> HeldBackendPids(const Endpoint& on) override {
    Note("HeldBackendPids");
    if (w_.held_backends_fail) return Unavailable("fake: the router does not answer");
    if (!w_.held) return FailedPrecondition("fake: not held");
    return HeldBackends{.server = on, .database = "app", .pids = w_.held_backend_pids};
  }

 private:
  bool Expired() const {
    return w_.leases_expire && w_.hold_epoch != 0 && MonotonicMs() > w_.lease_until_ms;
  }
  void LapseIfExpired() {
    if (!Expired()) return;
    w_.LapseHold();
    ++w_.lapses;
  }
  void Note(const std::string& call) {
    w_.calls.push_back(call);
    if (w_.crash_on == call) {
      w_.crash_on.clear();
      throw SimulatedCrash{call};
    }
  }
  FakeWorld& w_;
  std::atomic<int64_t> lease_ms_{0};  // of the hold in place
};

class FakeEnv : public MigrationEnv {
 public:
  explicit FakeEnv(std::shared_ptr<FakeWorld> w) : w_(std::move(w)), router_(*w_) {}

  Result<SourceInfo> InspectSource() override {
    Before("InspectSource");
    if (w_->source_down) return Unavailable("fake: connection refused");
    return SourceInfo{150000, "logical", 10, 10, static_cast<int>(w_->slots.size()), false};
  }
  Result<std::vector<checks::Finding>> PreflightFindings() override {
    Before("PreflightFindings");
    auto f = w_->preflight;
    f.push_back({.id = "version", .severity = checks::Severity::kOk, .message = "15"});
    return f;
  }
  Result<std::vector<checks::Finding>> ValidateFindings() override {
    Before("ValidateFindings");
    return std::vector<checks::Finding>{
        {.id = "params", .severity = checks::Severity::kOk, .message = "compatible"}};
  }
  Status EnsurePhysicalSlot(const std::string& slot) override {
    Before("EnsurePhysicalSlot");
    w_->slots.insert(slot);
    return After("EnsurePhysicalSlot");
  }
  Status DropSlot(const std::string& slot) override {
    Before("DropSlot");
    w_->slots.erase(slot);
    std::erase_if(w_->logical_slots, [&](const LogicalSlot& s) { return s.name == slot; });
    return After("DropSlot");
  }
  Result<std::vector<LogicalSlot>> LogicalSlots() override { return w_->logical_slots; }
  Status DropInactiveSlot(const std::string& slot) override {
    Before("DropInactiveSlot");
    for (auto it = w_->logical_slots.begin(); it != w_->logical_slots.end(); ++it) {
      if (it->name != slot) continue;
      if (it->active) return FailedPrecondition("fake: slot " + slot + " is active");
      w_->logical_slots.erase(it);
      return Status::OK();
    }
    return NotFound("fake: no slot " + slot);
  }
  Result<ReplicationLag> Lag(const std::string&) override {
    Before("Lag");
    // As the local env: the standby's replay is read on the standby.
    if (w_->target_exists && !w_->target_running) return Unavailable("fake: target is down");
    Advance();
    PGSHIFT_RETURN_IF_ERROR(After("Lag"));
    return ReplicationLag{w_->source_lsn - w_->replay_lsn, 0, Lsn{w_->source_lsn},
                          Lsn{w_->replay_lsn}};
  }
  Result<FenceResult> FenceSource(const HeldBackends& held) override {
    Before("FenceSource");
    w_->fenced = true;
    w_->last_fence_exemption = held;
    // As the local fence: an exempt backend survives only when it is idle.
    FenceResult r;
    std::set<int> left;
    for (int pid : w_->source_backends) {
      bool exempt =
          held.server == w_->source_ep && std::count(held.pids.begin(), held.pids.end(), pid) > 0;
      if (exempt && !w_->busy_backends.count(pid)) {
        left.insert(pid);
        r.exempted++;
      } else {
        r.terminated++;
      }
    }
    w_->source_backends = left;
    PGSHIFT_RETURN_IF_ERROR(After("FenceSource"));
    return r;
  }
  Status UnfenceSource() override {
    Before("UnfenceSource");
    w_->fenced = false;
    return After("UnfenceSource");
  }
  Result<Lsn> WriteFinalMarker(const std::string&) override {
    Before("WriteFinalMarker");
    if (!w_->fenced) return FailedPrecondition("fake: marker before fence");
    w_->source_lsn += 64;
    PGSHIFT_RETURN_IF_ERROR(After("WriteFinalMarker"));
    return Lsn{w_->source_lsn};
  }
  Status RetireSource() override {
    Before("RetireSource");
    w_->retired = true;
    return After("RetireSource");
  }
  Status CreateReplica(const std::string& slot, std::function<void(int)> progress) override {
    Before("CreateReplica");
    if (!w_->slots.count(slot)) return FailedPrecondition("fake: no slot " + slot);
    if (!w_->target_exists) {
      progress(50);
      w_->target_exists = true;
      w_->replay_lsn = w_->source_lsn - 4 * w_->wal_per_call;
    }
    w_->target_running = true;
    progress(100);
    return After("CreateReplica");
  }
  Result<TargetState> InspectTarget() override {
    Before("InspectTarget");
    Advance();
    return TargetState{w_->target_exists, w_->target_running, w_->target_running && !w_->promoted,
                       Lsn{w_->replay_lsn}, w_->timeline};
  }
  Status StopTarget() override {
    Before("StopTarget");
    w_->target_running = false;
    return After("StopTarget");
  }
  Result<int> PromoteTarget() override {
    Before("PromoteTarget");
    if (!w_->promoted) {
      w_->promoted = true;
      w_->timeline++;
    }
    PGSHIFT_RETURN_IF_ERROR(After("PromoteTarget"));
    return w_->timeline;
  }
  Status ProbeTargetWrite() override {
    Before("ProbeTargetWrite");
    if (w_->probe_fails) return Unavailable("fake: target refuses writes");
    if (!w_->promoted) return FailedPrecondition("fake: target is read-only");
    return Status::OK();
  }
  std::vector<checks::Finding> SyncFindings() override {
    return {{.id = "wal_rate", .severity = checks::Severity::kOk, .message = "replica keeps up"}};
  }
  Result<std::vector<checks::Finding>> QuickParity(int64_t) override {
    Before("QuickParity");
    std::vector<checks::Finding> out;
    for (const auto& t : w_->parity_mismatch) {
      out.push_back({.id = "data_parity",
                     .severity = checks::Severity::kBlocking,
                     .subject = t,
                     .message = "row counts differ"});
    }
    return out;
  }
  void PrepareCutover() override { w_->calls.push_back("PrepareCutover"); }
  Status StartParityCheck() override {
    Before("StartParityCheck");
    if (!w_->promoted) return FailedPrecondition("fake: snapshot before promotion");
    w_->parity_started = true;
    return After("StartParityCheck");
  }
  ParityState Parity() override {
    ParityState ps;
    ps.started = w_->parity_started;
    ps.tables_total = 3;
    if (!ps.started) return ps;
    if (w_->parity_polls_left > 0) {
      --w_->parity_polls_left;
      ps.tables_done = 1;
      return ps;
    }
    ps.done = true;
    ps.tables_done = 3;
    for (const auto& t : w_->parity_mismatch) {
      ps.findings.push_back({.id = "data_parity",
                             .severity = checks::Severity::kBlocking,
                             .subject = t,
                             .message = "row counts differ"});
    }
    if (w_->parity_mismatch.empty()) {
      ps.findings.push_back(
          {.id = "data_parity", .severity = checks::Severity::kOk, .message = "all tables match"});
    }
    return ps;
  }
  Result<Lsn> EnsureTargetLogicalSlot(const LogicalSlot& slot) override {
    Before("EnsureTargetLogicalSlot");
    if (!w_->promoted) return FailedPrecondition("fake: the target is still a standby");
    for (const auto& s : w_->target_logical_slots) {
      if (s.name == slot.name) return Lsn::Parse(s.confirmed_flush_lsn);
    }
    LogicalSlot made = slot;
    made.active = false;
    made.confirmed_flush_lsn = Lsn{w_->replay_lsn}.ToString();
    w_->target_logical_slots.push_back(made);
    PGSHIFT_RETURN_IF_ERROR(After("EnsureTargetLogicalSlot"));
    return Lsn{w_->replay_lsn};
  }
  Result<std::vector<LogicalSlot>> TargetLogicalSlots() override {
    Before("TargetLogicalSlots");
    // Consumers routed to the target read there and confirm past the point
    // their slot was recreated at.
    if (w_->consumers_confirm && w_->routed == w_->target_ep) {
      for (auto& s : w_->target_logical_slots) {
        s.confirmed_flush_lsn =
            Lsn{std::max(w_->replay_lsn + w_->wal_per_call, w_->target_lsn)}.ToString();
      }
    }
    return w_->target_logical_slots;
  }

  Result<std::vector<checks::Finding>> ReverseReplicationFindings() override {
    Before("ReverseReplicationFindings");
    return w_->reverse_obstacles;
  }
  Status EnsureReverseReplication() override {
    Before("EnsureReverseReplication");
    if (!w_->promoted) return FailedPrecondition("fake: the target is still a standby");
    w_->reverse_in_place = true;
    w_->target_lsn = std::max(w_->target_lsn, w_->replay_lsn);
    return After("EnsureReverseReplication");
  }
  Result<ReverseReplicationState> InspectReverseReplication(bool mark) override {
    Before("InspectReverseReplication");
    ReverseReplicationState st;
    st.in_place = w_->reverse_in_place;
    if (mark) w_->target_lsn = std::max(w_->target_lsn, w_->replay_lsn) + 64;
    st.target_lsn = Lsn{w_->target_lsn};
    st.applied_lsn = Lsn{w_->reverse_in_place && !w_->reverse_apply_stuck ? w_->target_lsn : 0};
    if (w_->reverse_apply_stuck) st.apply_error = "fake: apply worker failing";
    PGSHIFT_RETURN_IF_ERROR(After("InspectReverseReplication"));
    return st;
  }
  Status DropReverseReplication() override {
    Before("DropReverseReplication");
    w_->reverse_in_place = false;
    return After("DropReverseReplication");
  }
  Result<int> SyncSequencesToSource() override {
    Before("SyncSequencesToSource");
    PGSHIFT_RETURN_IF_ERROR(After("SyncSequencesToSource"));
    return w_->sequences_behind;
  }
  Result<Lsn> AdvanceSourceSlot(const std::string& slot, Lsn past) override {
    Before("AdvanceSourceSlot");
    w_->source_lsn = std::max(w_->source_lsn, past.value + 1);
    for (auto& s : w_->logical_slots) {
      if (s.name == slot) s.confirmed_flush_lsn = Lsn{w_->source_lsn}.ToString();
    }
    w_->advanced[slot] = w_->source_lsn;
    PGSHIFT_RETURN_IF_ERROR(After("AdvanceSourceSlot"));
    return Lsn{w_->source_lsn};
  }

  Endpoint SourceEndpoint() const override { return w_->source_ep; }
  Endpoint TargetEndpoint() const override { return w_->target_ep; }
  Router& router() override { return router_; }
  ProviderCapabilities Capabilities() const override { return w_->capabilities; }

 private:
  // Source keeps writing until fenced; the replica catches up.
  void Advance() {
    if (!w_->fenced) w_->source_lsn += w_->wal_per_call;
    if (w_->target_running && !w_->promoted) {
      w_->replay_lsn = std::min(w_->source_lsn, w_->replay_lsn + w_->replay_per_call);
    }
  }
  void Before(const std::string& call) {
    w_->calls.push_back(call);
    if (w_->on_call) w_->on_call(call);
    if (w_->crash_on == call && !w_->crash_after_effect) {
      w_->crash_on.clear();
      throw SimulatedCrash{call};
    }
  }
  Status After(const std::string& call) {
    if (w_->crash_on == call) {
      w_->crash_on.clear();
      throw SimulatedCrash{call};
    }
    if (w_->fail_on == call) return Unavailable("fake: " + call + " failed");
    return Status::OK();
  }

  std::shared_ptr<FakeWorld> w_;
  FakeRouter router_;
};

}  // namespace

Result<std::unique_ptr<MigrationEnv>> FakeEnvFactory::Make(const std::string&,
                                                           const MigrationSpec&) {
  return std::unique_ptr<MigrationEnv>(new FakeEnv(world_));
}

}  // namespace pgshift
