// Lsn: a PostgreSQL WAL position ("16/B374D848"), parsed and formatted.
// Plain value type; thread-compatible.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace pgshift {

struct Lsn {
  uint64_t value = 0;

  static Result<Lsn> Parse(const std::string& text);
  std::string ToString() const;

  auto operator<=>(const Lsn&) const = default;
};

// Bytes from `from` to `to`, or 0 when `to` is behind.
inline uint64_t LsnDiff(Lsn to, Lsn from) { return to.value > from.value ? to.value - from.value : 0; }

}  // namespace pgshift
