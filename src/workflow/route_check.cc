#include "workflow/route_check.h"

#include <algorithm>
#include <string>
#include <vector>

#include "common/os.h"

namespace pgshift {

bool SameServer(const Endpoint& a, const Endpoint& b) {
  if (a == b) return true;
  if (a.port != b.port) return false;
  const std::vector<std::string> theirs = HostAddresses(b.host);
  for (const auto& x : HostAddresses(a.host)) {
    if (std::find(theirs.begin(), theirs.end(), x) != theirs.end()) return true;
  }
  return false;
}

std::optional<checks::Finding> RouteFinding(MigrationEnv& env) {
  auto current = env.router().Current();
  if (!current.ok() && current.status().code() == Code::kNotFound) return std::nullopt;
  const Endpoint source = env.SourceEndpoint();
  checks::Finding f{.id = "route_serves_source", .subject = "route"};
  f.threshold = source.ToString();
  if (!current.ok()) {
    f.severity = checks::Severity::kWarning;
    f.message = "cannot read where the router's route points (" + current.status().message() +
                "); the cutover needs the router and aborts before moving anything without it";
    f.remedy = "make the router reachable from pgshiftd before the cutover";
    return f;
  }
  f.value = current->ToString();
  if (SameServer(*current, source)) {
    f.message = "the router's route sends its clients to the source (" + source.ToString() + ")";
    return f;
  }
  f.id = "route_serves_another_server";
  f.severity = checks::Severity::kBlocking;
  f.message = "the router's route sends its clients to " + current->ToString() +
              ", not to this migration's source " + source.ToString() +
              ": the cutover would move them onto a copy of another database";
  f.remedy =
      "name the route that serves this source in the spec's router, or point the route at the "
      "source first; if the router reaches the source under another address (a relay, NAT), "
      "override this finding with a reason";
  return f;
}

}  // namespace pgshift
