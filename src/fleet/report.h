// The fleet report: per database its result, the time spent in each phase,
// findings, the cutover hold and whether it was rolled back — read from the
// migrations themselves (the service), joined with the run's state; as JSON
// and as text. Thread-safe (the service is).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "fleet/run_state.h"
#include "workflow/service.h"

namespace pgshift::fleet {

// {"summary":{"databases","succeeded","failed","rolled_back","running","pending",
//             "max_hold_ms"},
//  "databases":[{"name","wave","status","migration_id","phase","state","error",
//                "cutover","started_at","ended_at","duration_ms",
//                "phases":[{"phase","ms"}],"findings":[...],"hold_ms","rolled_back"}]}
nlohmann::json BuildReport(const FleetRun& run, MigrationService& svc);

// A run (FleetRun JSON with "report") as text.
std::string RenderRunText(const nlohmann::json& run);

}  // namespace pgshift::fleet
