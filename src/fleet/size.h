// Measuring a source cluster for waves by size (plan.h): the sum of
// pg_database_size over the databases its admin role may connect to.
// Thread-safe (one connection per call).
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace pgshift::fleet {

// A bounded connect: a source that does not answer delays a plan by size
// by this much (sources are measured kSizeConcurrency at a time, plan.h).
inline constexpr int kSizeConnectTimeoutS = 5;

Result<int64_t> MeasureClusterSize(const std::string& conninfo);

}  // namespace pgshift::fleet
