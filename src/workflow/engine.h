// Engine: drives the migrations this pgshiftd holds the lease of on a
// bounded pool of worker threads, and implements MigrationService (the REST
// API's view) on top of the StateStore.
//
// Each owned migration is a slot with the time its next step is due; a free
// worker takes the slot due first and runs one step (MigrationRunner::Step),
// so a migration that waits (lag, an operator) holds no thread, and a slow
// step holds one worker, never the others. No lock is held across a step or
// a store call. A keeper thread renews the held leases (every third of their
// duration) and takes over the migrations whose lease expired — a pgshiftd
// that died — and resumes them like a restart does. A migration whose lease
// is not known valid (a renewal did not succeed within most of the lease's
// duration, as after a pause) is not stepped; one whose lease changed hands
// is dropped.
//
// Create() validates a spec completely — including building its router and
// environment — before anything is stored. Operator actions are validated
// against the migration's phase here and queued in the store behind any
// request not applied yet (a request never replaces another); the worker
// applies them in order at its next step (the migration's owner does, when
// that is another pgshiftd). ResumeAll() takes every migration that is not
// finalized or rolled back and whose lease is free or expired, which is how a
// pgshiftd killed at any point carries on. Thread-safe.
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "provider/env.h"
#include "store/state_store.h"
#include "workflow/defaults.h"
#include "workflow/service.h"

namespace pgshift {

class MigrationRunner;

struct EngineOptions {
  // This pgshiftd's name in leases and events; unique among live pgshiftd.
  std::string owner = DefaultOwnerId();
  int64_t lease_ttl_ms = workflow_defaults::kLeaseTtlMs;
  // Steps run at once, at most (the worker pool's size).
  int workers = workflow_defaults::kWorkers;
};

class Engine : public MigrationService {
 public:
  Engine(StateStore& store, EnvFactory& envs, Clock& clock = DefaultClock(),
         EngineOptions opts = {});
  ~Engine() override;

  // Starts the pool and the keeper, and takes every unfinished migration
  // whose lease is free (or this owner's, or expired).
  Status ResumeAll();
  // Joins the threads and releases the leases held, so another pgshiftd
  // may take those migrations at once.
  void Stop();

  // Runs a migration in the calling thread until it is terminal or only an
  // operator can move it on (tests; `max_steps` bounds the loop, Timeout past it).
  static constexpr int kMaxSettleSteps = 1000000;
  Status RunUntilSettled(const std::string& id, int max_steps = kMaxSettleSteps);

  Result<nlohmann::json> Create(const nlohmann::json& spec) override;
  Result<nlohmann::json> CreateLinked(const nlohmann::json& spec,
                                      const MigrationLink& link) override;
  Result<nlohmann::json> Get(const std::string& id) override;
  Result<nlohmann::json> List() override;
  Result<nlohmann::json> ListLive() override;
  Result<nlohmann::json> Events(const std::string& id) override;
  Result<nlohmann::json> Act(const std::string& id, const std::string& action,
                             const nlohmann::json& body) override;

  // Start workers for new migrations automatically (default true; tests that
  // drive RunUntilSettled turn it off).
  void set_autostart(bool on) { autostart_ = on; }
  const std::string& owner() const { return opts_.owner; }
  // The migrations this engine drives now (tests, metrics).
  std::vector<std::string> Owned();

 private:
  // One owned migration (engine_pool.cc).
  struct Slot {
    Lease lease;
    int64_t valid_until_ms = 0;  // monotonic: no step past it until a renewal
    int64_t due_ms = 0;          // monotonic: its next step
    bool busy = false;           // a worker runs its step (and holds `runner`)
    bool lost = false;           // the lease changed hands: drop it
    std::unique_ptr<MigrationRunner> runner;
  };

  // engine_pool.cc
  void StartThreads();
  // Takes the lease of `id` and schedules it; false when another holds it.
  bool Launch(const std::string& id);
  void Adopt(const std::string& id, const Lease& lease, int64_t asked_at_ms);
  void Work();
  // One step of `id` with `runner` (built first when null); the next due
  // time, or nullopt when the slot ends (terminal, lost, unbuildable).
  std::optional<int64_t> RunStep(const std::string& id, const Lease& lease,
                                 std::unique_ptr<MigrationRunner>& runner);
  void Keep();
  void RenewAll();
  void TakeOver();
  std::string NewId();
  // PlanRollback (workflow/rollback_plan.h) for a stored migration.
  Result<nlohmann::json> PlanRollbackOf(const MigrationRecord& m, Phase p, bool discard);

  StateStore& store_;
  EnvFactory& envs_;
  Clock& clock_;
  const EngineOptions opts_;
  std::atomic<bool> stopping_{false};
  bool autostart_ = true;
  std::mutex mu_;
  std::condition_variable wake_;       // a slot became due, or stopping
  std::map<std::string, Slot> slots_;  // guarded by mu_
  std::vector<std::thread> workers_;   // guarded by mu_ until Stop
  std::thread keeper_;
};

nlohmann::json RecordToJson(const MigrationRecord& m);

}  // namespace pgshift
