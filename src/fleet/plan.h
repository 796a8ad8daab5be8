// Fleet plan: which databases of the inventory migrate, in which waves, with
// which limits and stop rule, and whether each cutover may happen now (the
// database's maintenance window, or an explicit approval).
//
// A request (POST /v1/fleet/plan and /v1/fleet/runs):
//   {"by":"tag"|"team",            // what a wave is chosen by (default tag)
//    "waves":["canary","tier2"],   // the ordered values; default every value, sorted
//    "databases":["a","b"],        // optional: only these
//    "max_concurrent":4,           // global limit of live migrations
//    "wave_concurrency":2,         // limit inside one wave
//    "stop_after":1,               // failures or rollbacks in a wave that stop the fleet
//    "approve_outside_window":false,  // cutover even when the window is closed
//    "options":{...}}              // migration options for every database
// A database goes into the first wave whose value it has; a database in no
// wave is listed under "unplanned". Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "inventory/registry.h"

namespace pgshift::fleet {

inline constexpr int kDefaultMaxConcurrent = 4;
inline constexpr int kDefaultWaveConcurrency = 2;
inline constexpr int kDefaultStopAfter = 1;
// Upper bound of either limit: the engine's worker pool bounds the real load.
inline constexpr int kMaxConcurrencyLimit = 256;

struct FleetRequest {
  std::string by = "tag";  // tag | team
  std::vector<std::string> waves;
  std::vector<std::string> databases;
  int max_concurrent = kDefaultMaxConcurrent;
  int wave_concurrency = kDefaultWaveConcurrency;
  int stop_after = kDefaultStopAfter;
  bool approve_outside_window = false;
  nlohmann::json options = nlohmann::json::object();

  // InvalidArgument naming the field at fault.
  static Result<FleetRequest> FromJson(const nlohmann::json& j);
  nlohmann::json ToJson() const;
};

struct PlannedDatabase {
  std::string name;
  std::string team;
  std::optional<inventory::Window> window;  // absent: any time
};

struct Wave {
  std::string name;  // the tag or team value
  std::vector<PlannedDatabase> databases;
};

struct FleetPlan {
  FleetRequest request;
  std::vector<Wave> waves;
  std::vector<std::string> unplanned;  // in the selection, in no wave
  nlohmann::json ToJson() const;
  static Result<FleetPlan> FromJson(const nlohmann::json& j);
};

// NotFound when a named database is not in the registry; InvalidArgument
// when nothing would migrate.
Result<FleetPlan> BuildPlan(const FleetRequest& request, const inventory::Registry& registry);

// Whether `w` is open at `now_ms` (epoch). Timezones: UTC, or a fixed offset
// "UTC+HH:MM" / "+HH:MM" / "-HH:MM"; any other name is InvalidArgument (the
// runner then holds the cutover for an approval). A window whose end is
// before its start spans midnight (the day is the one it opened on).
Result<bool> WindowOpen(const inventory::Window& w, int64_t now_ms);

// The plan as text: one block per wave, a line per database with its window.
std::string RenderPlanText(const nlohmann::json& plan);

}  // namespace pgshift::fleet
