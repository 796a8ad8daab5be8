// Named fault points, for the tests that prove every phase survives a crash
// or a failure (kill -9 of pgshiftd at a phase boundary, a step that fails).
//
// PGSHIFT_FAULTS="crash:before_promote,fail:cdc_recreate_slot" arms points:
//   crash:NAME  the process kills itself with SIGKILL when it reaches NAME;
//   fail:NAME   NAME returns an Internal error, once per process.
// Unset (production), every point is a no-op costing one branch. pgshiftd
// logs the armed points loudly at start-up. Thread-safe.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace pgshift {

// OK unless a `fail:` fault is armed for `name` (and not yet fired); does
// not return when a `crash:` fault is.
Status FaultPoint(std::string_view name);

// The armed faults as configured ("" when none).
std::string ArmedFaults();

}  // namespace pgshift
