// FleetRun: the durable state of one fleet run (its plan, status and every
// database's progress), and FleetStore, where runs are kept so status
// survives a restart of pgshiftd. Value types are thread-compatible;
// FileFleetStore is thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"
#include "fleet/plan.h"

namespace pgshift::fleet {

// pending → starting → running → succeeded | failed | rolled_back
enum class DbStatus { kPending, kStarting, kRunning, kSucceeded, kFailed, kRolledBack };
const char* DbStatusName(DbStatus s);
bool IsDone(DbStatus s);
// A failure or a rollback: what the stop rule counts.
bool CountsAgainstWave(DbStatus s);

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

class FleetStore {
 public:
  virtual ~FleetStore() = default;
  virtual Status Save(const FleetRun& run) = 0;
  virtual Result<std::vector<FleetRun>> LoadAll() = 0;
};

// One file per run, <dir>/<id>.json, replaced atomically (write, fsync,
// rename) and private (0600: options may name secrets).
class FileFleetStore : public FleetStore {
 public:
  // Creates `dir` (0700) when missing.
  static Result<std::unique_ptr<FileFleetStore>> Open(const std::string& dir);
  Status Save(const FleetRun& run) override;
  Result<std::vector<FleetRun>> LoadAll() override;

 private:
  explicit FileFleetStore(std::string dir) : dir_(std::move(dir)) {}
  std::string dir_;
  std::mutex mu_;
};

// In memory (unit tests).
class MemoryFleetStore : public FleetStore {
 public:
  Status Save(const FleetRun& run) override;
  Result<std::vector<FleetRun>> LoadAll() override;

 private:
  std::mutex mu_;
  std::vector<FleetRun> runs_;
};

}  // namespace pgshift::fleet
