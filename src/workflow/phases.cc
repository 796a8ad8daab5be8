// The step of each phase. Each is idempotent: it looks at the world, does
// what is missing, records the outcome and transitions.
#include "workflow/cdc.h"
#include "workflow/runner.h"

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

Status MigrationRunner::Preflight() {
  PGSHIFT_ASSIGN_OR_RETURN(auto findings, env_->PreflightFindings());
  PGSHIFT_ASSIGN_OR_RETURN(auto cdc, PlanCdc(*env_));
  for (auto& f : CdcFindings(cdc, spec_.options.cdc_drain_timeout_ms)) findings.push_back(f);
  SetCdcSlots(cdc);
  json previous = m_.findings;
  m_.findings = json::array();
  for (const auto& f : findings) m_.findings.push_back(WithOverrideOf(previous, f));
  std::string blocking = BlockingSummary(m_.findings);
  if (!blocking.empty()) {
    m_.state = state::kBlocked;
    m_.error = "preflight found blocking problems: " + blocking;
    Save();
    Event("error", m_.error + " (fix them, or override one with a reason, or roll back)");
    idle_ = true;
    return Status::OK();
  }
  Transition(Phase::kProvision, "preflight passed (" + std::to_string(m_.findings.size()) +
                                    " checks); building the target");
  return Status::OK();
}

Status MigrationRunner::Provision() {
  const std::string slot = SlotNameFor(id_);
  PGSHIFT_RETURN_IF_ERROR(env_->EnsurePhysicalSlot(slot));
  if (m_.result.value("slot", "") != slot) {
    m_.result["slot"] = slot;
    Save();
    Event("info", "physical replication slot " + slot + " in place on the source");
  }
  int last_pct = -1;
  PGSHIFT_RETURN_IF_ERROR(env_->CreateReplica(slot, [&](int pct) {
    if (pct == last_pct) return;
    last_pct = pct;
    m_.progress["basebackup_pct"] = pct;
    Save();
  }));
  PGSHIFT_ASSIGN_OR_RETURN(TargetState t, env_->InspectTarget());
  if (!t.running || !t.in_recovery) {
    return FailedPrecondition("the target at " + env_->TargetEndpoint().ToString() +
                              " is not running as a standby after provisioning");
  }
  m_.progress["basebackup_pct"] = 100;
  Transition(Phase::kSync,
             "target running as a physical replica at " + env_->TargetEndpoint().ToString());
  return Status::OK();
}

Status MigrationRunner::SampleLag() {
  PGSHIFT_ASSIGN_OR_RETURN(ReplicationLag lag, env_->Lag(SlotNameFor(id_)));
  const int64_t now = clock_.NowMs();
  json& p = m_.progress;
  const int64_t prev_at = p.value("sample_at_ms", int64_t{0});
  if (prev_at > 0 && now > prev_at) {
    double dt = (now - prev_at) / 1000.0;
    auto prev_src = Lsn::Parse(p.value("source_lsn", "0/0"));
    auto prev_rep = Lsn::Parse(p.value("replay_lsn", "0/0"));
    if (prev_src.ok() && prev_rep.ok()) {
      double src_bps = LsnDiff(lag.source_lsn, *prev_src) / dt;
      double rep_bps = LsnDiff(lag.replay_lsn, *prev_rep) / dt;
      p["source_wal_bps"] = src_bps;
      p["replay_bps"] = rep_bps;
      p["peak_source_wal_bps"] = std::max(p.value("peak_source_wal_bps", 0.0), src_bps);
      p["peak_replay_bps"] = std::max(p.value("peak_replay_bps", 0.0), rep_bps);
    }
  }
  p["sample_at_ms"] = now;
  p["source_lsn"] = lag.source_lsn.ToString();
  p["replay_lsn"] = lag.replay_lsn.ToString();
  p["lag_bytes"] = lag.bytes;
  p["lag_seconds"] = lag.seconds;
  const auto& o = spec_.options;
  bool under = static_cast<int64_t>(lag.bytes) <= o.lag_threshold_bytes &&
               lag.seconds <= o.lag_threshold_seconds;
  int64_t since = p.value("in_sync_since_ms", int64_t{0});
  if (!under) {
    p["in_sync_since_ms"] = 0;
    p["in_sync_ms"] = 0;
  } else {
    if (since == 0) since = now;
    p["in_sync_since_ms"] = since;
    p["in_sync_ms"] = now - since;
  }
  p["sustain_ms"] = o.sustain_ms;
  Save();
  return Status::OK();
}

Status MigrationRunner::Sync() {
  PGSHIFT_RETURN_IF_ERROR(SampleLag());
  MergeFindings(env_->SyncFindings());
  // In sync for the first time: open the cutover's standby sessions and
  // logins now. Their cost (new backends are dear) then falls inside the
  // window that must show the lag staying low, not just before the hold.
  if (m_.progress.value("in_sync_ms", int64_t{0}) > 0 && !prepared_ahead_) {
    prepared_ahead_ = true;
    PrepareAhead();
  }
  if (m_.progress.value("in_sync_ms", int64_t{0}) >= spec_.options.sustain_ms) {
    Transition(Phase::kValidate,
               "replay lag stayed under " + std::to_string(spec_.options.lag_threshold_bytes) +
                   " bytes for " + std::to_string(spec_.options.sustain_ms) + " ms");
    return Status::OK();
  }
  idle_ = true;
  return Status::OK();
}

Status MigrationRunner::Validate() {
  PGSHIFT_ASSIGN_OR_RETURN(TargetState t, env_->InspectTarget());
  if (!t.running || !t.in_recovery) {
    return FailedPrecondition(
        "the target is not running as a standby (running=" + std::to_string(t.running) + ")");
  }
  PGSHIFT_ASSIGN_OR_RETURN(auto findings, env_->ValidateFindings());
  MergeFindings(findings);
  // The sync gate that let us here is the record of sustained lag.
  MergeFindings(
      {{.id = "lag_sustained",
        .severity = checks::Severity::kOk,
        .value = m_.progress.value("in_sync_ms", int64_t{0}),
        .threshold = spec_.options.sustain_ms,
        .message = "replay lag stayed under " + std::to_string(spec_.options.lag_threshold_bytes) +
                   " bytes / " + std::to_string(spec_.options.lag_threshold_seconds) +
                   " s for the whole window (ms)"}});
  std::string blocking = BlockingSummary(m_.findings);
  if (!blocking.empty()) {
    m_.state = state::kBlocked;
    m_.error = "validation found blocking problems: " + blocking;
    Save();
    Event("error", m_.error);
    idle_ = true;
    return Status::OK();
  }
  Transition(Phase::kReady, spec_.options.auto_cutover
                                ? "validated; cutting over automatically"
                                : "validated; waiting for `pgshift migration cutover`");
  return Status::OK();
}

Status MigrationRunner::Ready() {
  PGSHIFT_RETURN_IF_ERROR(SampleLag());
  const bool requested = m_.pending_action == "cutover";
  const int attempts = m_.result.value("cutover_attempts", 0);
  const bool automatic = spec_.options.auto_cutover &&
                         attempts < spec_.options.max_auto_cutover_attempts &&
                         m_.state != state::kWaiting;
  if (!requested && !automatic) {
    SetState(state::kWaiting);
    idle_ = true;
    return Status::OK();
  }
  if (m_.progress.value("in_sync_ms", int64_t{0}) <= 0) {
    // Cutting over while far behind would hold traffic for the whole catch-up.
    idle_ = true;
    return Status::OK();
  }
  if (requested) (void)store_.ClearAction(id_);
  m_.result["cutover_attempts"] = attempts + 1;
  Transition(Phase::kCdcPrepare, requested ? "cutover approved by operator" : "automatic cutover");
  return Status::OK();
}

Status MigrationRunner::CdcPrepare() {
  std::vector<CdcSlot> slots = CdcSlots();
  PGSHIFT_RETURN_IF_ERROR(RecordCdc(*env_, slots));
  SetCdcSlots(slots);
  // Tops up what was opened when the standby got in sync (sessions that
  // arrived since, a database created since); the router answers once its
  // logins are open, so the hold does not start while they are made.
  PrepareAhead();
  Transition(Phase::kQuiesce, "recorded " + std::to_string(slots.size()) +
                                  " logical slot position(s); holding traffic");
  return Status::OK();
}

void MigrationRunner::PrepareAhead() {
  // pgshiftd's own standby sessions (the parity snapshots'), then the
  // router's: sessions log in on the standby (such sessions stay valid
  // through its promotion) and the switch takes those logins instead of
  // making them. A session that changes a setting afterwards gets a fresh
  // login here, or logs in again at the switch. Only an optimisation.
  const int64_t prepare_started = clock_.NowMs();
  env_->PrepareCutover();
  const int64_t prewarm_started = clock_.NowMs();
  if (Status pw = env_->router().Prewarm(env_->TargetEndpoint()); !pw.ok()) {
    Event("warning",
          "the router did not open logins on the target ahead of the switch: " + pw.message());
  }
  m_.result["prepare_ms"] = prewarm_started - prepare_started;
  m_.result["prewarm_ms"] = clock_.NowMs() - prewarm_started;
}

Status MigrationRunner::Quiesce() {
  if (!m_.result.contains("hold_started_ms")) {
    m_.result["hold_started_ms"] = clock_.NowMs();
    Save();
  }
  PGSHIFT_RETURN_IF_ERROR(env_->router().Hold(spec_.options.hold_timeout_ms));
  Event("info", "traffic held at transaction boundaries (" + env_->router().Kind() + ")");
  // The router's held sessions cannot write and never use their source
  // backend again: the fence may leave those alive instead of terminating
  // them and waiting for their exit inside the hold. Only an optimisation:
  // without the list the fence terminates every client session.
  const Endpoint source = env_->SourceEndpoint();
  auto held = env_->router().HeldBackendPids(source);
  if (!held.ok()) {
    Event("warning",
          "the router did not list its held sessions' backends, so the fence "
          "terminates them all: " +
              held.status().message());
  }
  const int64_t fence_started = clock_.NowMs();
  PGSHIFT_ASSIGN_OR_RETURN(FenceResult fenced,
                           env_->FenceSource(held.ok() ? *held : HeldBackends{.server = source}));
  m_.result["fence_ms"] = clock_.NowMs() - fence_started;
  m_.result["fence_terminated"] = fenced.terminated;
  m_.result["fence_exempted"] = fenced.exempted;
  Event("info", "source fenced: new connections refused, " + std::to_string(fenced.terminated) +
                    " client session(s) terminated, " + std::to_string(fenced.exempted) +
                    " idle session(s) held by the router left alone");
  PGSHIFT_ASSIGN_OR_RETURN(Lsn final_lsn, env_->WriteFinalMarker("pgshift final " + id_));
  m_.result["final_lsn"] = final_lsn.ToString();
  m_.result["fenced_at_ms"] = clock_.NowMs();
  Transition(Phase::kDrain, "final source LSN " + final_lsn.ToString());
  return Status::OK();
}

Status MigrationRunner::Drain() {
  // Recorded with the phase change, or by the Save before polling again.
  if (!m_.result.contains("drain_started_ms")) m_.result["drain_started_ms"] = clock_.NowMs();
  PGSHIFT_ASSIGN_OR_RETURN(Lsn final_lsn, Lsn::Parse(m_.result.value("final_lsn", "")));
  // Traffic is held: look again every few ms for a short while rather than
  // at the engine's poll interval.
  TargetState t;
  const int64_t spin_until = clock_.NowMs() + 1000;
  do {
    PGSHIFT_ASSIGN_OR_RETURN(t, env_->InspectTarget());
    if (t.replay_lsn >= final_lsn) break;
    clock_.SleepMs(2);
  } while (clock_.NowMs() < spin_until);
  m_.progress["replay_lsn"] = t.replay_lsn.ToString();
  if (t.replay_lsn >= final_lsn) {
    if (spec_.options.parity_before_promote_ms > 0) {
      PGSHIFT_ASSIGN_OR_RETURN(auto found,
                               env_->QuickParity(spec_.options.parity_before_promote_ms));
      MergeFindings(found);
      std::string differ;
      for (const auto& f : found) {
        if (f.Blocks()) differ += (differ.empty() ? "" : ", ") + f.subject;
      }
      if (!differ.empty()) {
        return FailedPrecondition(
            "pre-promotion parity: the standby differs from the fenced "
            "source in " +
            differ + "; not promoting");
      }
    }
    std::vector<CdcSlot> slots = CdcSlots();
    PGSHIFT_RETURN_IF_ERROR(
        DrainCdc(*env_, clock_, slots, final_lsn, spec_.options.cdc_drain_timeout_ms));
    SetCdcSlots(slots);
    if (!slots.empty()) {
      Event("info", std::to_string(slots.size()) +
                        " CDC consumer(s) confirmed the final LSN and were paused");
    }
    Transition(Phase::kPromote, "target replayed the final LSN " + final_lsn.ToString() + " (at " +
                                    t.replay_lsn.ToString() + ")");
    return Status::OK();
  }
  const int64_t waited = clock_.NowMs() - m_.result.value("drain_started_ms", int64_t{0});
  if (waited > spec_.options.drain_timeout_ms) {
    return Timeout("the target replayed only up to " + t.replay_lsn.ToString() + " of " +
                   final_lsn.ToString() + " within " +
                   std::to_string(spec_.options.drain_timeout_ms) + " ms");
  }
  Save();
  idle_ = true;
  return Status::OK();
}

Status MigrationRunner::Promote() {
  PGSHIFT_ASSIGN_OR_RETURN(int timeline, env_->PromoteTarget());
  m_.result["timeline"] = timeline;
  m_.result["promoted_at_ms"] = clock_.NowMs();
  Transition(Phase::kSnapshot, "target promoted, timeline " + std::to_string(timeline));
  return Status::OK();
}

Status MigrationRunner::Snapshot() {
  if (spec_.options.parity) {
    Status st = env_->StartParityCheck();
    if (st.ok()) {
      m_.result["parity_started"] = true;
      Event("info", "target snapshot exported at the promotion point; data parity check started");
    } else {
      // Parity verifies the cutover; it is not worth holding traffic over.
      MergeFindings({{.id = "data_parity",
                      .severity = checks::Severity::kWarning,
                      .message = "could not export a snapshot of the target, so the data parity "
                                 "check did not run: " +
                                 st.message(),
                      .remedy = "compare the source and target by hand before finalizing"}});
      Event("warning", "data parity check not started: " + st.message());
    }
  }
  Transition(Phase::kCdcRecreate, "recreating the logical slots on the target");
  return Status::OK();
}

Status MigrationRunner::CdcRecreate() {
  // Before any client write reaches the target: see workflow/cdc.h for why
  // the consumers then miss nothing and see nothing twice.
  std::vector<CdcSlot> slots = CdcSlots();
  PGSHIFT_RETURN_IF_ERROR(RecreateCdc(*env_, slots));
  SetCdcSlots(slots);
  Transition(Phase::kSwitch, std::to_string(slots.size()) +
                                 " logical slot(s) on the target; releasing traffic to it");
  return Status::OK();
}

std::vector<CdcSlot> MigrationRunner::CdcSlots() const {
  auto slots = CdcSlotsFromJson(m_.result.value("cdc_slots", json::array()));
  return slots.ok() ? *slots : std::vector<CdcSlot>{};
}

void MigrationRunner::SetCdcSlots(const std::vector<CdcSlot>& slots) {
  m_.result["cdc_slots"] = CdcSlotsToJson(slots);
}

bool MigrationRunner::CdcSettled() {
  std::vector<CdcSlot> slots = CdcSlots();
  auto waiting = ObserveCdcOnTarget(*env_, slots);
  if (!waiting.ok()) {
    Event("warning", "cannot read the carried slots on the target: " + waiting.status().message());
    return false;
  }
  SetCdcSlots(slots);
  std::vector<checks::Finding> found;
  for (const auto& s : slots) {
    if (s.state < CdcSlotState::kRecreated) continue;
    const bool advanced = s.state == CdcSlotState::kAdvanced;
    found.push_back(
        {.id = "cdc_slot_advanced",
         .severity = advanced ? checks::Severity::kOk : checks::Severity::kBlocking,
         .subject = s.name,
         .value = s.target_confirmed_lsn,
         .threshold = s.recreated_lsn,
         .message = advanced ? "the consumer of " + s.name + " reads from the target"
                             : "the consumer of " + s.name +
                                   " has not confirmed anything on the target since the slot "
                                   "was recreated there; finalize waits, so its source slot "
                                   "is kept",
         .remedy = advanced ? ""
                            : "check that the consumer reconnected (through the router), or "
                              "override with a reason to finalize without it"});
  }
  MergeFindings(found);
  Save();
  for (const auto& f : m_.findings) {
    if (f.value("id", "") == "cdc_slot_advanced" && f.value("severity", "") == "blocking" &&
        !f.value("overridden", false)) {
      return false;
    }
  }
  return true;
}

bool MigrationRunner::ParitySettled() {
  if (!spec_.options.parity || m_.result.value("parity_done", false)) {
    return !m_.result.value("parity_blocked", false) || BlockingSummary(m_.findings).empty();
  }
  if (!m_.result.value("parity_started", false)) return true;
  ParityState ps = env_->Parity();
  if (!ps.started) {
    MergeFindings({{.id = "data_parity",
                    .severity = checks::Severity::kWarning,
                    .message = "the data parity check was interrupted (pgshiftd restarted) and "
                               "the promotion snapshot is gone",
                    .remedy = "compare the source and target by hand before finalizing"}});
    m_.result["parity_done"] = true;
    Save();
    return true;
  }
  if (!ps.done) {
    m_.progress["parity"] = {{"tables_total", ps.tables_total},
                             {"tables_done", ps.tables_done},
                             {"current", ps.current}};
    Save();
    return false;
  }
  MergeFindings(ps.findings);
  m_.result["parity_done"] = true;
  m_.progress["parity"] = {{"tables_total", ps.tables_total}, {"tables_done", ps.tables_done}};
  std::string blocking = BlockingSummary(m_.findings);
  if (!blocking.empty()) {
    m_.result["parity_blocked"] = true;
    m_.state = state::kBlocked;
    m_.error = "finalize refused: " + blocking +
               " (roll back with discard_target_writes, or override with a reason)";
    Save();
    Event("error", m_.error);
    return false;
  }
  Save();
  Event("info",
        "data parity: source and target match (" + std::to_string(ps.tables_done) + " tables)");
  return true;
}

Status MigrationRunner::Switch() {
  PGSHIFT_RETURN_IF_ERROR(env_->router().SwitchTo(env_->TargetEndpoint()));
  const int64_t now = clock_.NowMs();
  m_.result["switched_at_ms"] = now;
  const int64_t hold_ms = now - m_.result.value("hold_started_ms", now);
  m_.result["hold_ms"] = hold_ms;
  Transition(Phase::kVerify, "traffic switched to the target " + env_->TargetEndpoint().ToString() +
                                 " after a " + std::to_string(hold_ms) + " ms hold");
  return Status::OK();
}

Status MigrationRunner::Verify() {
  if (!m_.result.value("verified", false)) {
    if (!m_.result.contains("verify_started_ms")) {
      m_.result["verify_started_ms"] = clock_.NowMs();
      Save();
    }
    PGSHIFT_RETURN_IF_ERROR(env_->ProbeTargetWrite());
    if (env_->router().Kind() != "none") {
      PGSHIFT_ASSIGN_OR_RETURN(Endpoint cur, env_->router().Current());
      if (!(cur == env_->TargetEndpoint())) {
        return FailedPrecondition("the route points at " + cur.ToString() + ", not the target " +
                                  env_->TargetEndpoint().ToString());
      }
    }
    m_.result["verify_probes"] = m_.result.value("verify_probes", 0) + 1;
    const int64_t elapsed = clock_.NowMs() - m_.result.value("verify_started_ms", int64_t{0});
    if (elapsed < spec_.options.verify_ms) {
      Save();
      idle_ = true;
      return Status::OK();
    }
    m_.result["verified"] = true;
    Save();
    Event("info", "post-cutover health window passed (" +
                      std::to_string(m_.result.value("verify_probes", 0)) + " write probes)");
  }
  if (!ParitySettled() || !CdcSettled()) {
    idle_ = true;
    return Status::OK();
  }
  if (spec_.options.auto_finalize || m_.pending_action == "finalize") {
    if (m_.pending_action == "finalize") (void)store_.ClearAction(id_);
    Transition(Phase::kFinalize, "finalizing: dropping the source's slot and retiring it");
    return Status::OK();
  }
  SetState(state::kWaiting);
  idle_ = true;
  return Status::OK();
}

Status MigrationRunner::Finalize() {
  // The carried slots' source halves: their consumers read from the target.
  for (const auto& s : CdcSlots()) PGSHIFT_RETURN_IF_ERROR(env_->DropSlot(s.name));
  PGSHIFT_RETURN_IF_ERROR(env_->DropSlot(SlotNameFor(id_)));
  PGSHIFT_RETURN_IF_ERROR(env_->RetireSource());
  m_.result["finalized_at_ms"] = clock_.NowMs();
  Transition(Phase::kFinalized, "migration finalized; the source is retired (stopped, fenced)");
  return Status::OK();
}

Status MigrationRunner::RollingBack() {
  Router& router = env_->router();
  if (router.Kind() != "none") {
    auto cur = router.Current();
    if (cur.ok() && *cur == env_->TargetEndpoint()) {
      Status held = router.Hold(spec_.options.hold_timeout_ms);
      if (!held.ok())
        Event("warning", "could not hold traffic before routing back: " + held.message());
    }
    PGSHIFT_RETURN_IF_ERROR(router.Repoint(env_->SourceEndpoint()));
    // Streaming CDC consumers never reach a boundary on their own: end their
    // sessions so they reconnect (after the release) to the source's slots.
    if (!CdcSlots().empty()) {
      auto paused = router.PauseReplication();
      if (!paused.ok()) {
        Event("warning", "could not pause the CDC consumers: " + paused.status().message());
      }
    }
  }
  PGSHIFT_RETURN_IF_ERROR(env_->UnfenceSource());
  PGSHIFT_RETURN_IF_ERROR(router.Release());
  // Stop the standby first so it does not reconnect to the slot being dropped.
  PGSHIFT_RETURN_IF_ERROR(env_->StopTarget());
  PGSHIFT_RETURN_IF_ERROR(env_->DropSlot(SlotNameFor(id_)));
  m_.result["rolled_back_at_ms"] = clock_.NowMs();
  Transition(Phase::kRolledBack, "rolled back: traffic on the source " +
                                     env_->SourceEndpoint().ToString() +
                                     ", source unfenced, target stopped (data directory kept)");
  return Status::OK();
}

}  // namespace pgshift
