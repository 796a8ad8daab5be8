// FleetRunner: drives fleet runs — starts each wave's migrations through a
// Starter within the global and per-wave limits, waits for a wave to end
// before the next, requests each cutover only inside the database's
// maintenance window (or when the run approves it), and applies the stop
// rule: `stop_after` failures or rollbacks in a wave stop the run (no new
// migration starts; the ones in flight go on, their cutovers held).
//
// Migrations are created with auto_cutover off (the runner decides when) and
// auto_finalize on unless the request's options say otherwise. Every change
// of a run is saved to the FleetStore before the runner acts on it, so a
// restarted pgshiftd (Load) goes on where it stopped.
//
// Thread-safe. No lock is held across a call to the service or the starter:
// Tick() reads a run under the lock, calls out without it, and merges the
// answers back; ticks are serialized among themselves.
#pragma once

#include <condition_variable>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "common/clock.h"
#include "common/status.h"
#include "fleet/plan.h"
#include "fleet/run_state.h"
#include "fleet/starter.h"
#include "inventory/registry.h"
#include "workflow/service.h"

namespace pgshift::fleet {

// Between two ticks of the background thread.
inline constexpr int64_t kDefaultFleetPollMs = 1000;

class FleetRunner {
 public:
  // Every argument must outlive the runner. `registry` may be null (no
  // inventory: plans and new runs are refused, stored runs still shown).
  FleetRunner(MigrationService& svc, Starter& starter, FleetStore& store,
              const inventory::Registry* registry, Clock& clock = DefaultClock());
  ~FleetRunner();  // Stops the thread.

  // Reads the stored runs (once, before Start).
  Status Load();
  // Ticks every `poll_ms` on a background thread until Stop.
  void Start(int64_t poll_ms = kDefaultFleetPollMs);
  void Stop();

  // The plan a request would run (a dry run: nothing is started).
  Result<nlohmann::json> Plan(const nlohmann::json& request) const;
  // Creates and saves a run; the next tick starts its first migrations.
  Result<nlohmann::json> Create(const nlohmann::json& request);
  // The run with its report (fleet/report.h). NotFound when unknown.
  Result<nlohmann::json> Get(const std::string& id);
  // Every run, without reports, oldest first.
  nlohmann::json List();
  // Pause: no new migration and no cutover until Resume. FailedPrecondition
  // unless the run is running (Pause) or paused (Resume).
  Result<nlohmann::json> Pause(const std::string& id);
  Result<nlohmann::json> Resume(const std::string& id);

  // One pass over every active run (tests call it directly).
  void Tick();

 private:
  // Reads the run's live migrations, requests the cutovers that may go and
  // applies the stop rule.
  void Poll(const std::string& id);
  // Starts what the limits allow in the current wave.
  void StartNext(const std::string& id);
  // Recomputes the run's status from its databases (under mu_).
  void Settle(FleetRun& run);
  Status SaveLocked(FleetRun& run);
  Result<nlohmann::json> SetStatus(const std::string& id, RunStatus from, RunStatus to);
  std::vector<std::string> ActiveIds();
  // The migration options a run creates with.
  static nlohmann::json Options(const FleetRequest& r);

  MigrationService& svc_;
  Starter& starter_;
  FleetStore& store_;
  const inventory::Registry* registry_;
  Clock& clock_;

  std::mutex tick_mu_;  // one tick at a time
  std::mutex mu_;       // guards runs_ and next_id_
  std::map<std::string, FleetRun> runs_;
  int64_t next_id_ = 0;

  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace pgshift::fleet
