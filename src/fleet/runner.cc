#include "fleet/runner.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "common/faults.h"
#include "fleet/report.h"
#include "model/phase.h"
#include "model/state.h"

namespace pgshift::fleet {

using nlohmann::json;

namespace {

constexpr const char* kNoInventory =
    "pgshiftd has no inventory: start it with --registry FILE to plan fleet runs";

// A stored run as the API shows it: its document, who drives it and a
// request waiting for that driver.
Result<json> StoredRunJson(const FleetRunRecord& rec, FleetRun* run) {
  PGSHIFT_ASSIGN_OR_RETURN(*run, FleetRun::FromJson(rec.doc));
  json out = run->ToJson();
  out["driver"] = rec.lease.owner;
  out["request"] = rec.request;
  return out;
}

// FailedPrecondition unless a run in `status` may become `to` (from `from`).
Status CheckTransition(const std::string& id, RunStatus status, RunStatus from, RunStatus to) {
  if (status == from) return Status::OK();
  return FailedPrecondition("fleet run " + id + " is " + RunStatusName(status) + "; only a " +
                            RunStatusName(from) + " run can become " + RunStatusName(to));
}

// Why the cutover of `d` must wait now, or "" when it may go.
std::string CutoverHold(const FleetRun& run, const DbRun& d, int64_t now_ms) {
  if (run.status == RunStatus::kPaused) return "held: the fleet run is paused";
  if (run.status == RunStatus::kStopped) return "held: the fleet run stopped (" + run.reason + ")";
  if (run.plan.request.approve_outside_window) return "";
  for (const auto& pd : run.plan.waves[d.wave].databases) {
    if (pd.name != d.name || !pd.window) continue;
    auto open = WindowOpen(*pd.window, now_ms);
    if (!open.ok()) return "held: " + open.status().message();
    if (!*open) {
      return "held: outside the maintenance window (" + pd.window->start + "-" + pd.window->end +
             " " + pd.window->timezone + ")";
    }
  }
  return "";
}

struct Observed {
  size_t index;
  DbStatus status;
  std::string error;
  std::string cutover;
};

}  // namespace

FleetRunner::FleetRunner(MigrationService& svc, Starter& starter, FleetRunStore& store,
                         const inventory::Registry* registry, Clock& clock, FleetRunnerOptions opts)
    : svc_(svc),
      starter_(starter),
      store_(store),
      registry_(registry),
      clock_(clock),
      opts_(std::move(opts)) {}

FleetRunner::~FleetRunner() { Stop(); }

Status FleetRunner::Load() {
  std::lock_guard tick(tick_mu_);
  return TakeOver();
}

json FleetRunner::Options(const FleetRequest& r) {
  json o = r.options;
  o["auto_cutover"] = false;  // the runner requests each cutover inside the window
  if (!o.contains("auto_finalize")) o["auto_finalize"] = true;
  return o;
}

Result<json> FleetRunner::Plan(const json& request) const {
  if (!registry_) return FailedPrecondition(kNoInventory);
  PGSHIFT_ASSIGN_OR_RETURN(auto req, FleetRequest::FromJson(request));
  PGSHIFT_ASSIGN_OR_RETURN(auto plan, BuildPlan(req, *registry_, opts_.sizes));
  return plan.ToJson();
}

Result<json> FleetRunner::Create(const json& request) {
  if (!registry_) return FailedPrecondition(kNoInventory);
  PGSHIFT_ASSIGN_OR_RETURN(auto req, FleetRequest::FromJson(request));
  PGSHIFT_ASSIGN_OR_RETURN(auto plan, BuildPlan(req, *registry_, opts_.sizes));
  const int64_t now = clock_.NowMs();
  FleetRun run = FleetRun::New("", std::move(plan), now);
  // Ids are unique in the store: another pgshiftd may have made the same one.
  for (;;) {
    {
      std::lock_guard lock(mu_);
      run.id = "f-" + std::to_string(now / 1000) + "-" + std::to_string(++next_id_);
    }
    Status st = store_.InsertFleetRun({.id = run.id, .created_at_ms = now, .doc = run.ToJson()});
    if (st.ok()) break;
    if (st.code() != Code::kAlreadyExists) return st;
  }
  const int64_t asked = MonotonicMs();
  auto lease = store_.AcquireFleetLease(run.id, opts_.owner, opts_.lease_ttl_ms);
  json out = run.ToJson();
  // Not taken (another pgshiftd was faster): that one drives it.
  if (lease.ok()) Adopt(std::move(run), *lease, asked);
  return out;
}

Result<json> FleetRunner::Get(const std::string& id) {
  PGSHIFT_ASSIGN_OR_RETURN(auto rec, store_.GetFleetRun(id));
  FleetRun run;
  PGSHIFT_ASSIGN_OR_RETURN(json out, StoredRunJson(rec, &run));
  out["report"] = BuildReport(run, svc_);
  return out;
}

Result<json> FleetRunner::List() {
  PGSHIFT_ASSIGN_OR_RETURN(auto records, store_.ListFleetRuns());
  json out = json::array();
  for (const auto& rec : records) {
    FleetRun run;
    auto j = StoredRunJson(rec, &run);
    if (j.ok()) out.push_back(std::move(*j));
  }
  return out;
}

Result<json> FleetRunner::Pause(const std::string& id) {
  return Request(id, RunStatus::kRunning, RunStatus::kPaused, kPauseRequest);
}

Result<json> FleetRunner::Resume(const std::string& id) {
  return Request(id, RunStatus::kPaused, RunStatus::kRunning, kResumeRequest);
}

Result<json> FleetRunner::Request(const std::string& id, RunStatus from, RunStatus to,
                                  const char* request) {
  {
    std::lock_guard lock(mu_);
    auto it = runs_.find(id);
    if (it != runs_.end() && !it->second.lost) {
      // Driven here: applied now.
      PGSHIFT_RETURN_IF_ERROR(CheckTransition(id, it->second.run.status, from, to));
    } else {
      it = runs_.end();
    }
    if (it != runs_.end()) {
      FleetRun next = it->second.run;
      next.status = to;
      Settle(next);
      PGSHIFT_RETURN_IF_ERROR(SaveLocked(id, next));
      it->second.run = next;
      json out = next.ToJson();
      out["driver"] = opts_.owner;
      out["request"] = "";
      return out;
    }
  }
  // Driven elsewhere (or by nobody yet): left for the driver.
  PGSHIFT_ASSIGN_OR_RETURN(auto rec, store_.GetFleetRun(id));
  FleetRun run;
  PGSHIFT_ASSIGN_OR_RETURN(json out, StoredRunJson(rec, &run));
  PGSHIFT_RETURN_IF_ERROR(CheckTransition(id, run.status, from, to));
  PGSHIFT_RETURN_IF_ERROR(store_.RequestFleetRun(id, request));
  out["request"] = request;
  return out;
}

Result<json> FleetRunner::SetStatus(const std::string& id, RunStatus from, RunStatus to,
                                    int64_t applied_request) {
  std::lock_guard lock(mu_);
  auto it = runs_.find(id);
  if (it == runs_.end() || it->second.lost)
    return NotFound("fleet run '" + id + "' not driven here");
  FleetRun& run = it->second.run;
  PGSHIFT_RETURN_IF_ERROR(CheckTransition(id, run.status, from, to));
  FleetRun next = run;
  next.status = to;
  Settle(next);
  PGSHIFT_RETURN_IF_ERROR(SaveLocked(id, next, applied_request));
  run = next;
  return run.ToJson();
}

Status FleetRunner::SaveLocked(const std::string& id, FleetRun& run, int64_t applied_request) {
  auto it = runs_.find(id);
  if (it == runs_.end() || it->second.lost) {
    return Aborted("fleet run " + id + " is no longer driven by " + opts_.owner);
  }
  run.updated_ms = clock_.NowMs();
  Status st = store_.UpdateFleetRun(
      {.id = id, .created_at_ms = run.created_ms, .doc = run.ToJson(), .lease = it->second.lease},
      applied_request);
  if (IsLeaseLost(st)) {
    spdlog::warn("fleet: {}; this pgshiftd stops driving it", st.message());
    it->second.lost = true;
  }
  return st;
}

std::vector<std::string> FleetRunner::ActiveIds() {
  std::lock_guard lock(mu_);
  std::vector<std::string> ids;
  const int64_t now = MonotonicMs();
  for (const auto& [id, h] : runs_) {
    // A lease not known valid (no renewal lately, as after a pause): the
    // run waits for the keeper, which may find it lost.
    if (!h.lost && h.valid_until_ms > now) ids.push_back(id);
  }
  return ids;
}

void FleetRunner::Tick() {
  std::lock_guard tick(tick_mu_);
  if (Status st = TakeOver(); !st.ok()) {
    spdlog::warn("fleet: cannot read the fleet runs: {}", st.message());
    return;
  }
  for (const auto& id : ActiveIds()) {
    Poll(id);
    StartNext(id);
  }
  Sweep();
}

void FleetRunner::Settle(FleetRun& run) {
  if (run.status == RunStatus::kRunning || run.status == RunStatus::kPaused) {
    const int limit = run.plan.request.stop_after;
    for (size_t w = 0; w < run.plan.waves.size(); ++w) {
      int bad = 0;
      std::string names;
      for (const auto& d : run.dbs) {
        if (d.wave != w || !CountsAgainstWave(d.status)) continue;
        ++bad;
        names += (names.empty() ? "" : ", ") + d.name + " " + DbStatusName(d.status);
      }
      if (bad >= limit) {
        run.status = RunStatus::kStopped;
        run.reason = "wave " + run.plan.waves[w].name + ": " + std::to_string(bad) +
                     " failure(s) or rollback(s) (" + names + ") reached stop_after " +
                     std::to_string(limit) + "; no new migration starts";
        return;
      }
    }
  }
  const bool all_done =
      std::all_of(run.dbs.begin(), run.dbs.end(), [](const DbRun& d) { return IsDone(d.status); });
  if (all_done && run.status == RunStatus::kRunning) run.status = RunStatus::kCompleted;
}

void FleetRunner::Poll(const std::string& id) {
  FleetRun probe;
  {
    std::lock_guard lock(mu_);
    probe = runs_.at(id).run;
  }
  // First every answer, so the stop rule sees this tick's failures before
  // any cutover of the same tick is requested.
  std::vector<Observed> seen;
  std::vector<size_t> ready;
  for (size_t i = 0; i < probe.dbs.size(); ++i) {
    DbRun& d = probe.dbs[i];
    if (d.status != DbStatus::kRunning) continue;
    auto m = svc_.Get(d.migration_id);
    if (!m.ok()) {
      // NotFound is final; anything else is transient, asked again next tick.
      if (m.status().code() != Code::kNotFound) continue;
      d.status = DbStatus::kFailed;
      d.error = m.status().message();
    } else {
      const std::string state = m->value("state", "");
      if (state == StateName(MigrationState::kFinalized)) {
        d.status = DbStatus::kSucceeded;
      } else if (state == StateName(MigrationState::kRolledBack)) {
        d.status = DbStatus::kRolledBack;
      } else if (state == StateName(MigrationState::kFailed)) {
        d.status = DbStatus::kFailed;
        d.error = m->value("error", "");
      } else if (m->value("phase", "") == PhaseName(Phase::kReady) &&
                 state == StateName(MigrationState::kWaiting)) {
        ready.push_back(i);
      }
    }
    seen.push_back({i, d.status, d.error, d.cutover});
  }
  Settle(probe);
  for (size_t i : ready) {
    DbRun& d = probe.dbs[i];
    std::string hold = CutoverHold(probe, d, clock_.NowMs());
    if (hold.empty()) {
      auto acted = svc_.Act(d.migration_id, "cutover", json::object());
      hold = acted.ok() ? "requested" : "held: " + acted.status().message();
    }
    for (auto& o : seen) {
      if (o.index == i) o.cutover = hold;
    }
  }
  if (seen.empty()) return;
  std::lock_guard lock(mu_);
  FleetRun next = runs_.at(id).run;
  for (const auto& o : seen) {
    DbRun& d = next.dbs[o.index];
    if (d.status != DbStatus::kRunning) continue;
    d.status = o.status;
    d.error = o.error;
    d.cutover = o.cutover;
    if (IsDone(d.status)) d.ended_ms = clock_.NowMs();
  }
  Settle(next);
  if (SaveLocked(id, next).ok()) runs_.at(id).run = next;
}

std::string StartKey(const std::string& run_id, const std::string& database) {
  return run_id + "/" + database;
}

void FleetRunner::StartNext(const std::string& id) {
  json options;
  {
    std::lock_guard lock(mu_);
    FleetRun next = runs_.at(id).run;
    Settle(next);
    if (next.status == RunStatus::kRunning) {
      const FleetRequest& req = next.plan.request;
      int live_all = others_live_;
      for (const auto& [rid, h] : runs_) {
        for (const auto& d : h.run.dbs) live_all += IsLive(d.status);
      }
      // The current wave: the first with a database not done.
      auto first = std::find_if(next.dbs.begin(), next.dbs.end(),
                                [](const DbRun& d) { return !IsDone(d.status); });
      if (first != next.dbs.end()) {
        const size_t wave = first->wave;
        int live_wave = 0;
        for (const auto& d : next.dbs) live_wave += (d.wave == wave && IsLive(d.status));
        int room = std::min(req.max_concurrent - live_all, req.wave_concurrency - live_wave);
        for (size_t i = 0; i < next.dbs.size() && room > 0; ++i) {
          DbRun& d = next.dbs[i];
          if (d.wave != wave || d.status != DbStatus::kPending) continue;
          d.status = DbStatus::kStarting;
          d.started_ms = clock_.NowMs();
          --room;
        }
      }
    }
    options = Options(next.plan.request);
    if (!SaveLocked(id, next).ok()) return;
    runs_.at(id).run = next;
  }
  // Every database starting: those just picked, and those a dead driver
  // (or a save that failed) left starting, whose migration may exist.
  for (size_t i : Starting(id)) {
    std::string name;
    bool running;
    {
      std::lock_guard lock(mu_);
      const FleetRun& run = runs_.at(id).run;
      name = run.dbs[i].name;
      // Stopped (an earlier start failed) or paused meanwhile: only a
      // migration made already is recorded, none is created.
      running = run.status == RunStatus::kRunning;
    }
    const std::string key = StartKey(id, name);
    Result<json> created = json::object();
    if (running) {
      created = starter_.Start(name, options, key);
      // The crash this key is for: made, not yet recorded in the run.
      if (created.ok()) (void)FaultPoint("fleet_started_unrecorded");
    } else {
      auto made = starter_.StartedWith(key);
      if (!made.ok()) continue;  // asked again next tick
      if (!made->empty()) created = json{{"id", *made}};
    }
    std::lock_guard lock(mu_);
    FleetRun next = runs_.at(id).run;
    DbRun& d = next.dbs[i];
    if (created.ok() && created->contains("id")) {
      d.status = DbStatus::kRunning;
      d.migration_id = created->value("id", "");
    } else if (created.ok()) {
      d.status = DbStatus::kPending;
      d.started_ms = 0;
    } else {
      d.status = DbStatus::kFailed;
      d.error = "not started: " + created.status().message();
      d.ended_ms = clock_.NowMs();
    }
    Settle(next);
    if (SaveLocked(id, next).ok()) runs_.at(id).run = next;
  }
}

std::vector<size_t> FleetRunner::Starting(const std::string& id) {
  std::lock_guard lock(mu_);
  std::vector<size_t> out;
  const FleetRun& run = runs_.at(id).run;
  for (size_t i = 0; i < run.dbs.size(); ++i) {
    if (run.dbs[i].status == DbStatus::kStarting) out.push_back(i);
  }
  return out;
}

}  // namespace pgshift::fleet
