// What every phase shares: the dispatch to each phase's step, loading and
// recording the migration, transitions and states, events, operator
// actions, failures and findings. The steps are in src/workflow/phases/.
#include "workflow/runner.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "common/faults.h"
#include "workflow/defaults.h"

namespace pgshift {
namespace {

using json = nlohmann::json;

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
                                 std::unique_ptr<MigrationEnv> env, MigrationSpec spec)
    : store_(store),
      clock_(clock),
      id_(std::move(id)),
      env_(std::move(env)),
      spec_(std::move(spec)) {}

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
  return m_.pending_action.empty() && AwaitsOperator(state_);
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

void MigrationRunner::Event(const std::string& kind, const std::string& message) {
  Log(kind, message);
  MigrationEvent e{0, clock_.NowMs(), PhaseName(phase_), kind, message};
  if (kind == "info" && InHold(phase_)) {
    unsaved_events_.push_back(std::move(e));
  } else if (!unsaved_events_.empty()) {
    unsaved_events_.push_back(std::move(e));  // after those, in order
    Save();
  } else {
    (void)store_.AppendEvent(id_, e);
  }
}

Status MigrationRunner::Load() {
  PGSHIFT_ASSIGN_OR_RETURN(m_, store_.Get(id_));
  auto phase = ParsePhase(m_.phase);
  if (!phase) return Internal("stored phase '" + m_.phase + "' is unknown to this pgshiftd");
  auto state = ParseState(m_.state);
  if (!state) return Internal("stored state '" + m_.state + "' is unknown to this pgshiftd");
  PGSHIFT_ASSIGN_OR_RETURN(progress_, MigrationProgress::FromJson(m_.progress));
  PGSHIFT_ASSIGN_OR_RETURN(result_, MigrationResult::FromJson(m_.result));
  phase_ = *phase;
  state_ = *state;
  return Status::OK();
}

void MigrationRunner::Save() {
  unsaved_phase_ = false;
  m_.phase = PhaseName(phase_);
  m_.state = StateName(state_);
  m_.progress = progress_.ToJson();
  m_.result = result_.ToJson();
  m_.updated_at_ms = clock_.NowMs();
  Status st =
      unsaved_events_.empty() ? store_.Update(m_) : store_.UpdateWithEvents(m_, unsaved_events_);
  unsaved_events_.clear();
  if (!st.ok()) spdlog::error("[{}] cannot record state: {}", id_, st.ToString());
}

void MigrationRunner::SetState(MigrationState s) { state_ = s; }

void MigrationRunner::WaitForOperator() {
  if (state_ == MigrationState::kWaiting) return;
  SetState(MigrationState::kWaiting);
  Save();
}

void MigrationRunner::Block(const std::string& error, const std::string& advice) {
  SetState(MigrationState::kBlocked);
  m_.error = error;
  Save();
  Event("error", error + advice);
}

void MigrationRunner::Transition(Phase next, const std::string& message) {
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
  // The phase and its events in one commit.
  Log("info", message);
  unsaved_events_.push_back({0, clock_.NowMs(), PhaseName(next), "info", message});
  if (ChainsInto(next)) {
    unsaved_phase_ = true;
    return;
  }
  Save();
}

void MigrationRunner::HandleAction() {
  const std::string action = m_.pending_action;
  if (action.empty()) return;
  // cutover and finalize stay pending until the phase that consumes them.
  if (action == "cutover" || action == "finalize") return;
  (void)store_.ClearAction(id_);
  m_.pending_action.clear();
  const json& body = m_.action_body;
  if (action == "rollback") {
    if (phase_ != Phase::kRollingBack && !IsTerminal(phase_) && phase_ != Phase::kFinalize) {
      StartRollback("rollback requested by operator (from " + std::string(PhaseName(phase_)) + ")");
    }
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
      Event("warning",
            "finding '" + body.value("finding", "") + "' overridden: " + body.value("reason", ""));
      if (state_ == MigrationState::kBlocked) SetState(MigrationState::kRunning);
      Save();
    }
  } else if (action == "drop_slot") {
    const std::string slot = body.value("slot", "");
    Status st = slot == SlotNameFor(id_)
                    ? FailedPrecondition("slot " + slot + " is this migration's own replica slot")
                    : env_->DropInactiveSlot(slot);
    if (st.ok()) {
      Event("warning", "replication slot " + slot +
                           " dropped on operator request: " + body.value("reason", ""));
      // Re-run the checks that saw it.
      if (state_ == MigrationState::kBlocked) SetState(MigrationState::kRunning);
      Save();
    } else {
      Event("error", "could not drop slot " + slot + ": " + st.message());
    }
  } else if (action == "retry") {
    if (state_ == MigrationState::kFailed || state_ == MigrationState::kBlocked) {
      consecutive_failures_ = 0;
      SetState(MigrationState::kRunning);
      m_.error.clear();
      Save();
      Event("info", "retry requested by operator");
    }
  }
}

void MigrationRunner::HandleFailure(const Status& st) {
  if (InHold(phase_)) {
    auto target = env_->InspectTarget();
    bool promoted = target.ok() && target->running && !target->in_recovery;
    if (phase_ == Phase::kSwitch || promoted) {
      StartRollback("cutover failed after promotion, rolling back to the source: " + st.message());
    } else {
      AbortCutover(st.message());
    }
    return;
  }
  ++consecutive_failures_;
  m_.error = st.message();
  if (phase_ == Phase::kVerify) {
    result_.verify_failure = st.message();
    StartRollback("post-cutover health check failed, routing back to the source: " + st.message());
    return;
  }
  if (consecutive_failures_ >= spec_.options.max_step_attempts) {
    SetState(MigrationState::kFailed);
    Save();
    Event("error", "giving up after " + std::to_string(consecutive_failures_) +
                       " attempts: " + st.message() +
                       " (fix the cause, then `pgshift migration retry` or `rollback`)");
    return;
  }
  Save();
  Event("warning", "attempt " + std::to_string(consecutive_failures_) +
                       " failed, will retry: " + st.message());
  clock_.SleepMs(std::min(workflow_defaults::kRetryBackoffBaseMs << consecutive_failures_,
                          workflow_defaults::kRetryBackoffMaxMs));
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
  Tick t = StepPhase();
  if (unsaved_phase_) {
    Save();
    return t;
  }
  // An event a step left waiting for a Save that did not come.
  for (const auto& e : unsaved_events_) (void)store_.AppendEvent(id_, e);
  unsaved_events_.clear();
  return t;
}

MigrationRunner::Tick MigrationRunner::StepPhase() {
  if (Status st = Load(); !st.ok()) {
    spdlog::error("[{}] cannot load: {}", id_, st.ToString());
    return Tick::kIdle;
  }
  HandleAction();
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

}  // namespace pgshift
