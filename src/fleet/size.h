// Measuring a source cluster for waves by size (plan.h): the sum of
// pg_database_size over the databases its admin role may connect to.
// Thread-safe (one connection per call).
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace pgshift::fleet {

// A bounded connect: a fleet plan measures every source in turn.
inline constexpr int kSizeConnectTimeoutS = 5;

Result<int64_t> MeasureClusterSize(const std::string& conninfo);

}  // namespace pgshift::fleet
