// The switch report of a cutover's or a rollback's switch, for the
// migration's timeline: read from the router (Router::LastSwitch) once the
// sessions that move right away had a moment to do so.
//
// A plain function; it calls the router from the caller's thread.
#pragma once

#include <string>

#include "common/clock.h"
#include "router/router.h"

namespace pgshift {

// How long a switch's report may take to settle: sessions holding state move
// at once after the release, the others at their next transaction. The
// report is read when none is pending any more or this has passed.
inline constexpr int64_t kSwitchReportSettleMs = 1000;
inline constexpr int64_t kSwitchReportPollMs = 50;

// The event text for the router's switch to `to` (SwitchReport::Summary),
// or "" when the router keeps no report, cannot be read, or its latest
// switch went elsewhere.
std::string SwitchReportEvent(Router& router, Clock& clock, const Endpoint& to);

}  // namespace pgshift
