// FleetRunner: drives fleet runs — starts each wave's migrations through a
// Starter within the global and per-wave limits, waits for a wave to end
// before the next, requests each cutover only inside the database's
// maintenance window (or when the run approves it), and applies the stop
// rule: `stop_after` failures or rollbacks in a wave stop the run (no new
// migration starts; the ones in flight go on, their cutovers held).
//
// Migrations are created with auto_cutover off (the runner decides when) and
// auto_finalize on unless the request's options say otherwise. Every change
// of a run is saved to the store (store/fleet_run_store.h) before the runner
// acts on it, so a restarted pgshiftd goes on where it stopped.
//
// Several pgshiftd on one store: each run is driven by the pgshiftd holding
// its lease (renewed by a keeper thread every third of it; every save is
// fenced by the lease token). Each tick takes over the unfinished runs whose
// lease is free or expired — a pgshiftd that died — and applies the pause or
// resume requests made on other pgshiftd. List and Get read the store, so
// every pgshiftd shows every run.
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
#include "store/fleet_run_store.h"
#include "workflow/defaults.h"
#include "workflow/service.h"

namespace pgshift::fleet {

// Between two ticks of the background thread.
inline constexpr int64_t kDefaultFleetPollMs = 1000;
// The requests an operator leaves for a run's driver (FleetRunStore).
inline constexpr const char* kPauseRequest = "pause";
inline constexpr const char* kResumeRequest = "resume";

// The idempotency key of the start of `database` in fleet run `run_id`
// (Starter::Start): a driver that takes the run over asks with the same key.
std::string StartKey(const std::string& run_id, const std::string& database);

struct FleetRunnerOptions {
  // This pgshiftd's name in the runs' leases (the engine's owner id).
  std::string owner = DefaultOwnerId();
  int64_t lease_ttl_ms = workflow_defaults::kLeaseTtlMs;
  // Measures a source for waves by size (plan.h); null: by size is refused.
  SizeOf sizes;
};

class FleetRunner {
 public:
  // Every argument must outlive the runner. `registry` may be null (no
  // inventory: plans and new runs are refused, stored runs still shown).
  FleetRunner(MigrationService& svc, Starter& starter, FleetRunStore& store,
              const inventory::Registry* registry, Clock& clock = DefaultClock(),
              FleetRunnerOptions opts = {});
  ~FleetRunner();  // Stops the threads and lets the leases go.

  // Takes the unfinished runs nobody drives (as every tick does).
  Status Load();
  // Ticks every `poll_ms` on a background thread, and renews the leases on
  // another, until Stop.
  void Start(int64_t poll_ms = kDefaultFleetPollMs);
  // Joins the threads and releases the leases held, so another pgshiftd
  // may take those runs at once.
  void Stop();

  // The plan a request would run (a dry run: nothing is started).
  Result<nlohmann::json> Plan(const nlohmann::json& request) const;
  // Creates and saves a run; the next tick starts its first migrations.
  Result<nlohmann::json> Create(const nlohmann::json& request);
  // The run with its report (fleet/report.h). NotFound when unknown.
  Result<nlohmann::json> Get(const std::string& id);
  // Every run, without reports, oldest first.
  Result<nlohmann::json> List();
  // Pause: no new migration and no cutover until Resume. FailedPrecondition
  // unless the run is running (Pause) or paused (Resume). A run driven by
  // another pgshiftd gets the request through the store ("request" in the
  // answer) and its driver applies it at its next tick.
  Result<nlohmann::json> Pause(const std::string& id);
  Result<nlohmann::json> Resume(const std::string& id);

  // One pass: takes over, applies requests, then steps every run driven
  // here (tests call it directly).
  void Tick();
  // Renews the leases held (the keeper thread's round; tests call it).
  void RenewLeases();
  // The runs this runner drives now.
  std::vector<std::string> Driven();

 private:
  // A run this runner drives.
  struct Held {
    FleetRun run;
    Lease lease;
    int64_t valid_until_ms = 0;  // monotonic: not stepped past it until a renewal
    bool lost = false;           // the lease changed hands: dropped at the next tick
  };
  // Lists the stored runs: adopts the unfinished ones whose lease is free,
  // applies waiting requests, counts the live migrations of runs driven
  // elsewhere (the global limit spans them).
  Status TakeOver();
  void Adopt(FleetRun run, const Lease& lease, int64_t asked_at_ms);
  void ApplyRequest(const FleetRunRecord& rec);
  // Drops lost runs and lets finished ones go (they need no driver).
  void Sweep();
  Result<nlohmann::json> Request(const std::string& id, RunStatus from, RunStatus to,
                                 const char* request);
  // Reads the run's live migrations, requests the cutovers that may go and
  // applies the stop rule.
  void Poll(const std::string& id);
  // Starts what the limits allow in the current wave, and settles every
  // database left starting (StartKey makes a repeated start idempotent).
  void StartNext(const std::string& id);
  // The databases of driven run `id` in status starting.
  std::vector<size_t> Starting(const std::string& id);
  // Recomputes the run's status from its databases (under mu_).
  void Settle(FleetRun& run);
  // Saves `run` as the driven run `id` under its lease (under mu_); a lost
  // lease marks it lost. `applied_request`: the request this save applies.
  Status SaveLocked(const std::string& id, FleetRun& run, int64_t applied_request = 0);
  Result<nlohmann::json> SetStatus(const std::string& id, RunStatus from, RunStatus to,
                                   int64_t applied_request = 0);
  std::vector<std::string> ActiveIds();
  // The migration options a run creates with.
  static nlohmann::json Options(const FleetRequest& r);

  MigrationService& svc_;
  Starter& starter_;
  FleetRunStore& store_;
  const inventory::Registry* registry_;
  Clock& clock_;
  const FleetRunnerOptions opts_;

  std::mutex tick_mu_;  // one tick at a time
  std::mutex mu_;       // guards runs_, others_live_ and next_id_
  std::map<std::string, Held> runs_;
  int others_live_ = 0;  // live migrations of runs driven by other pgshiftd
  int64_t next_id_ = 0;

  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  std::thread thread_;
  std::thread keeper_;
};

}  // namespace pgshift::fleet
