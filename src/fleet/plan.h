// Fleet plan: which databases of the inventory migrate, in which waves, with
// which limits and stop rule, and whether each cutover may happen now (the
// database's maintenance window, or an explicit approval).
//
// A request (POST /v1/fleet/plan and /v1/fleet/runs):
//   {"by":"tag"|"team"|"size",     // what a wave is chosen by (default tag)
//    "waves":["canary","tier2"],   // the ordered values; default every value, sorted;
//                                  // by size: upper bounds ("1GB","100GB"), default
//                                  // kDefaultSizeBounds
//    "databases":["a","b"],        // optional: only these
//    "max_concurrent":4,           // global limit of live migrations
//    "wave_concurrency":2,         // limit inside one wave
//    "stop_after":1,               // failures or rollbacks in a wave that stop the fleet
//    "approve_outside_window":false,  // cutover even when the window is closed
//    "options":{...}}              // migration options for every database
// A database goes into the first wave whose value it has; a database in no
// wave is listed under "unplanned".
//
// By size, a database's size is measured when the plan is made: the sum of
// pg_database_size over its source cluster (a physical migration moves the
// whole cluster), read through its admin connection. Measured, not declared
// in the registry, because a declared size goes stale and a user ordering
// waves by size means the size now. It goes into the first wave whose bound
// is not below it, smallest first inside a wave; one that is larger than
// every bound, or cannot be measured, is unplanned (with a note why).
// Pure functions (but for the SizeOf given); thread-safe.
#pragma once

#include <cstdint>
#include <functional>
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
// Waves by size when the request names no bounds: a wave per decade.
inline constexpr const char* kDefaultSizeBounds[] = {"1GB", "10GB", "100GB", "1TB", "10TB"};

// A database's size in bytes (by size); an error when it cannot be measured.
// Called for several databases at once (must be thread-safe).
using SizeOf = std::function<Result<int64_t>(const inventory::DatabaseEntry&)>;
// Sources measured at once by a plan by size: a source that does not answer
// costs its connect timeout (size.h), and one at a time a plan over many
// unreachable sources took minutes.
inline constexpr int kSizeConcurrency = 8;

// "512MB", "10GB", "1.5TB", "100kB" or plain bytes; units of 1024 as in
// PostgreSQL's pg_size_pretty. InvalidArgument otherwise.
Result<int64_t> ParseSize(const std::string& text);
// The other way: "10GB", "1.5TB".
std::string FormatSize(int64_t bytes);

struct FleetRequest {
  std::string by = "tag";  // tag | team | size
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
  int64_t size_bytes = -1;                  // measured (by size); -1 unknown
};

struct Wave {
  std::string name;  // the tag or team value
  std::vector<PlannedDatabase> databases;
};

struct FleetPlan {
  FleetRequest request;
  std::vector<Wave> waves;
  std::vector<std::string> unplanned;  // in the selection, in no wave
  std::vector<std::string> notes;      // why some are unplanned (by size)
  nlohmann::json ToJson() const;
  static Result<FleetPlan> FromJson(const nlohmann::json& j);
};

// NotFound when a named database is not in the registry; InvalidArgument
// when nothing would migrate; FailedPrecondition by size without `sizes`.
Result<FleetPlan> BuildPlan(const FleetRequest& request, const inventory::Registry& registry,
                            const SizeOf& sizes = nullptr);

// Whether `w` is open at `now_ms` (epoch). Timezones: UTC, a fixed offset
// "UTC+HH:MM" / "+HH:MM" / "-HH:MM", or a tz database name ("Europe/Paris",
// tz.h) at its offset at now_ms; an unknown name is InvalidArgument (the
// runner then holds the cutover for an approval). A window whose end is
// before its start spans midnight (the day is the one it opened on).
Result<bool> WindowOpen(const inventory::Window& w, int64_t now_ms);

// The plan as text: one block per wave, a line per database with its window.
std::string RenderPlanText(const nlohmann::json& plan);

}  // namespace pgshift::fleet
