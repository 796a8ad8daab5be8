#include "fleet/runner.h"

#include <algorithm>

#include "fleet/report.h"
#include "model/phase.h"
#include "model/state.h"

namespace pgshift::fleet {

using nlohmann::json;

namespace {

constexpr const char* kNoInventory =
    "pgshiftd has no inventory: start it with --registry FILE to plan fleet runs";

bool Live(DbStatus s) { return s == DbStatus::kStarting || s == DbStatus::kRunning; }

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

FleetRunner::FleetRunner(MigrationService& svc, Starter& starter, FleetStore& store,
                         const inventory::Registry* registry, Clock& clock)
    : svc_(svc), starter_(starter), store_(store), registry_(registry), clock_(clock) {}

FleetRunner::~FleetRunner() { Stop(); }

Status FleetRunner::Load() {
  PGSHIFT_ASSIGN_OR_RETURN(auto runs, store_.LoadAll());
  std::lock_guard lock(mu_);
  for (auto& r : runs) {
    // A create interrupted by the restart is tried again.
    for (auto& d : r.dbs) {
      if (d.status == DbStatus::kStarting) d.status = DbStatus::kPending;
    }
    runs_[r.id] = std::move(r);
  }
  next_id_ = static_cast<int64_t>(runs_.size());
  return Status::OK();
}

void FleetRunner::Start(int64_t poll_ms) {
  {
    std::lock_guard lock(stop_mu_);
    stopping_ = false;
  }
  thread_ = std::thread([this, poll_ms] {
    std::unique_lock lock(stop_mu_);
    while (!stopping_) {
      lock.unlock();
      Tick();
      lock.lock();
      stop_cv_.wait_for(lock, std::chrono::milliseconds(poll_ms), [this] { return stopping_; });
    }
  });
}

void FleetRunner::Stop() {
  {
    std::lock_guard lock(stop_mu_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
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
  PGSHIFT_ASSIGN_OR_RETURN(auto plan, BuildPlan(req, *registry_));
  return plan.ToJson();
}

Result<json> FleetRunner::Create(const json& request) {
  if (!registry_) return FailedPrecondition(kNoInventory);
  PGSHIFT_ASSIGN_OR_RETURN(auto req, FleetRequest::FromJson(request));
  PGSHIFT_ASSIGN_OR_RETURN(auto plan, BuildPlan(req, *registry_));
  std::lock_guard lock(mu_);
  const int64_t now = clock_.NowMs();
  std::string id;
  do {
    id = "f-" + std::to_string(now / 1000) + "-" + std::to_string(++next_id_);
  } while (runs_.count(id));
  FleetRun run = FleetRun::New(id, std::move(plan), now);
  PGSHIFT_RETURN_IF_ERROR(SaveLocked(run));
  runs_[id] = run;
  return run.ToJson();
}

Result<json> FleetRunner::Get(const std::string& id) {
  FleetRun copy;
  {
    std::lock_guard lock(mu_);
    auto it = runs_.find(id);
    if (it == runs_.end()) return NotFound("fleet run '" + id + "' not found");
    copy = it->second;
  }
  json out = copy.ToJson();
  out["report"] = BuildReport(copy, svc_);
  return out;
}

json FleetRunner::List() {
  std::lock_guard lock(mu_);
  json out = json::array();
  for (const auto& [id, r] : runs_) out.push_back(r.ToJson());
  std::sort(out.begin(), out.end(), [](const json& a, const json& b) {
    return a.value("created_ms", int64_t{0}) < b.value("created_ms", int64_t{0});
  });
  return out;
}

Result<json> FleetRunner::Pause(const std::string& id) {
  return SetStatus(id, RunStatus::kRunning, RunStatus::kPaused);
}

Result<json> FleetRunner::Resume(const std::string& id) {
  return SetStatus(id, RunStatus::kPaused, RunStatus::kRunning);
}

Result<json> FleetRunner::SetStatus(const std::string& id, RunStatus from, RunStatus to) {
  std::lock_guard lock(mu_);
  auto it = runs_.find(id);
  if (it == runs_.end()) return NotFound("fleet run '" + id + "' not found");
  FleetRun& run = it->second;
  if (run.status != from) {
    return FailedPrecondition("fleet run " + id + " is " + RunStatusName(run.status) + "; only a " +
                              RunStatusName(from) + " run can become " + RunStatusName(to));
  }
  FleetRun next = run;
  next.status = to;
  Settle(next);
  PGSHIFT_RETURN_IF_ERROR(SaveLocked(next));
  run = next;
  return run.ToJson();
}

Status FleetRunner::SaveLocked(FleetRun& run) {
  run.updated_ms = clock_.NowMs();
  return store_.Save(run);
}

std::vector<std::string> FleetRunner::ActiveIds() {
  std::lock_guard lock(mu_);
  std::vector<std::string> ids;
  for (const auto& [id, r] : runs_) {
    const bool live =
        std::any_of(r.dbs.begin(), r.dbs.end(), [](const DbRun& d) { return Live(d.status); });
    if (r.status == RunStatus::kRunning || live) ids.push_back(id);
  }
  return ids;
}

void FleetRunner::Tick() {
  std::lock_guard tick(tick_mu_);
  for (const auto& id : ActiveIds()) {
    Poll(id);
    StartNext(id);
  }
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
    probe = runs_.at(id);
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
  FleetRun next = runs_.at(id);
  for (const auto& o : seen) {
    DbRun& d = next.dbs[o.index];
    if (d.status != DbStatus::kRunning) continue;
    d.status = o.status;
    d.error = o.error;
    d.cutover = o.cutover;
    if (IsDone(d.status)) d.ended_ms = clock_.NowMs();
  }
  Settle(next);
  if (SaveLocked(next).ok()) runs_[id] = next;
}

void FleetRunner::StartNext(const std::string& id) {
  std::vector<size_t> picked;
  json options;
  {
    std::lock_guard lock(mu_);
    FleetRun next = runs_.at(id);
    Settle(next);
    if (next.status == RunStatus::kRunning) {
      const FleetRequest& req = next.plan.request;
      int live_all = 0;
      for (const auto& [rid, r] : runs_) {
        for (const auto& d : r.dbs) live_all += Live(d.status);
      }
      // The current wave: the first with a database not done.
      auto first = std::find_if(next.dbs.begin(), next.dbs.end(),
                                [](const DbRun& d) { return !IsDone(d.status); });
      if (first != next.dbs.end()) {
        const size_t wave = first->wave;
        int live_wave = 0;
        for (const auto& d : next.dbs) live_wave += (d.wave == wave && Live(d.status));
        int room = std::min(req.max_concurrent - live_all, req.wave_concurrency - live_wave);
        for (size_t i = 0; i < next.dbs.size() && room > 0; ++i) {
          DbRun& d = next.dbs[i];
          if (d.wave != wave || d.status != DbStatus::kPending) continue;
          d.status = DbStatus::kStarting;
          d.started_ms = clock_.NowMs();
          picked.push_back(i);
          --room;
        }
      }
      options = Options(req);
    }
    if (!SaveLocked(next).ok()) return;
    runs_[id] = next;
  }
  for (size_t i : picked) {
    std::string name;
    {
      std::lock_guard lock(mu_);
      FleetRun& run = runs_.at(id);
      if (run.status != RunStatus::kRunning) {
        // Stopped (an earlier start failed) or paused meanwhile: not started.
        FleetRun next = run;
        next.dbs[i].status = DbStatus::kPending;
        next.dbs[i].started_ms = 0;
        if (SaveLocked(next).ok()) run = next;
        continue;
      }
      name = run.dbs[i].name;
    }
    auto created = starter_.Start(name, options);
    std::lock_guard lock(mu_);
    FleetRun next = runs_.at(id);
    DbRun& d = next.dbs[i];
    if (created.ok()) {
      d.status = DbStatus::kRunning;
      d.migration_id = created->value("id", "");
    } else {
      d.status = DbStatus::kFailed;
      d.error = "not started: " + created.status().message();
      d.ended_ms = clock_.NowMs();
    }
    Settle(next);
    if (SaveLocked(next).ok()) runs_[id] = next;
  }
}

}  // namespace pgshift::fleet
