#include "workflow/runner.h"

#include <spdlog/spdlog.h>

#include "common/faults.h"

namespace pgshift {
namespace {

constexpr int kMaxConsecutiveFailures = 8;

}  // namespace

MigrationRunner::MigrationRunner(StateStore& store, Clock& clock, std::string id,
                                 std::unique_ptr<MigrationEnv> env, MigrationSpec spec)
    : store_(store),
      clock_(clock),
      id_(std::move(id)),
      env_(std::move(env)),
      spec_(std::move(spec)) {}

Phase MigrationRunner::phase() const { return ParsePhase(m_.phase).value_or(Phase::kPreflight); }

bool MigrationRunner::AwaitingOperator() const {
  return m_.pending_action.empty() &&
         (m_.state == state::kWaiting || m_.state == state::kBlocked || m_.state == state::kFailed);
}

void MigrationRunner::Log(const std::string& kind, const std::string& message) const {
  if (kind == "error") {
    spdlog::error("[{}] {}: {}", id_, m_.phase, message);
  } else if (kind == "warning") {
    spdlog::warn("[{}] {}: {}", id_, m_.phase, message);
  } else {
    spdlog::info("[{}] {}: {}", id_, m_.phase, message);
  }
}

void MigrationRunner::Event(const std::string& kind, const std::string& message) {
  Log(kind, message);
  MigrationEvent e{0, clock_.NowMs(), m_.phase, kind, message};
  if (kind == "info" && InHold()) {
    unsaved_events_.push_back(std::move(e));
  } else if (!unsaved_events_.empty()) {
    unsaved_events_.push_back(std::move(e));  // after those, in order
    Save();
  } else {
    (void)store_.AppendEvent(id_, e);
  }
}

bool MigrationRunner::InHold() const {
  switch (phase()) {
    case Phase::kQuiesce:
    case Phase::kDrain:
    case Phase::kPromote:
    case Phase::kSnapshot:
    case Phase::kCdcRecreate:
    case Phase::kSwitch:
      return true;
    default:
      return false;
  }
}

bool MigrationRunner::ChainsInto(Phase next) {
  return next == Phase::kPromote || next == Phase::kSnapshot || next == Phase::kCdcRecreate;
}

void MigrationRunner::Save() {
  unsaved_phase_ = false;
  m_.updated_at_ms = clock_.NowMs();
  Status st =
      unsaved_events_.empty() ? store_.Update(m_) : store_.UpdateWithEvents(m_, unsaved_events_);
  unsaved_events_.clear();
  if (!st.ok()) spdlog::error("[{}] cannot record state: {}", id_, st.ToString());
}

void MigrationRunner::Transition(Phase next, const std::string& message) {
  m_.phase = PhaseName(next);
  m_.error.clear();
  consecutive_failures_ = 0;
  if (next == Phase::kFinalized) {
    m_.state = state::kFinalized;
  } else if (next == Phase::kRolledBack) {
    m_.state = state::kRolledBack;
  } else {
    m_.state = state::kRunning;
  }
  m_.result["phase_started_ms"][m_.phase] = clock_.NowMs();
  // The phase and its events in one commit.
  Log("info", message);
  unsaved_events_.push_back({0, clock_.NowMs(), m_.phase, "info", message});
  if (ChainsInto(next)) {
    unsaved_phase_ = true;
    return;
  }
  Save();
}

void MigrationRunner::SetState(const std::string& s) {
  if (m_.state == s) return;
  m_.state = s;
  Save();
}

void MigrationRunner::HandleAction() {
  const std::string action = m_.pending_action;
  if (action.empty()) return;
  const Phase p = phase();
  if (action == "rollback") {
    (void)store_.ClearAction(id_);
    m_.pending_action.clear();
    if (p != Phase::kRollingBack && !IsTerminal(p) && p != Phase::kFinalize) {
      m_.result["rollback_from"] = m_.phase;
      Transition(Phase::kRollingBack,
                 "rollback requested by operator (from " + std::string(PhaseName(p)) + ")");
    }
  } else if (action == "override") {
    (void)store_.ClearAction(id_);
    m_.pending_action.clear();
    const auto& body = m_.action_body;
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
      if (m_.state == state::kBlocked) m_.state = state::kRunning;
      Save();
    }
  } else if (action == "drop_slot") {
    (void)store_.ClearAction(id_);
    m_.pending_action.clear();
    const std::string slot = m_.action_body.value("slot", "");
    Status st = slot == SlotNameFor(id_)
                    ? FailedPrecondition("slot " + slot + " is this migration's own replica slot")
                    : env_->DropInactiveSlot(slot);
    if (st.ok()) {
      Event("warning", "replication slot " + slot +
                           " dropped on operator request: " + m_.action_body.value("reason", ""));
      // Re-run the checks that saw it.
      if (m_.state == state::kBlocked) m_.state = state::kRunning;
      Save();
    } else {
      Event("error", "could not drop slot " + slot + ": " + st.message());
    }
  } else if (action == "retry") {
    (void)store_.ClearAction(id_);
    m_.pending_action.clear();
    if (m_.state == state::kFailed || m_.state == state::kBlocked) {
      consecutive_failures_ = 0;
      m_.state = state::kRunning;
      m_.error.clear();
      Save();
      Event("info", "retry requested by operator");
    }
  }
  // cutover and finalize stay pending until the phase that consumes them.
}

void MigrationRunner::AbortCutover(const std::string& why) {
  // The source is authoritative until switch: unfence first, then let held
  // clients go on to it.
  Status unfence = env_->UnfenceSource();
  Status release = env_->router().Release();
  m_.result.erase("final_lsn");
  m_.result.erase("hold_started_ms");
  m_.result.erase("drain_started_ms");
  int attempts = m_.result.value("cutover_attempts", 0);
  Transition(Phase::kReady, "cutover aborted, traffic released to the source: " + why);
  m_.error = "cutover aborted: " + why;
  if (!unfence.ok()) m_.error += "; unfence failed: " + unfence.message();
  if (!release.ok()) m_.error += "; release failed: " + release.message();
  if (!unfence.ok() || !release.ok()) {
    m_.state = state::kFailed;  // an operator must look before traffic is trusted
  } else if (spec_.options.auto_cutover && attempts >= spec_.options.max_auto_cutover_attempts) {
    m_.state = state::kWaiting;
  }
  Save();
  Event("error", m_.error);
}

void MigrationRunner::HandleFailure(const Status& st) {
  const Phase p = phase();
  if (InCutover(p)) {
    auto target = env_->InspectTarget();
    bool promoted = target.ok() && target->running && !target->in_recovery;
    if (p == Phase::kSwitch || promoted) {
      m_.result["rollback_from"] = m_.phase;
      Transition(Phase::kRollingBack,
                 "cutover failed after promotion, rolling back to the source: " + st.message());
    } else {
      AbortCutover(st.message());
    }
    return;
  }
  ++consecutive_failures_;
  m_.error = st.message();
  if (p == Phase::kVerify) {
    m_.result["rollback_from"] = m_.phase;
    m_.result["verify_failure"] = st.message();
    Transition(Phase::kRollingBack,
               "post-cutover health check failed, routing back to the source: " + st.message());
    return;
  }
  if (consecutive_failures_ >= kMaxConsecutiveFailures) {
    m_.state = state::kFailed;
    Save();
    Event("error", "giving up after " + std::to_string(consecutive_failures_) +
                       " attempts: " + st.message() +
                       " (fix the cause, then `pgshift migration retry` or `rollback`)");
    return;
  }
  Save();
  Event("warning", "attempt " + std::to_string(consecutive_failures_) +
                       " failed, will retry: " + st.message());
  clock_.SleepMs(std::min<int64_t>(200LL << consecutive_failures_, 5000));
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
  auto rec = store_.Get(id_);
  if (!rec.ok()) {
    spdlog::error("[{}] cannot load: {}", id_, rec.status().ToString());
    return Tick::kIdle;
  }
  m_ = std::move(rec).value();
  HandleAction();
  const Phase p = phase();
  if (IsTerminal(p)) return Tick::kTerminal;
  if (m_.state == state::kBlocked || m_.state == state::kFailed) return Tick::kIdle;

  static constexpr std::pair<Phase, Fn> kSteps[] = {
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
      {Phase::kRollingBack, &MigrationRunner::RollingBack},
  };
  idle_ = false;
  for (Phase at = p;;) {
    Fn fn = nullptr;
    for (const auto& [ph, f] : kSteps) {
      if (ph == at) fn = f;
    }
    if (fn == nullptr) break;
    // Tests arm these by name (common/faults.h) to crash or fail any step.
    Status st = FaultPoint(std::string("before_") + PhaseName(at));
    if (st.ok()) st = (this->*fn)();
    if (!st.ok()) {
      HandleFailure(st);
      return Tick::kIdle;
    }
    consecutive_failures_ = 0;
    if (phase() == at || !ChainsInto(phase())) break;
    at = phase();
  }
  if (IsTerminal(phase())) return Tick::kTerminal;
  return idle_ ? Tick::kIdle : Tick::kProgress;
}

}  // namespace pgshift
