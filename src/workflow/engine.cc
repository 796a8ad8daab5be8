#include "workflow/engine.h"

#include <spdlog/spdlog.h>

#include <random>

#include "workflow/defaults.h"
#include "workflow/rollback_plan.h"
#include "workflow/runner.h"

namespace pgshift {

using json = nlohmann::json;

namespace {

// The record (the migration, the request) is stored; only its note in the
// events could not be written.
void LogUnrecorded(const std::string& id, const Status& st) {
  if (!st.ok()) spdlog::error("[{}] cannot record an event: {}", id, st.ToString());
}

}  // namespace

// progress and result are served as stored: the runner writes them from its
// typed record (MigrationProgress, MigrationResult), keys a newer pgshiftd
// added included.
namespace {

// The way a rollback requested now would go back (status shows it).
std::string RollbackPathOf(const MigrationRecord& m) {
  const auto phase = ParsePhase(m.phase);
  auto result = MigrationResult::FromJson(m.result);
  if (!phase || !result.ok() || IsTerminal(*phase)) return RollbackPathName(RollbackPath::kNone);
  if (*phase == Phase::kRollingBack && result->rollback_path) return *result->rollback_path;
  return RollbackPathName(RollbackPathNow(*phase, *result, /*discard=*/false));
}

}  // namespace

json RecordToJson(const MigrationRecord& m) {
  json queued = json::array();
  for (const auto& a : m.actions) queued.push_back(a.action);
  return {{"id", m.id},
          {"name", m.name},
          {"phase", m.phase},
          {"state", m.state},
          {"created_at", FormatTimeMs(m.created_at_ms)},
          {"updated_at", FormatTimeMs(m.updated_at_ms)},
          {"spec", m.spec},
          {"progress", m.progress},
          {"result", m.result},
          {"findings", m.findings},
          {"error", m.error},
          // The pgshiftd driving it (its lease), "" before the first.
          {"owner", m.lease.owner},
          // The request the engine applies next, and every queued one in order.
          {"pending_action", m.actions.empty() ? "" : m.actions.front().action},
          {"pending_actions", queued},
          {"rollback_path", RollbackPathOf(m)}};
}

Engine::Engine(StateStore& store, EnvFactory& envs, Clock& clock, EngineOptions opts)
    : store_(store), envs_(envs), clock_(clock), opts_(std::move(opts)) {}

Engine::~Engine() { Stop(); }

std::string Engine::NewId() {
  static thread_local std::mt19937_64 rng(std::random_device{}());
  static const char* kHex = "0123456789abcdef";
  std::string id = "m-";
  uint64_t v = rng();
  for (int i = 0; i < 8; ++i) id += kHex[(v >> (i * 4)) & 0xf];
  return id;
}

Status Engine::RunUntilSettled(const std::string& id, int max_steps) {
  PGSHIFT_ASSIGN_OR_RETURN(MigrationRecord rec, store_.Get(id));
  PGSHIFT_ASSIGN_OR_RETURN(MigrationSpec spec, MigrationSpec::FromJson(rec.spec));
  PGSHIFT_ASSIGN_OR_RETURN(auto env, envs_.Make(id, spec));
  std::unique_ptr<MigrationRunner> runner;
  for (int i = 0; i < max_steps; ++i) {
    if (!runner) {
      // Taking the lease is a write: like a step's commit, it may fail (a
      // full disk) and be tried again; another owner's lease ends the run.
      auto lease = store_.AcquireLease(id, opts_.owner, opts_.lease_ttl_ms);
      if (lease.status().code() == Code::kFailedPrecondition) return lease.status();
      if (!lease.ok()) {
        clock_.SleepMs(spec.options.poll_ms);
        continue;
      }
      runner = std::make_unique<MigrationRunner>(store_, clock_, id, std::move(env), spec, *lease);
    }
    auto tick = runner->Step();
    if (tick == MigrationRunner::Tick::kTerminal) return Status::OK();
    if (tick == MigrationRunner::Tick::kLost) {
      return Aborted("migration " + id + " was taken over by another pgshiftd");
    }
    if (tick == MigrationRunner::Tick::kIdle) {
      if (runner->AwaitingOperator()) return Status::OK();
      clock_.SleepMs(runner->poll_ms());
    }
  }
  return Timeout("migration " + id + " did not settle within " + std::to_string(max_steps) +
                 " steps (phase " + (runner ? runner->record().phase : rec.phase) + ")");
}

Result<json> Engine::Create(const json& body) { return CreateLinked(body, {}); }

Result<json> Engine::CreateLinked(const json& body, const MigrationLink& link) {
  PGSHIFT_ASSIGN_OR_RETURN(MigrationSpec spec, MigrationSpec::FromJson(body));
  // The router's hold lease follows the store lease unless the request sets
  // it, so another pgshiftd taking this migration over inside a hold finds
  // the hold still standing (defaults.h).
  const bool hold_lease_given = body.contains("options") && body["options"].is_object() &&
                                body["options"].contains("hold_lease_ms");
  if (!hold_lease_given)
    spec.options.hold_lease_ms = workflow_defaults::HoldLeaseFor(opts_.lease_ttl_ms);
  PGSHIFT_ASSIGN_OR_RETURN(auto live, store_.ListLive());
  for (const auto& m : live) {
    if (m.spec["target"].value("data_dir", "") == spec.target.data_dir) {
      return AlreadyExists("migration " + m.id + " (" + m.name + ") already uses target.data_dir " +
                           spec.target.data_dir);
    }
  }
  MigrationRecord m;
  m.id = NewId();
  // Building the environment validates the router config; a source that
  // cannot be reached now is a mistake in the request, not a job to retry.
  PGSHIFT_ASSIGN_OR_RETURN(auto env, envs_.Make(m.id, spec));
  if (auto info = env->InspectSource(); !info.ok()) {
    return InvalidArgument("cannot reach the source with source.conninfo: " +
                           info.status().message());
  }
  env.reset();
  m.name = spec.name;
  m.spec = spec.ToJson();
  m.phase = PhaseName(Phase::kPreflight);
  m.state = StateName(MigrationState::kRunning);
  m.created_at_ms = m.updated_at_ms = clock_.NowMs();
  PGSHIFT_RETURN_IF_ERROR(store_.InsertLinked(m, link));
  LogUnrecorded(m.id, store_.AppendEvent(m.id,
                                         {0, m.created_at_ms, m.phase, "info",
                                          "migration '" + m.name + "' created", opts_.owner},
                                         kNoFence));
  if (!store_.SingleProcess() &&
      workflow_defaults::HoldStandsAtLeastMs(spec.options.hold_lease_ms) <=
          workflow_defaults::TakeoverBoundMs(opts_.lease_ttl_ms)) {
    LogUnrecorded(
        m.id,
        store_.AppendEvent(
            m.id,
            {0, m.created_at_ms, m.phase, "warning",
             "options.hold_lease_ms " + std::to_string(spec.options.hold_lease_ms) +
                 " is too short for a takeover inside the cutover's hold (another pgshiftd "
                 "takes over within " +
                 std::to_string(workflow_defaults::TakeoverBoundMs(opts_.lease_ttl_ms)) +
                 " ms): if this pgshiftd dies in the hold, the router releases traffic to the "
                 "source and the cutover is aborted or rolled back",
             opts_.owner},
            kNoFence));
  }
  if (autostart_) Launch(m.id);
  return RecordToJson(m);
}

Result<json> Engine::Get(const std::string& id) {
  PGSHIFT_ASSIGN_OR_RETURN(MigrationRecord m, store_.Get(id));
  return RecordToJson(m);
}

Result<json> Engine::List() {
  PGSHIFT_ASSIGN_OR_RETURN(auto all, store_.List());
  json arr = json::array();
  for (const auto& m : all) arr.push_back(RecordToJson(m));
  return arr;
}

Result<json> Engine::ListLive() {
  PGSHIFT_ASSIGN_OR_RETURN(auto live, store_.ListLive());
  json arr = json::array();
  for (const auto& m : live) arr.push_back(RecordToJson(m));
  return arr;
}

Result<json> Engine::Events(const std::string& id) {
  PGSHIFT_RETURN_IF_ERROR(store_.Get(id).status());
  PGSHIFT_ASSIGN_OR_RETURN(auto events, store_.Events(id));
  json arr = json::array();
  for (const auto& e : events) {
    arr.push_back({{"at", FormatTimeMs(e.at_ms)},
                   {"at_ms", e.at_ms},
                   {"phase", e.phase},
                   {"kind", e.kind},
                   {"message", e.message},
                   {"owner", e.owner}});
  }
  return arr;
}

Result<json> Engine::PlanRollbackOf(const MigrationRecord& m, Phase p, bool discard) {
  PGSHIFT_ASSIGN_OR_RETURN(MigrationSpec spec, MigrationSpec::FromJson(m.spec));
  PGSHIFT_ASSIGN_OR_RETURN(MigrationResult result, MigrationResult::FromJson(m.result));
  // An env of its own: the worker's is not shared across threads.
  PGSHIFT_ASSIGN_OR_RETURN(auto env, envs_.Make(m.id, spec));
  return PlanRollback(*env, p, result, discard);
}

Result<json> Engine::Act(const std::string& id, const std::string& action, const json& body) {
  PGSHIFT_ASSIGN_OR_RETURN(MigrationRecord m, store_.Get(id));
  const auto parsed_phase = ParsePhase(m.phase);
  const auto parsed_state = ParseState(m.state);
  if (!parsed_phase || !parsed_state) {
    return FailedPrecondition("migration " + id + " is in phase '" + m.phase + "', state '" +
                              m.state + "', which this pgshiftd does not know");
  }
  const Phase p = *parsed_phase;
  const MigrationState state = *parsed_state;
  if (action == "rollback" && (p == Phase::kFinalize || p == Phase::kFinalized)) {
    return FailedPrecondition("migration " + id + " is " + m.phase +
                              ": the source is retired (or being retired) and its slots are "
                              "dropped, so there is nothing to roll back to");
  }
  if (IsTerminal(p)) {
    return FailedPrecondition("migration " + id + " is already " + m.phase +
                              "; nothing more can be done with it");
  }
  if (!body.is_object()) return InvalidArgument("the request body must be a JSON object");
  auto only = [&](std::initializer_list<const char*> keys) -> Status {
    for (const auto& [k, v] : body.items()) {
      bool ok = false;
      for (const char* a : keys) ok = ok || k == a;
      if (!ok) return InvalidArgument("unknown field '" + k + "' for " + action);
    }
    return Status::OK();
  };
  if (action == "cutover") {
    PGSHIFT_RETURN_IF_ERROR(only({}));
    if (state == MigrationState::kFailed || state == MigrationState::kBlocked) {
      return FailedPrecondition("migration " + id + " is " + m.state + " in " + m.phase + ": " +
                                m.error + " — resolve that first (retry / override / rollback)");
    }
    if (PhaseOrder(p) > PhaseOrder(Phase::kReady)) {
      return FailedPrecondition("cutover is already under way or done (phase " + m.phase + ")");
    }
  } else if (action == "rollback") {
    PGSHIFT_RETURN_IF_ERROR(only({"discard_target_writes", "dry_run"}));
    const bool discard = body.value("discard_target_writes", false);
    const bool dry_run = body.value("dry_run", false);
    // A rollback that failed on its way (the source could not apply the
    // target's writes) may be told to go on without them.
    if (p == Phase::kRollingBack && !dry_run && !(discard && state == MigrationState::kFailed)) {
      return FailedPrecondition(
          "migration " + id + " is already rolling back" +
          (state == MigrationState::kFailed
               ? "; it failed: " + m.error + " — retry, or repeat with discard_target_writes"
               : ""));
    }
    if (dry_run || AfterSwitch(p)) {
      PGSHIFT_ASSIGN_OR_RETURN(json plan, PlanRollbackOf(m, p, discard));
      if (dry_run) return json{{"id", id}, {"dry_run", true}, {"rollback", plan}};
      if (plan.value("needs_confirmation", false)) {
        std::string why;
        for (const auto& x : plan["would_lose"]) why += "; " + x.get<std::string>();
        for (const auto& x : plan["obstacles"]) why += "; " + x.get<std::string>();
        return FailedPrecondition(
            "traffic already runs on the target (phase " + m.phase +
            ") and the source cannot take its writes back: rolling back now loses" + why +
            ". Repeat with {\"discard_target_writes\":true} (CLI: --discard-target-writes) to "
            "confirm");
      }
    }
  } else if (action == "finalize") {
    PGSHIFT_RETURN_IF_ERROR(only({}));
    if (p != Phase::kVerify) {
      return FailedPrecondition(
          "finalize is possible only after the switch, in phase verify "
          "(now " +
          m.phase + ")");
    }
    if (std::string blocking = BlockingSummary(m.findings); !blocking.empty()) {
      return FailedPrecondition("finalize refused while blocking findings stand: " + blocking +
                                " — roll back, or override with a reason");
    }
  } else if (action == "override") {
    PGSHIFT_RETURN_IF_ERROR(only({"finding", "subject", "reason"}));
    if (body.value("finding", "").empty() || body.value("reason", "").empty()) {
      return InvalidArgument("override needs \"finding\" (the finding id) and a \"reason\"");
    }
    bool found = false;
    for (const auto& f : m.findings) found = found || OverrideNames(body, f);
    if (!found) {
      return NotFound(
          "migration " + id + " has no blocking finding '" + body.value("finding", "") + "'" +
          (body.value("subject", "").empty() ? "" : " for '" + body.value("subject", "") + "'"));
    }
  } else if (action == "drop_slot") {
    PGSHIFT_RETURN_IF_ERROR(only({"slot", "reason"}));
    if (body.value("slot", "").empty() || body.value("reason", "").empty()) {
      return InvalidArgument("drop_slot needs \"slot\" (its name) and a \"reason\" (recorded)");
    }
    if (body.value("slot", "") == SlotNameFor(id)) {
      return FailedPrecondition("slot " + body.value("slot", "") +
                                " is this migration's own replica slot; roll back instead");
    }
  } else if (action == "retry") {
    PGSHIFT_RETURN_IF_ERROR(only({}));
    if (state != MigrationState::kFailed && state != MigrationState::kBlocked) {
      return FailedPrecondition("migration " + id + " is " + m.state +
                                ", not failed; nothing to retry");
    }
  } else {
    return InvalidArgument(
        "unknown action '" + action +
        "' (expected cutover, rollback, finalize, override, drop_slot or retry)");
  }
  // Queued behind any request not applied yet (StateStore::RequestAction):
  // a request never replaces another.
  PGSHIFT_RETURN_IF_ERROR(store_.RequestAction(id, action, body));
  LogUnrecorded(id, store_.AppendEvent(
                        id, {0, clock_.NowMs(), m.phase, "info", action + " requested"}, kNoFence));
  // Its owner applies it; when that is another pgshiftd, this Launch is refused.
  if (autostart_) Launch(id);
  return Get(id);
}

}  // namespace pgshift
