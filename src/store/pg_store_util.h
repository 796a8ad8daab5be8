// Helpers shared by PgStateStore's translation units (pg_state_store*.cc).
// Pure functions and constants; thread-safe.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "pg/conn.h"
#include "store/lease.h"

namespace pgshift::store_internal {

// The server's clock, in epoch ms: lease expiry is judged by it alone.
inline constexpr const char* kServerNowMs =
    "(extract(epoch from clock_timestamp()) * 1000)::bigint";

inline nlohmann::json ParseOr(const std::string& text, nlohmann::json fallback) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  return j.is_discarded() ? fallback : j;
}

inline std::string Str(int64_t v) { return std::to_string(v); }

inline Lease LeaseOf(const Rows& r, size_t row) {
  return {r.Str(row, "lease_owner"), r.Int(row, "lease_token"), r.Int(row, "lease_expires")};
}

}  // namespace pgshift::store_internal
