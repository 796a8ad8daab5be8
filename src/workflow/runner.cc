// What every phase shares: the dispatch to each phase's step, loading and
// recording the migration, transitions and states, events, operator
// actions, failures and findings. The steps are in src/workflow/phases/.
#include "workflow/runner.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "common/faults.h"
#include "workflow/defaults.h"
#include "workflow/rollback_plan.h"

namespace pgshift {
namespace {

using json = nlohmann::json;

// kRetryBackoffBaseMs << n, at most kRetryBackoffMaxMs.
int64_t Backoff(int n) {
  constexpr int kMaxShift = 16;  // far past the cap, short of an overflow
  return std::min(workflow_defaults::kRetryBackoffBaseMs << std::min(n, kMaxShift),
                  workflow_defaults::kRetryBackoffMaxMs);
}

json WithOverrideOf(const json& old_findings, const checks::Finding& f) {
  json j = f.ToJson();
  for (const auto& o : old_findings) {
    if (o.value("id", "") == f.id && o.value("subject", "") == f.subject &&
        o.value("overridden", false)) {
      j["overridden"] = true;
      j["override_reason"] = o.value("override_reason", "");
    }
  }
  return j;
}

}  // namespace

MigrationRunner::MigrationRunner(StateStore& store, Clock& clock, std::string id,
                                 std::unique_ptr<MigrationEnv> env, MigrationSpec spec, Lease lease)
    : store_(store),
      clock_(clock),
      id_(std::move(id)),
      env_(std::move(env)),
      spec_(std::move(spec)),
      lease_(std::move(lease)) {}

MigrationRunner::StepFn MigrationRunner::StepOf(Phase p) {
  // In the phase table's order; checked below.
  static constexpr std::pair<Phase, StepFn> kSteps[] = {
      {Phase::kPreflight, &MigrationRunner::Preflight},
      {Phase::kProvision, &MigrationRunner::Provision},
      {Phase::kSync, &MigrationRunner::Sync},
      {Phase::kValidate, &MigrationRunner::Validate},
      {Phase::kReady, &MigrationRunner::Ready},
      {Phase::kCdcPrepare, &MigrationRunner::CdcPrepare},
      {Phase::kQuiesce, &MigrationRunner::Quiesce},
      {Phase::kDrain, &MigrationRunner::Drain},
      {Phase::kPromote, &MigrationRunner::Promote},
      {Phase::kSnapshot, &MigrationRunner::Snapshot},
      {Phase::kCdcRecreate, &MigrationRunner::CdcRecreate},
      {Phase::kSwitch, &MigrationRunner::Switch},
      {Phase::kVerify, &MigrationRunner::Verify},
      {Phase::kFinalize, &MigrationRunner::Finalize},
      {Phase::kFinalized, nullptr},
      {Phase::kRollingBack, &MigrationRunner::RollingBack},
      {Phase::kRolledBack, nullptr},
  };
  static_assert(std::size(kSteps) == kPhaseCount, "one entry per phase");
  static_assert(
      [] {
        for (size_t i = 0; i < kPhaseCount; ++i) {
          if (kSteps[i].first != kPhaseTable[i].phase) return false;
          if ((kSteps[i].second == nullptr) != kPhaseTable[i].terminal) return false;
        }
        return true;
      }(),
      "kSteps follows the phase table; exactly the terminal phases have no step");
  return kSteps[PhaseOrder(p)].second;
}

bool MigrationRunner::AwaitingOperator() const {
  return commit_.ok() && m_.actions.empty() && AwaitsOperator(state_);
}

void MigrationRunner::Log(const std::string& kind, const std::string& message) const {
  const char* phase = PhaseName(phase_);
  if (kind == "error") {
    spdlog::error("[{}] {}: {}", id_, phase, message);
  } else if (kind == "warning") {
    spdlog::warn("[{}] {}: {}", id_, phase, message);
  } else {
    spdlog::info("[{}] {}: {}", id_, phase, message);
  }
}

void MigrationRunner::Note(const std::string& kind, const std::string& message) {
  Log(kind, message);
  unsaved_events_.push_back({0, clock_.NowMs(), PhaseName(phase_), kind, message, lease_.owner});
}

void MigrationRunner::Event(const std::string& kind, const std::string& message) {
  const bool others_waiting = !unsaved_events_.empty();
  Note(kind, message);
  if (kind == "info" && InHold(phase_)) return;
  // After those waiting, in order. A failure is kept in commit_, which ends
  // the step whatever its caller does next.
  (void)(others_waiting ? Save() : FlushEvents());
}

Status MigrationRunner::Load() {
  PGSHIFT_ASSIGN_OR_RETURN(m_, store_.Get(id_));
  if (m_.lease.token != lease_.token) return LeaseLost(id_, m_.lease, lease_.token);
  auto phase = ParsePhase(m_.phase);
  if (!phase) return Internal("stored phase '" + m_.phase + "' is unknown to this pgshiftd");
  auto state = ParseState(m_.state);
  if (!state) return Internal("stored state '" + m_.state + "' is unknown to this pgshiftd");
  PGSHIFT_ASSIGN_OR_RETURN(progress_, MigrationProgress::FromJson(m_.progress));
  PGSHIFT_ASSIGN_OR_RETURN(result_, MigrationResult::FromJson(m_.result));
  phase_ = *phase;
  state_ = *state;
  recorded_phase_ = m_.phase;
  return Status::OK();
}

Status MigrationRunner::Save() {
  // Once a commit failed, a later one would record a state past an effect
  // whose record is missing: the step ends instead (AfterFailedCommit).
  if (!commit_.ok()) return commit_;
  unsaved_phase_ = false;
  m_.phase = PhaseName(phase_);
  m_.state = StateName(state_);
  m_.progress = progress_.ToJson();
  m_.result = result_.ToJson();
  m_.updated_at_ms = clock_.NowMs();
  m_.lease = lease_;  // the fence: written only while the lease is still ours
  commit_ = unsaved_events_.empty() && applied_actions_.empty()
                ? store_.Update(m_)
                : store_.UpdateWithEvents(m_, unsaved_events_, applied_actions_);
  unsaved_events_.clear();
  applied_actions_.clear();
  if (commit_.ok()) recorded_phase_ = m_.phase;
  return commit_;
}

Status MigrationRunner::FlushEvents() {
  if (!applied_actions_.empty()) return Save();
  for (const auto& e : unsaved_events_) {
    if (!commit_.ok()) break;
    commit_ = store_.AppendEvent(id_, e, lease_.token);
  }
  unsaved_events_.clear();
  return commit_;
}

MigrationRunner::Tick MigrationRunner::AfterFailedCommit() {
  if (IsLeaseLost(commit_)) {
    // Not a failure to retry: another pgshiftd drives the migration now.
    lost_ = true;
    spdlog::warn("[{}] {}; this pgshiftd stops driving it", id_, commit_.message());
    return Tick::kLost;
  }
  // Nothing this step did after the failed commit is recorded, and the
  // migration has not moved on: the next step reloads the last committed
  // record and runs its phase again (every step is idempotent, as after a
  // crash). The events that could not be written are written again by that
  // re-run, and the operator actions stay queued until it records them.
  unsaved_events_.clear();
  applied_actions_.clear();
  unsaved_phase_ = false;
  ++failed_commits_;
  const int64_t backoff = Backoff(failed_commits_);
  spdlog::error(
      "[{}] cannot record the migration's state ({}); it does not move on: in {} ms it goes on "
      "from the last recorded state (phase {}), attempt {}",
      id_, commit_.message(), backoff, recorded_phase_, failed_commits_ + 1);
  clock_.SleepMs(backoff);
  return Tick::kIdle;
}

void MigrationRunner::SetState(MigrationState s) { state_ = s; }

Status MigrationRunner::WaitForOperator() {
  if (state_ == MigrationState::kWaiting) return Status::OK();
  SetState(MigrationState::kWaiting);
  return Save();
}

Status MigrationRunner::Block(const std::string& error, const std::string& advice) {
  SetState(MigrationState::kBlocked);
  m_.error = error;
  Note("error", error + advice);
  return Save();
}

void MigrationRunner::Enter(Phase next, const std::string& message) {
  phase_ = next;
  m_.error.clear();
  consecutive_failures_ = 0;
  if (next == Phase::kFinalized) {
    SetState(MigrationState::kFinalized);
  } else if (next == Phase::kRolledBack) {
    SetState(MigrationState::kRolledBack);
  } else {
    SetState(MigrationState::kRunning);
  }
  result_.phase_started_ms[PhaseName(next)] = clock_.NowMs();
  Note("info", message);
}

Status MigrationRunner::Transition(Phase next, const std::string& message) {
  // The last reconcile of a route's instances, toward where traffic ends.
  if (next == Phase::kFinalized) ReconcileRoute(env_->TargetEndpoint());
  if (next == Phase::kRolledBack) ReconcileRoute(env_->SourceEndpoint());
  // Tests arm these by name (common/faults.h): the step's effects are done,
  // the commit that records leaving the phase (for a chained next phase, a
  // later step's) is not.
  PGSHIFT_RETURN_IF_ERROR(FaultPoint(std::string("after_") + PhaseName(phase_)));
  // The phase and its events in one commit.
  Enter(next, message);
  if (ChainsInto(next)) {
    unsaved_phase_ = true;
    return Status::OK();
  }
  return Save();
}

// Every request but cutover and finalize is applied at once, in the order
// queued. Those two stay queued until the phase that consumes them (ready,
// verify); they are looked at last, so one that can no longer apply (after
// a rollback just applied, say) is dropped with an event rather than left
// waiting. A request leaves the queue in the commit that records its effect
// (Consume), so one made meanwhile stays queued, and one applied but not
// recorded (a crash, a failed commit) is applied again: each is idempotent.
Status MigrationRunner::HandleActions() {
  auto standing = [](const OperatorAction& a) {
    return a.action == "cutover" || a.action == "finalize";
  };
  for (bool standing_pass : {false, true}) {
    const std::vector<OperatorAction> queued = m_.actions;
    for (const auto& a : queued) {
      if (standing(a) == standing_pass) PGSHIFT_RETURN_IF_ERROR(HandleAction(a));
    }
  }
  return Status::OK();
}

const OperatorAction* MigrationRunner::Requested(const std::string& action) const {
  for (const auto& a : m_.actions) {
    if (a.action == action) return &a;
  }
  return nullptr;
}

void MigrationRunner::Consume(const OperatorAction& a) {
  const int64_t seq = a.seq;
  applied_actions_.push_back(seq);
  std::erase_if(m_.actions, [seq](const OperatorAction& q) { return q.seq == seq; });
}

Status MigrationRunner::HandleAction(const OperatorAction& a) {
  const std::string& action = a.action;
  const json& body = a.body;
  const std::string phase = PhaseName(phase_);
  if (action == "cutover" || action == "finalize") {
    const bool stale = phase_ == Phase::kRollingBack ||
                       (action == "cutover" ? PhaseOrder(phase_) > PhaseOrder(Phase::kReady)
                                            : PhaseOrder(phase_) > PhaseOrder(Phase::kVerify));
    if (!stale) return Status::OK();
    Consume(a);
    Note("warning", action + " request dropped: the migration is past it (phase " + phase + ")");
    return Save();
  }
  Consume(a);
  if (action == "rollback") {
    const bool discard = body.value("discard_target_writes", false);
    if (phase_ != Phase::kRollingBack && !IsTerminal(phase_) && phase_ != Phase::kFinalize) {
      if (discard && RollbackPathNow(phase_, result_, true) == RollbackPath::kDiscardTargetWrites) {
        result_.rollback_path = RollbackPathName(RollbackPath::kDiscardTargetWrites);
      }
      return StartRollback("rollback requested by operator (from " + phase + ")");
    }
    if (phase_ == Phase::kRollingBack && discard && state_ == MigrationState::kFailed) {
      result_.rollback_path = RollbackPathName(RollbackPath::kDiscardTargetWrites);
      consecutive_failures_ = 0;
      SetState(MigrationState::kRunning);
      m_.error.clear();
      Note("warning", "rolling back without the target's writes, as the operator confirmed");
      return Save();
    }
    Note("warning", "rollback request dropped: the migration is in phase " + phase);
  } else if (action == "override") {
    bool found = false;
    for (auto& f : m_.findings) {
      if (OverrideNames(body, f)) {
        f["overridden"] = true;
        f["override_reason"] = body.value("reason", "");
        found = true;
      }
    }
    if (found) {
      Note("warning",
           "finding '" + body.value("finding", "") + "' overridden: " + body.value("reason", ""));
      if (state_ == MigrationState::kBlocked) SetState(MigrationState::kRunning);
    }
  } else if (action == "drop_slot") {
    const std::string slot = body.value("slot", "");
    Status st = slot == SlotNameFor(id_)
                    ? FailedPrecondition("slot " + slot + " is this migration's own replica slot")
                    : env_->DropInactiveSlot(slot);
    if (st.ok()) {
      Note("warning", "replication slot " + slot +
                          " dropped on operator request: " + body.value("reason", ""));
      // Re-run the checks that saw it.
      if (state_ == MigrationState::kBlocked) SetState(MigrationState::kRunning);
    } else {
      Note("error", "could not drop slot " + slot + ": " + st.message());
    }
  } else if (action == "retry") {
    if (state_ == MigrationState::kFailed || state_ == MigrationState::kBlocked) {
      consecutive_failures_ = 0;
      SetState(MigrationState::kRunning);
      m_.error.clear();
      Note("info", "retry requested by operator");
    }
  } else {
    Note("warning", "unknown operator action '" + action + "' dropped");
  }
  return Save();
}

void MigrationRunner::HandleFailure(const Status& st) {
  // A failed commit below is kept in commit_ and ends the step (Step()).
  if (InHold(phase_)) {
    auto target = env_->InspectTarget();
    bool promoted = target.ok() && target->running && !target->in_recovery;
    if (phase_ == Phase::kSwitch || promoted) {
      (void)StartRollback("cutover failed after promotion, rolling back to the source: " +
                          st.message());
    } else {
      (void)AbortCutover(st.message());
    }
    return;
  }
  ++consecutive_failures_;
  m_.error = st.message();
  if (phase_ == Phase::kVerify) {
    result_.verify_failure = st.message();
    (void)StartRollback("post-cutover health check failed, routing back to the source: " +
                        st.message());
    return;
  }
  if (consecutive_failures_ >= spec_.options.max_step_attempts) {
    SetState(MigrationState::kFailed);
    Note("error", "giving up after " + std::to_string(consecutive_failures_) +
                      " attempts: " + st.message() +
                      " (fix the cause, then `pgshift migration retry` or `rollback`)");
    (void)Save();
    return;
  }
  Note("warning",
       "attempt " + std::to_string(consecutive_failures_) + " failed, will retry: " + st.message());
  if (Save().ok()) clock_.SleepMs(Backoff(consecutive_failures_));
}

void MigrationRunner::MergeFindings(const std::vector<checks::Finding>& fresh) {
  for (const auto& f : fresh) {
    json j = WithOverrideOf(m_.findings, f);
    bool replaced = false;
    for (auto& old : m_.findings) {
      if (old.value("id", "") == f.id && old.value("subject", "") == f.subject) {
        old = j;
        replaced = true;
      }
    }
    if (!replaced) m_.findings.push_back(j);
  }
}

void MigrationRunner::ReplaceFindings(const std::vector<checks::Finding>& fresh) {
  json previous = std::move(m_.findings);
  m_.findings = json::array();
  for (const auto& f : fresh) m_.findings.push_back(WithOverrideOf(previous, f));
}

MigrationRunner::Tick MigrationRunner::Step() {
  if (lost_) return Tick::kLost;
  commit_ = Status::OK();
  Tick t = StepPhase();
  // Out of the hold (switched, aborted, rolled back, stopped for an
  // operator): nothing more to renew. A rollback keeps renewing its hold
  // between the attempts of its step.
  const bool rolling_back = phase_ == Phase::kRollingBack && state_ == MigrationState::kRunning;
  if (!InHold(phase_) && !rolling_back) renewer_.reset();
  // A chained phase is recorded with the step; events a step left waiting
  // for a Save that did not come are written now.
  if (!(unsaved_phase_ ? Save() : FlushEvents()).ok()) return AfterFailedCommit();
  failed_commits_ = 0;
  return t;
}

MigrationRunner::Tick MigrationRunner::StepPhase() {
  if (Status st = Load(); !st.ok()) {
    if (IsLeaseLost(st)) {
      lost_ = true;
      spdlog::warn("[{}] {}; this pgshiftd stops driving it", id_, st.message());
      return Tick::kLost;
    }
    spdlog::error("[{}] cannot load: {}", id_, st.ToString());
    return Tick::kIdle;
  }
  if (!HandleActions().ok()) return Tick::kIdle;
  if (IsTerminal(phase_)) return Tick::kTerminal;
  if (state_ == MigrationState::kBlocked || state_ == MigrationState::kFailed) return Tick::kIdle;

  idle_ = false;
  // A phase that chains into this step runs in it too.
  for (Phase at = phase_;;) {
    StepFn fn = StepOf(at);
    if (fn == nullptr) break;
    // Tests arm these by name (common/faults.h) to crash or fail any step.
    Status st = FaultPoint(std::string("before_") + PhaseName(at));
    if (st.ok()) st = (this->*fn)();
    // After a failed commit the step ends, whatever it returned, and never
    // chains on: Step() backs off and the next step starts again from the
    // last committed record.
    if (!commit_.ok()) return Tick::kIdle;
    if (!st.ok()) {
      HandleFailure(st);
      return Tick::kIdle;
    }
    consecutive_failures_ = 0;
    if (phase_ == at || !ChainsInto(phase_)) break;
    at = phase_;
  }
  if (IsTerminal(phase_)) return Tick::kTerminal;
  return idle_ ? Tick::kIdle : Tick::kProgress;
}

Status MigrationRunner::TakeHold() {
  Router& router = env_->router();
  renewer_.reset();
  PGSHIFT_ASSIGN_OR_RETURN(HoldLease lease, router.HoldLeased(spec_.options.hold_timeout_ms,
                                                              spec_.options.hold_lease_ms));
  result_.hold_instance_epochs.reset();
  if (!lease.leased()) {
    result_.hold_epoch.reset();
    return Status::OK();
  }
  result_.hold_epoch = lease.epoch;
  if (!lease.instance_epochs.empty()) result_.hold_instance_epochs = lease.instance_epochs;
  renewer_ = std::make_unique<HoldRenewer>(router, lease);
  return Status::OK();
}

Status MigrationRunner::AdoptHold() {
  if (!result_.hold_epoch) return Status::OK();  // the router's hold has no lease
  const HoldLease lease = RecordedHold();
  if (renewer_ && renewer_->lease().epoch == lease.epoch) return Status::OK();
  renewer_.reset();
  PGSHIFT_RETURN_IF_ERROR(env_->router().RenewHold(lease));
  renewer_ = std::make_unique<HoldRenewer>(env_->router(), lease);
  Event("info", "the router still holds traffic under hold " + std::to_string(lease.epoch) +
                    ": renewing its lease again");
  return Status::OK();
}

HoldLease MigrationRunner::RecordedHold() const {
  return {.epoch = result_.hold_epoch.value_or(0),
          .lease_ms = spec_.options.hold_lease_ms,
          .instance_epochs = result_.hold_instance_epochs.value_or(std::vector<uint64_t>{})};
}

Status MigrationRunner::HoldIsOurs(const std::string& before) {
  if (!result_.hold_epoch) return Status::OK();  // the router's hold has no lease
  const bool adopted = !renewer_ || renewer_->lease().epoch != *result_.hold_epoch;
  Status st = adopted ? AdoptHold() : renewer_->Check();
  if (st.ok()) return st;
  renewer_.reset();
  const char* whose = phase_ == Phase::kRollingBack ? "rollback's" : "cutover's";
  return Aborted(std::string("the router's hold on traffic is no longer this ") + whose +
                 ", so no " + before + ": " + st.message());
}

Status MigrationRunner::ReleaseHold() {
  renewer_.reset();  // stops renewing first: a renewal after the release would find it gone
  return env_->router().Release();
}

}  // namespace pgshift
