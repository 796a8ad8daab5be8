// Named time zones for maintenance windows ("Europe/Paris"), from the
// system's tz database (TZif files under /usr/share/zoneinfo, Debian's
// tzdata). GCC 12's std::chrono has no tzdb, and libc's localtime needs the
// process-wide TZ variable (not thread-safe), so this reads the TZif file
// itself: its table of transitions (64-bit, version 2+), and past the last
// one its footer's POSIX rule (e.g. "CET-1CEST,M3.5.0,M10.5.0/3", the
// Mm.w.d form every current zone uses). Thread-safe; parsed zones are cached.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace pgshift::fleet {

inline constexpr const char* kZoneInfoDir = "/usr/share/zoneinfo";

// The zone's offset east of UTC, in seconds, at `at_s` (epoch seconds).
// InvalidArgument for a name that is no zone of `dir`, or a file it cannot read.
Result<int64_t> ZoneOffsetSeconds(const std::string& zone, int64_t at_s,
                                  const std::string& dir = kZoneInfoDir);

}  // namespace pgshift::fleet
