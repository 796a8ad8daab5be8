// Human-readable views of pgshiftd's JSON for the CLI: the status view of one
// migration, the migrations list, the events table, and small formatters.
// Rendering tolerates missing or oddly typed fields (older or newer servers):
// it shows what is there and skips what is not.
//
// Pure functions over values; thread-safe.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace pgshift::cli {

bool IsTerminalState(const std::string& state);  // finalized | rolled_back | failed

struct StatusViewOptions {
  size_t max_events = 5;  // how many of the latest events to show
  size_t width = 80;      // wrap the phase line at this many columns
};

// `migration` is a migration JSON (workflow/service.h); `events` the array
// of events (or {"events":[...]}, or null to leave the section out).
std::string RenderStatus(const nlohmann::json& migration, const nlohmann::json& events,
                         const StatusViewOptions& options = {});
// `list` is {"migrations":[...]} or the bare array.
std::string RenderList(const nlohmann::json& list);
// The answer of a rollback dry run ({"id","dry_run","rollback":{...}}).
std::string RenderRollbackPlan(const nlohmann::json& answer);
// `events` is {"events":[...]} or the bare array.
std::string RenderEvents(const nlohmann::json& events);

// The line of the phases of the current one's branch (the phase table,
// model/phase.h) with the current one marked, wrapped at `width`.
std::string RenderPhaseLine(const std::string& phase, const std::string& state, size_t width,
                            const std::string& indent);
// "[##########----------]  50%".
std::string ProgressBar(double pct, size_t cells = 30);
// 1536 → "1.5 KiB".
std::string HumanBytes(double bytes);
// 1200 → "1.2 s", 125000 → "2m05s".
std::string HumanMillis(double ms);

}  // namespace pgshift::cli
