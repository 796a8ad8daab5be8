// FleetRun: the durable state of one fleet run (its plan, status and every
// database's progress), kept as a document in the state store
// (store/fleet_run_store.h). Value types are thread-compatible.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"
#include "fleet/plan.h"
#include "store/fleet_run_store.h"

namespace pgshift::fleet {

// pending → starting → running → succeeded | failed | rolled_back
enum class DbStatus { kPending, kStarting, kRunning, kSucceeded, kFailed, kRolledBack };
const char* DbStatusName(DbStatus s);
bool IsDone(DbStatus s);
// A failure or a rollback: what the stop rule counts.
bool CountsAgainstWave(DbStatus s);
// Starting or running: a migration in flight.
bool IsLive(DbStatus s);

// running → paused ↔ running; running → stopped (the stop rule) | completed
enum class RunStatus { kRunning, kPaused, kStopped, kCompleted };
const char* RunStatusName(RunStatus s);

struct DbRun {
  std::string name;
  size_t wave = 0;  // index into the plan's waves
  DbStatus status = DbStatus::kPending;
  std::string migration_id;
  std::string error;
  std::string cutover;  // "" | "held: <why>" | "requested"
  int64_t started_ms = 0;
  int64_t ended_ms = 0;
};

struct FleetRun {
  std::string id;
  FleetPlan plan;
  RunStatus status = RunStatus::kRunning;
  std::string reason;  // why it stopped
  int64_t created_ms = 0;
  int64_t updated_ms = 0;
  std::vector<DbRun> dbs;  // in plan order (wave by wave)

  // A new run of `plan`: every database pending.
  static FleetRun New(std::string id, FleetPlan plan, int64_t now_ms);
  nlohmann::json ToJson() const;
  static Result<FleetRun> FromJson(const nlohmann::json& j);
};

// A run that still needs a driver: it may start migrations, or has some in
// flight whose results it must record.
bool NeedsDriver(const FleetRun& r);

// Fleet runs were kept as files, <state>.fleet/<id>.json, before they moved
// into the state store. Imports each into `store` once (a run already there
// is left alone), then renames the directory to <dir>.imported so it is not
// read again. The number of runs imported; 0 when `dir` does not exist.
Result<int> ImportFleetDir(const std::string& dir, FleetRunStore& store);

}  // namespace pgshift::fleet
