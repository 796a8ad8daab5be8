// The human views of the CLI, from realistic server JSON.
#include "cli/render.h"

#include <gtest/gtest.h>

#include <sstream>

#include "model/phase.h"

namespace pgshift::cli {
namespace {

using nlohmann::json;

// A migration in sync with one blocking, one warning and one ok finding, as
// pgshiftd reports it (workflow/service.h).
json SyncingMigration() {
  return json::parse(R"({
    "id": "m-1a2b3c", "name": "orders", "phase": "sync", "state": "blocked",
    "created_at": "2024-05-01T10:00:00Z", "updated_at": "2024-05-01T10:04:12Z",
    "spec": {"name": "orders", "options": {"sustain_seconds": 30, "lag_threshold_bytes": 1048576}},
    "progress": {"basebackup_pct": 100, "lag_bytes": 2621440, "lag_seconds": 1.25,
                 "in_sync_ms": 12500, "source_wal_bps": 1572864, "replay_bps": 1677721},
    "result": {},
    "findings": [
      {"id": "unlogged_tables", "severity": "blocking", "subject": "public.sessions",
       "message": "unlogged table public.sessions will be empty on the target",
       "remedy": "ALTER TABLE public.sessions SET LOGGED, or override if it is a cache"},
      {"id": "no_primary_key", "severity": "warning", "subject": "public.audit",
       "message": "table has no primary key", "remedy": "add a primary key for reverse replication"},
      {"id": "wal_level", "severity": "ok", "subject": "", "message": "wal_level is logical",
       "remedy": "nothing to do"}
    ],
    "error": "", "pending_action": ""
  })");
}

json SomeEvents(int n) {
  json events = json::array();
  for (int i = 0; i < n; ++i) {
    events.push_back({{"at", "2024-05-01T10:0" + std::to_string(i) + ":00Z"},
                      {"phase", i < 2 ? "preflight" : "sync"},
                      {"kind", i == 3 ? "warning" : "info"},
                      {"message", "event number " + std::to_string(i)}});
  }
  return json{{"events", events}};
}

void ExpectContains(const std::string& text, const std::string& part) {
  EXPECT_NE(text.find(part), std::string::npos) << "missing: " << part << "\nin:\n" << text;
}
void ExpectLacks(const std::string& text, const std::string& part) {
  EXPECT_EQ(text.find(part), std::string::npos) << "unexpected: " << part << "\nin:\n" << text;
}

TEST(RenderStatus, ShowsIdentityPhasesProgressFindingsEvents) {
  std::string v = RenderStatus(SyncingMigration(), SomeEvents(7));
  ExpectContains(v, "Migration orders  (m-1a2b3c)");
  ExpectContains(v, "Phase       sync");
  ExpectContains(v, "[x] preflight  [x] provision  [>] sync  [ ] validate");
  ExpectContains(v, "[ ] finalized");
  ExpectContains(v, "State       blocked");
  ExpectContains(v, "Base backup   [##############################] 100%");
  ExpectContains(v, "Lag           2.5 MiB (2621440 bytes), 1.2 s behind");
  ExpectContains(v, "In sync       12.5 s of 30.0 s required, lag threshold 1.0 MiB");
  ExpectContains(v, "WAL rate      source 1.5 MiB/s, replay 1.6 MiB/s");
  // Findings table with remedies for the non-ok ones only.
  ExpectContains(v, "ID               SEVERITY  SUBJECT          MESSAGE");
  ExpectContains(v, "unlogged_tables  blocking  public.sessions  unlogged table public.sessions");
  ExpectContains(v, "remedy: ALTER TABLE public.sessions SET LOGGED");
  ExpectContains(v, "remedy: add a primary key");
  ExpectContains(v, "wal_level        ok        -                wal_level is logical");
  ExpectLacks(v, "nothing to do");
  // The last 5 of 7 events.
  ExpectContains(v, "Recent events (last 5 of 7)");
  ExpectContains(v, "2024-05-01T10:06:00Z  sync");
  ExpectContains(v, "event number 2");
  ExpectLacks(v, "event number 1");
  ExpectContains(v,
                 "Next: blocked by findings; fix them, or override one with "
                 "`pgshift migration override m-1a2b3c --finding ID --reason TEXT`");
  ExpectLacks(v, "Error:");
  ExpectLacks(v, "Result");
}

TEST(RenderStatus, CdcSlotsGetTheirOwnSectionWithPositionsAndConsumer) {
  json m = json::parse(R"({
    "id": "m-1", "name": "orders", "phase": "verify", "state": "running",
    "result": {"hold_ms": 40, "cdc_slots": [
      {"name": "orders_cdc", "plugin": "wal2json", "database": "app", "state": "recreated",
       "consumer": {"pid": 4242, "application_name": "pg_recvlogical", "client_addr": "",
                    "through_router": true},
       "recorded_lsn": "0/3000100", "drained_lsn": "0/3000200", "recreated_lsn": "0/4000028",
       "target_confirmed_lsn": ""},
      {"name": "idle_cdc", "plugin": "test_decoding", "database": "app", "state": "planned",
       "consumer": {"pid": 0}}]}})");
  std::string out = RenderStatus(m, json(), StatusViewOptions{});
  EXPECT_NE(out.find("CDC slots"), std::string::npos) << out;
  EXPECT_NE(out.find("pg_recvlogical via router"), std::string::npos) << out;
  EXPECT_NE(out.find("0/3000200"), std::string::npos) << out;
  EXPECT_NE(out.find("0/4000028"), std::string::npos) << out;
  EXPECT_NE(out.find("not connected"), std::string::npos) << out;
  EXPECT_EQ(out.find("\"cdc_slots\""), std::string::npos) << "not dumped as JSON in Result";
}

TEST(RenderStatus, TrafficBaselineAndPostCutoverHealth) {
  json m = SyncingMigration();
  m["phase"] = "rolled_back";
  m["progress"]["baseline"] = {{"router", "proxy"},
                               {"transactions", 12000},
                               {"tps", 400.0},
                               {"error_rate", 0.001},
                               {"timed_transactions", 12000},
                               {"p50_ms", 1.2},
                               {"p95_ms", 3.4},
                               {"p99_ms", 8.9}};
  m["result"]["health"] = {{"window",
                            {{"transactions", 900},
                             {"tps", 300.0},
                             {"timed_transactions", 900},
                             {"p50_ms", 410.0},
                             {"p95_ms", 480.0},
                             {"p99_ms", 495.0}}},
                           {"matched_baseline", false},
                           {"anomaly", "p99 latency 495.0 ms through the router, baseline 8.9 ms"},
                           {"action", "rollback"}};
  const std::string out = RenderStatus(m, json::array(), {});
  EXPECT_NE(out.find("Traffic through the router"), std::string::npos) << out;
  EXPECT_NE(out.find("12000 txns, 400.0/s, errors 0.10%, p50/p95/p99 1.2/3.4/8.9 ms"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("900 txns, 300.0/s, p50/p95/p99 410.0/480.0/495.0 ms"), std::string::npos)
      << out;
  EXPECT_NE(out.find("did not match the baseline: p99 latency 495.0 ms through the router, "
                     "baseline 8.9 ms (rollback)"),
            std::string::npos)
      << out;
  EXPECT_EQ(out.find("\"window\""), std::string::npos) << "not dumped as JSON in the result";
}

TEST(RenderStatus, PhaseLineWrapsAtWidth) {
  std::string v = RenderStatus(SyncingMigration(), nullptr, {.max_events = 5, .width = 60});
  std::istringstream lines(v);
  std::string line;
  int phase_lines = 0;
  while (std::getline(lines, line)) {
    if (line.find("[x]") == std::string::npos && line.find("[ ]") == std::string::npos) continue;
    ++phase_lines;
    EXPECT_LE(line.size(), 60u) << line;
    EXPECT_EQ(line.rfind(std::string(14, ' '), 0), 0u)
        << "aligned under the value column: " << line;
  }
  EXPECT_GE(phase_lines, 4);
}

TEST(RenderStatus, FinishedMigrationShowsResultAndAllPhasesDone) {
  json m = SyncingMigration();
  m["phase"] = "finalized";
  m["state"] = "finalized";
  m["findings"] = json::array();
  m["result"] = {{"final_lsn", "0/3000060"}, {"timeline", 2}, {"hold_ms", 35}};
  std::string v = RenderStatus(m, nullptr);
  ExpectContains(v, "[x] verify  [x] finalize");
  ExpectContains(v, "[x] finalized");
  ExpectLacks(v, "[>]");
  ExpectLacks(v, "[ ]");
  ExpectContains(v, "Result");
  ExpectContains(v, "final_lsn  0/3000060");
  ExpectContains(v, "timeline   2");
  ExpectContains(v, "hold_ms    35");
  ExpectLacks(v, "Findings");
  ExpectLacks(v, "Recent events");
  ExpectLacks(v, "Next:");
}

TEST(RenderStatus, ShowsEachInstanceOfARouteServedBySeveral) {
  json m = SyncingMigration();
  m["phase"] = "verify";
  m["progress"]["route_instances"] = {
      {{"name", "http://10.0.0.1:6433"},
       {"reachable", true},
       {"upstream", "10.0.0.9:5433"},
       {"held", false}},
      {{"name", "http://10.0.0.2:6433"}, {"reachable", false}, {"error", "connection refused"}}};
  m["result"] = {{"route_repoints", 1}};
  std::string v = RenderStatus(m, nullptr);
  ExpectContains(v, "Route instances");
  ExpectContains(v, "1 repointed by pgshiftd");
  ExpectContains(v, "INSTANCE");
  ExpectContains(v, "http://10.0.0.1:6433  yes        10.0.0.9:5433  no");
  ExpectContains(v, "http://10.0.0.2:6433  no         -              -     connection refused");
}

TEST(RenderStatus, FailedMigrationMarksPhaseAndShowsError) {
  json m = SyncingMigration();
  m["phase"] = "drain";
  m["state"] = "failed";
  m["error"] = "target replay stalled at 0/3000000; final LSN 0/3000060 not reached in 30 s";
  std::string v = RenderStatus(m, json::array());
  ExpectContains(v, "[x] quiesce  [!] drain  [ ] promote");
  ExpectContains(v, "Error: target replay stalled at 0/3000000");
  ExpectContains(v,
                 "Next: failed; read the error and events (`pgshift migration events m-1a2b3c`)");
}

TEST(RenderStatus, WaitingForApprovalSaysWhatToRun) {
  json m = SyncingMigration();
  m["phase"] = "ready";
  m["state"] = "waiting";
  m["pending_action"] = "cutover";
  m["progress"]["in_sync_ms"] = 31000;
  std::string v = RenderStatus(m, nullptr);
  ExpectContains(v, "State       waiting (awaiting cutover)");
  ExpectContains(v, "Next: ready; approve the cutover with `pgshift migration cutover m-1a2b3c`");
  ExpectContains(v, "(met)");
  m["pending_action"] = "finalize";
  m["phase"] = "verify";
  ExpectContains(RenderStatus(m, nullptr), "`pgshift migration finalize m-1a2b3c`");
}

TEST(RenderStatus, RollbackBranch) {
  json m = SyncingMigration();
  m["phase"] = "rolling_back";
  m["state"] = "running";
  std::string v = RenderStatus(m, nullptr);
  ExpectContains(v, "[>] rolling_back  [ ] rolled_back");
  m["phase"] = "rolled_back";
  m["state"] = "rolled_back";
  ExpectContains(RenderStatus(m, nullptr), "[x] rolling_back  [x] rolled_back");
}

TEST(RenderStatus, ToleratesMissingAndMistypedFields) {
  json m = {{"id", "m-9"},         {"phase", nullptr}, {"progress", "weird"},
            {"findings", nullptr}, {"error", nullptr}, {"result", 5}};
  std::string v = RenderStatus(m, json("not events"));
  ExpectContains(v, "Migration (unnamed)  (m-9)");
  ExpectContains(v, "Phase       ?");
  ExpectLacks(v, "Progress");
  ExpectLacks(v, "[>]");
  // A migration with progress but no options just shows the time in sync.
  json p = {{"id", "m-8"}, {"name", "x"}, {"progress", {{"in_sync_ms", 900}}}};
  ExpectContains(RenderStatus(p, nullptr), "In sync       900 ms\n");
}

TEST(RenderList, TableAndEmpty) {
  json list = {{"migrations",
                {{{"id", "m-1"},
                  {"name", "orders"},
                  {"phase", "sync"},
                  {"state", "running"},
                  {"updated_at", "2024-05-01T10:04:12Z"}},
                 {{"id", "m-22"},
                  {"name", "billing-eu"},
                  {"phase", "finalized"},
                  {"state", "finalized"},
                  {"updated_at", "2024-05-02T08:00:00Z"}}}}};
  std::string v = RenderList(list);
  ExpectContains(v, "ID    NAME        PHASE      STATE      UPDATED\n");
  ExpectContains(v, "m-1   orders      sync       running    2024-05-01T10:04:12Z\n");
  ExpectContains(v, "m-22  billing-eu  finalized  finalized  2024-05-02T08:00:00Z\n");
  ExpectContains(RenderList(json{{"migrations", json::array()}}), "No migrations.");
}

TEST(RenderEvents, TableAndEmpty) {
  std::string v = RenderEvents(SomeEvents(4));
  ExpectContains(v, "AT                    PHASE      KIND     MESSAGE\n");
  ExpectContains(v, "2024-05-01T10:03:00Z  sync       warning  event number 3\n");
  ExpectContains(RenderEvents(json::array()), "No events yet.");
}

TEST(RenderPhaseLine, ListsTheBranchOfThePhaseTableAndMarksTheCurrentPhase) {
  for (const auto& info : PhasesOf(PhaseBranch::kMain)) {
    std::string line = RenderPhaseLine(info.name, "running", 1000, "");
    ExpectContains(line, (info.terminal ? "[x] " : "[>] ") + std::string(info.name));
    ExpectLacks(line, "rolling_back");
    if (info.phase != Phase::kPreflight) ExpectContains(line, "[x] preflight");
  }
  // A phase this CLI does not know (a newer server): the main path, unmarked.
  std::string line = RenderPhaseLine("reverse_sync", "running", 1000, "");
  ExpectContains(line, "[ ] preflight");
  ExpectContains(line, "[ ] finalized");
  ExpectLacks(line, "[x]");
  ExpectLacks(line, "[>]");
}

TEST(Formatters, BytesMillisBar) {
  EXPECT_EQ(HumanBytes(0), "0 B");
  EXPECT_EQ(HumanBytes(1023), "1023 B");
  EXPECT_EQ(HumanBytes(1536), "1.5 KiB");
  EXPECT_EQ(HumanBytes(3.0 * 1024 * 1024 * 1024), "3.0 GiB");
  EXPECT_EQ(HumanMillis(35), "35 ms");
  EXPECT_EQ(HumanMillis(1200), "1.2 s");
  EXPECT_EQ(HumanMillis(125000), "2m05s");
  EXPECT_EQ(HumanMillis(7260000), "2h01m");
  EXPECT_EQ(ProgressBar(42, 10), "[####------] 42%");
  EXPECT_EQ(ProgressBar(0, 4), "[----] 0%");
  EXPECT_EQ(ProgressBar(250, 4), "[####] 100%");
  EXPECT_TRUE(IsTerminalState("failed"));
  EXPECT_FALSE(IsTerminalState("waiting"));
}

TEST(RenderRollbackPlan, SaysThePathWhatMovesBackWhatIsLostAndTheHold) {
  json lossless = json::parse(R"({"id": "m-1", "dry_run": true, "rollback": {
    "path": "reverse_replication", "phase": "verify", "refused": null,
    "moves_back": ["every write committed on the target", "sequences"],
    "would_lose": [], "obstacles": [], "needs_confirmation": false,
    "expected_hold_ms": 250, "apply_lag_bytes": 4096}})");
  std::string out = RenderRollbackPlan(lossless);
  EXPECT_NE(out.find("path reverse_replication"), std::string::npos) << out;
  EXPECT_NE(out.find("every write committed on the target"), std::string::npos) << out;
  EXPECT_NE(out.find("expected hold: 250 ms"), std::string::npos) << out;
  EXPECT_EQ(out.find("would lose"), std::string::npos) << out;
  EXPECT_EQ(out.find("--discard-target-writes"), std::string::npos) << out;

  json lossy = lossless;
  lossy["rollback"]["path"] = "discard_target_writes";
  lossy["rollback"]["would_lose"] = {"every write made on the target since the switch"};
  lossy["rollback"]["obstacles"] = {"app.public.audit: no primary key"};
  lossy["rollback"]["needs_confirmation"] = true;
  out = RenderRollbackPlan(lossy);
  EXPECT_NE(out.find("would lose:\n    - every write made on the target"), std::string::npos)
      << out;
  EXPECT_NE(out.find("app.public.audit"), std::string::npos) << out;
  EXPECT_NE(out.find("--discard-target-writes"), std::string::npos) << out;
}

}  // namespace
}  // namespace pgshift::cli
