// Engine: runs every live migration on its own worker thread and implements
// MigrationService (the REST API's view) on top of the StateStore.
//
// Create() validates a spec completely — including building its router and
// environment — before anything is stored. Operator actions are validated
// against the migration's phase here and queued in the store behind any
// request not applied yet (a request never replaces another); the worker
// applies them in order at its next step. ResumeAll() restarts workers for every
// migration that is not finalized or rolled back, which is how a pgshiftd
// killed at any point carries on. Thread-safe.
#pragma once

#include <atomic>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "common/clock.h"
#include "provider/env.h"
#include "store/state_store.h"
#include "workflow/service.h"

namespace pgshift {

class Engine : public MigrationService {
 public:
  Engine(StateStore& store, EnvFactory& envs, Clock& clock = DefaultClock());
  ~Engine() override;

  Status ResumeAll();
  void Stop();

  // Runs a migration in the calling thread until it is terminal or only an
  // operator can move it on (tests; `max_steps` bounds the loop, Timeout past it).
  static constexpr int kMaxSettleSteps = 1000000;
  Status RunUntilSettled(const std::string& id, int max_steps = kMaxSettleSteps);

  Result<nlohmann::json> Create(const nlohmann::json& spec) override;
  Result<nlohmann::json> Get(const std::string& id) override;
  Result<nlohmann::json> List() override;
  Result<nlohmann::json> Events(const std::string& id) override;
  Result<nlohmann::json> Act(const std::string& id, const std::string& action,
                             const nlohmann::json& body) override;

  // Start workers for new migrations automatically (default true; tests that
  // drive RunUntilSettled turn it off).
  void set_autostart(bool on) { autostart_ = on; }

 private:
  void Launch(const std::string& id);
  void Work(std::string id);
  std::string NewId();
  // PlanRollback (workflow/rollback_plan.h) for a stored migration.
  Result<nlohmann::json> PlanRollbackOf(const MigrationRecord& m, Phase p, bool discard);

  StateStore& store_;
  EnvFactory& envs_;
  Clock& clock_;
  std::atomic<bool> stopping_{false};
  bool autostart_ = true;
  std::mutex mu_;
  std::map<std::string, std::thread> workers_;
};

nlohmann::json RecordToJson(const MigrationRecord& m);

}  // namespace pgshift
