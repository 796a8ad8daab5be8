// `pgshift demo`: the whole product in one command on a fresh machine —
// a sandbox (source with data, a router, pgshiftd), write load through the
// router (pgbench + ledger writers) and, through pgshift-proxy, a CDC consumer
// (pg_recvlogical, test_decoding) streaming a logical slot; one migration to
// `finalized`, the ledger checked on the new primary and in the consumer's
// output, a timeline, and as the last line
//   DEMO RESULT {"state":...,"router":...,"committed_txns":N,...,"cdc_lost":N,...}
// Exit status 0 only when the migration finalized and nothing was lost,
// duplicated or failed, in the database or at the consumer.
#pragma once

#include <iosfwd>
#include <nlohmann/json.hpp>
#include <string>

namespace pgshift::demo {

struct DemoOptions {
  std::string router = "proxy";
  bool keep = false;  // keep the sandbox directory (and print where)
  int pgbench_clients = 4;
  int pgbench_scale = 2;
  double sustain_seconds = 3;
  double verify_seconds = 2;
  // A CDC consumer through the router (pgshift-proxy only: PgBouncer does
  // not carry replication connections).
  bool cdc = true;
};

// What the demo measured; DemoResult prints it.
struct DemoNumbers {
  std::string state;
  std::string router;
  int64_t committed = 0;
  int64_t failed = 0;
  int64_t lost = 0;
  int64_t duplicated = 0;
  double max_latency_ms = 0;
  double stall_ms = 0;
  int64_t cdc_events = 0;  // ledger changes the consumer received
  int64_t cdc_lost = 0;
  int64_t cdc_duplicated = 0;
};

// Runs the demo, writing the timeline to `out`; returns the process exit code.
int RunDemo(const DemoOptions& opts, std::ostream& out, std::ostream& err);

// The DEMO RESULT object from the measured numbers (exposed for tests).
nlohmann::ordered_json DemoResult(const DemoNumbers& n);

}  // namespace pgshift::demo
