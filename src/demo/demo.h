// `pgshift demo`: the whole product in one command on a fresh machine —
// a sandbox (source with data, a router, pgshiftd), write load through the
// router (pgbench + ledger writers), one migration to `finalized`, the ledger
// checked on the new primary, a timeline, and as the last line
//   DEMO RESULT {"state":...,"router":...,"committed_txns":N,...}
// Exit status 0 only when the migration finalized and nothing was lost,
// duplicated or failed.
#pragma once

#include <iosfwd>
#include <string>

#include <nlohmann/json.hpp>

namespace pgshift::demo {

struct DemoOptions {
  std::string router = "proxy";
  bool keep = false;           // keep the sandbox directory (and print where)
  int pgbench_clients = 4;
  int pgbench_scale = 2;
  double sustain_seconds = 3;
  double verify_seconds = 2;
};

// Runs the demo, writing the timeline to `out`; returns the process exit code.
int RunDemo(const DemoOptions& opts, std::ostream& out, std::ostream& err);

// The DEMO RESULT object from the measured numbers (exposed for tests).
nlohmann::ordered_json DemoResult(const std::string& state, const std::string& router,
                                  int64_t committed, int64_t failed, int64_t lost,
                                  int64_t duplicated, double max_latency_ms, double stall_ms);

}  // namespace pgshift::demo
