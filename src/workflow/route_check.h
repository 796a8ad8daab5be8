// Preflight's check that the router's route serves this migration's source.
//
// A cutover moves every client of the route onto the target. A route that
// sends its clients to another server than the source (a spec naming the
// wrong route, a route repointed since) would hand them a copy of the wrong
// database at the switch, so such a route is a blocking finding. The route's
// upstream matches the source when both are written the same way, or when
// both hosts resolve to a common address on the same port (a name and its
// address). A router with no route to read (type "none": NotFound) gives no
// finding; one that cannot be read a warning, since its hold at the cutover
// fails before anything moves.
// Stateless; not thread-safe, like the MigrationEnv it uses.
#pragma once

#include <optional>

#include "checks/finding.h"
#include "provider/env.h"

namespace pgshift {

std::optional<checks::Finding> RouteFinding(MigrationEnv& env);

// True when `a` and `b` name one server: equal, or the same port and hosts
// that resolve to a common address.
bool SameServer(const Endpoint& a, const Endpoint& b);

}  // namespace pgshift
