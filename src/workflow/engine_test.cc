// Deterministic tests of the workflow engine against FakeWorld.
#include "workflow/engine.h"

#include <gtest/gtest.h>

#include "store/state_store.h"
#include "testing/fake_env.h"
#include "workflow/engine_test_util.h"
#include "workflow/route_check.h"

namespace pgshift {
namespace {

using json = nlohmann::json;
using testing_util::EngineTest;
using testing_util::HookedStore;
using testing_util::Spec;

TEST_F(EngineTest, AutomaticMigrationRunsEveryPhaseToFinalized) {
  std::string id = Create(Spec());
  Run(id);
  json m = Get(id);
  EXPECT_EQ(m["phase"], "finalized");
  EXPECT_EQ(m["state"], "finalized");
  EXPECT_EQ(Phases(id), (std::vector<std::string>{"preflight", "provision", "sync", "validate",
                                                  "ready", "cdc_prepare", "quiesce", "drain",
                                                  "promote", "snapshot", "cdc_recreate", "switch",
                                                  "verify", "finalize", "finalized"}));
  EXPECT_EQ(world_->routed, world_->target_ep);
  EXPECT_FALSE(world_->held);
  EXPECT_TRUE(world_->fenced);
  EXPECT_TRUE(world_->retired);
  EXPECT_TRUE(world_->promoted);
  EXPECT_TRUE(world_->slots.empty());
  EXPECT_EQ(m["result"]["timeline"], 2);
  EXPECT_GE(m["result"]["hold_ms"].get<int64_t>(), 0);
  // The target replayed the final LSN before it was promoted.
  auto final_lsn = Lsn::Parse(m["result"]["final_lsn"]);
  ASSERT_TRUE(final_lsn.ok());
  EXPECT_GE(world_->replay_lsn, final_lsn->value);
}

TEST_F(EngineTest, OrderOfCutoverSideEffects) {
  std::string id = Create(Spec());
  Run(id);
  auto pos = [&](const std::string& call) {
    auto it = std::find(world_->calls.begin(), world_->calls.end(), call);
    return it - world_->calls.begin();
  };
  EXPECT_LT(pos("PrepareCutover"), pos("Hold")) << "warm-up happens before clients wait";
  // First while the standby is in sync (its cost inside the sustained-lag
  // window), then topped up just before the hold.
  EXPECT_LT(pos("PrepareCutover"), pos("ValidateFindings"));
  EXPECT_LT(pos("Prewarm"), pos("ValidateFindings"));
  EXPECT_EQ(std::count(world_->calls.begin(), world_->calls.end(), "Prewarm"), 2);
  auto last_prewarm = std::find(world_->calls.rbegin(), world_->calls.rend(), "Prewarm");
  EXPECT_LT(world_->calls.rend() - last_prewarm - 1, pos("Hold"));
  EXPECT_GT(world_->calls.rend() - last_prewarm - 1, pos("ValidateFindings"));
  ASSERT_LT(pos("Prewarm"), static_cast<long>(world_->calls.size())) << "the router was asked";
  EXPECT_LT(pos("Prewarm"), pos("Hold")) << "logins ahead are paid for before the hold";
  EXPECT_EQ(world_->prewarmed_on, world_->target_ep);
  EXPECT_LT(pos("Hold"), pos("FenceSource"));
  EXPECT_LT(pos("FenceSource"), pos("WriteFinalMarker"));
  EXPECT_LT(pos("WriteFinalMarker"), pos("PromoteTarget"));
  EXPECT_LT(pos("PromoteTarget"), pos("StartParityCheck"));
  EXPECT_LT(pos("StartParityCheck"), pos("Repoint")) << "snapshot before any write is let through";
  EXPECT_LT(pos("Repoint"), pos("Release"));
  EXPECT_LT(pos("Release"), pos("RetireSource"));
}

TEST_F(EngineTest, InsideTheHoldTwoCommitsRecordEveryPhaseAndEvent) {
  // Each write the engine makes, noted among the world's calls.
  HookedStore counting(*store_);
  counting.on_write = [&](const std::string& op) {
    if (op == "update" || op == "event" || op == "commit") world_->calls.push_back("store-write");
    return Status::OK();
  };
  Engine engine(counting, *factory_, clock_);
  engine.set_autostart(false);
  auto created = engine.Create(Spec());
  ASSERT_TRUE(created.ok());
  const std::string id = (*created)["id"];
  ASSERT_TRUE(engine.RunUntilSettled(id, 100000).ok());
  const auto& calls = world_->calls;
  auto hold = std::find(calls.begin(), calls.end(), "Hold");
  auto repoint = std::find(calls.begin(), calls.end(), "Repoint");
  ASSERT_LT(hold, repoint);
  // While traffic waits: the fence's outcome (entering drain), then drain,
  // promote and snapshot together with entering switch, before the switch.
  EXPECT_EQ(std::count(hold, repoint, "store-write"), 2);
  // Every event of the hold is there, in order.
  std::vector<std::string> wanted = {"traffic held",     "source fenced",
                                     "final source LSN", "target replayed",
                                     "target promoted",  "data parity check started",
                                     "releasing traffic"};
  size_t next = 0;
  const json events = engine.Events(id).value();
  for (const auto& e : events) {
    const std::string msg = e["message"];
    if (next < wanted.size() && msg.find(wanted[next]) != std::string::npos) ++next;
  }
  EXPECT_EQ(next, wanted.size()) << "missing or out of order: "
                                 << wanted[std::min(next, wanted.size() - 1)];
}

TEST_F(EngineTest, FenceSparesTheIdleBackendsTheRouterHoldsAndLogsTheCounts) {
  world_->source_backends = {11, 12, 13, 20};
  world_->held_backend_pids = {11, 12, 13};
  world_->busy_backends = {13};  // in a transaction: terminated although the router lists it
  std::string id = Create(Spec());
  Run(id);
  json m = Get(id);
  ASSERT_EQ(m["phase"], "finalized");
  EXPECT_EQ(world_->last_fence_exemption.server, world_->source_ep);
  EXPECT_EQ(world_->last_fence_exemption.database, "app");
  EXPECT_EQ(world_->last_fence_exemption.pids, (std::vector<int>{11, 12, 13}));
  EXPECT_EQ(world_->source_backends, (std::set<int>{11, 12}));
  EXPECT_EQ(m["result"]["fence_exempted"], 2);
  EXPECT_EQ(m["result"]["fence_terminated"], 2);
  EXPECT_GE(m["result"]["fence_ms"].get<int64_t>(), 0);
  bool logged = false;
  const json events = engine_->Events(id).value();
  for (const auto& e : events) {
    logged = logged || e["message"] ==
                           "source fenced: new connections refused, 2 client session(s) "
                           "terminated, 2 idle session(s) held by the router left alone";
  }
  EXPECT_TRUE(logged);
  auto pos = [&](const std::string& call) {
    return std::find(world_->calls.begin(), world_->calls.end(), call) - world_->calls.begin();
  };
  EXPECT_LT(pos("Hold"), pos("HeldBackendPids"));
  EXPECT_LT(pos("HeldBackendPids"), pos("FenceSource"));
}

TEST_F(EngineTest, WithoutTheRoutersListTheFenceTerminatesEverySession) {
  world_->source_backends = {11, 12};
  world_->held_backend_pids = {11, 12};
  world_->held_backends_fail = true;
  std::string id = Create(Spec());
  Run(id);
  json m = Get(id);
  ASSERT_EQ(m["phase"], "finalized") << "the list is an optimisation, not a condition";
  EXPECT_TRUE(world_->last_fence_exemption.pids.empty());
  EXPECT_TRUE(world_->source_backends.empty());
  EXPECT_EQ(m["result"]["fence_exempted"], 0);
  EXPECT_EQ(m["result"]["fence_terminated"], 2);
  bool warned = false;
  const json events = engine_->Events(id).value();
  for (const auto& e : events) {
    warned = warned || (e["kind"] == "warning" && e["message"].get<std::string>().find(
                                                      "terminates them all") != std::string::npos);
  }
  EXPECT_TRUE(warned);
}

TEST_F(EngineTest, LagGateWaitsUntilLagStaysLowForTheWholeWindow) {
  // The replica replays slower than the source writes at first.
  world_->wal_per_call = 4 << 20;
  world_->replay_per_call = 1 << 20;
  std::string id = Create(Spec(false, false));
  for (int i = 0; i < 200; ++i) {
    ASSERT_TRUE(engine_->RunUntilSettled(id, 20).code() == Code::kTimeout ||
                Get(id)["phase"] != "sync");
    if (Get(id)["phase"] == "sync") break;
  }
  ASSERT_EQ(Get(id)["phase"], "sync");
  for (int i = 0; i < 20; ++i) (void)engine_->RunUntilSettled(id, 10);
  json m = Get(id);
  EXPECT_EQ(m["phase"], "sync") << "must not pass the gate while lag grows";
  EXPECT_GT(m["progress"]["lag_bytes"].get<int64_t>(), 1 << 20);
  EXPECT_EQ(m["progress"]["in_sync_ms"], 0);
  // Load drops: the replica catches up, and the gate opens only after the window.
  world_->wal_per_call = 4096;
  world_->replay_per_call = 64 << 20;
  int64_t caught_up_at = 0;
  while (Get(id)["phase"] == "sync") {
    (void)engine_->RunUntilSettled(id, 1);
    if (!caught_up_at && Get(id)["progress"].value("in_sync_ms", -1) == 0 &&
        Get(id)["progress"].value("in_sync_since_ms", int64_t{0}) > 0) {
      caught_up_at = Get(id)["progress"]["in_sync_since_ms"];
    }
  }
  Run(id);
  m = Get(id);
  EXPECT_EQ(m["phase"], "ready");
  EXPECT_EQ(m["state"], "waiting");
  json events = engine_->Events(id).value();
  int64_t validate_at = 0;
  for (const auto& e : events) {
    if (e["phase"] == "validate" && !validate_at) validate_at = e["at_ms"];
  }
  ASSERT_GT(caught_up_at, 0);
  EXPECT_GE(validate_at - caught_up_at, 2000) << "sustain window is 2 s";
}

TEST_F(EngineTest, WaitsForOperatorAtReadyAndAfterVerify) {
  std::string id = Create(Spec(false, false));
  Run(id);
  EXPECT_EQ(Get(id)["phase"], "ready");
  EXPECT_EQ(Get(id)["state"], "waiting");
  EXPECT_FALSE(world_->held);
  EXPECT_EQ(engine_->Act(id, "finalize", json::object()).status().code(),
            Code::kFailedPrecondition);
  ASSERT_TRUE(engine_->Act(id, "cutover", json::object()).ok());
  Run(id);
  EXPECT_EQ(Get(id)["phase"], "verify");
  EXPECT_EQ(Get(id)["state"], "waiting");
  EXPECT_EQ(Get(id)["result"]["verified"], true);
  EXPECT_EQ(engine_->Act(id, "cutover", json::object()).status().code(), Code::kFailedPrecondition);
  ASSERT_TRUE(engine_->Act(id, "finalize", json::object()).ok());
  Run(id);
  EXPECT_EQ(Get(id)["phase"], "finalized");
  EXPECT_EQ(engine_->Act(id, "rollback", json::object()).status().code(),
            Code::kFailedPrecondition);
}

TEST_F(EngineTest, HoldTimeoutAbortsCutoverAndLeavesTrafficOnTheSource) {
  world_->hold_times_out = true;
  std::string id = Create(Spec(true, true));
  Run(id);
  json m = Get(id);
  EXPECT_EQ(m["phase"], "ready");
  EXPECT_EQ(m["state"], "waiting") << "automatic attempts exhausted";
  EXPECT_NE(m["error"].get<std::string>().find("hold deadline"), std::string::npos);
  EXPECT_FALSE(world_->fenced);
  EXPECT_FALSE(world_->held);
  EXPECT_FALSE(world_->promoted);
  EXPECT_EQ(world_->routed, world_->source_ep);
  EXPECT_EQ(m["result"]["cutover_attempts"], 3);
  // Once the long transaction is gone, an operator's cutover succeeds.
  world_->hold_times_out = false;
  ASSERT_TRUE(engine_->Act(id, "cutover", json::object()).ok());
  Run(id);
  EXPECT_EQ(Get(id)["phase"], "finalized");
}

TEST_F(EngineTest, DrainTimeoutUnfencesAndReleases) {
  std::string id = Create(Spec(false, false));
  Run(id);
  world_->replay_per_call = 0;  // the replica stops replaying
  ASSERT_TRUE(engine_->Act(id, "cutover", json::object()).ok());
  Run(id);
  json m = Get(id);
  EXPECT_EQ(m["phase"], "ready");
  EXPECT_NE(m["error"].get<std::string>().find("replayed only up to"), std::string::npos);
  EXPECT_FALSE(world_->fenced);
  EXPECT_FALSE(world_->held);
  EXPECT_FALSE(world_->promoted);
}

TEST_F(EngineTest, ResumesAfterACrashInsideEveryStep) {
  for (const char* where :
       {"EnsurePhysicalSlot", "CreateReplica", "Lag", "FenceSource", "WriteFinalMarker", "Hold",
        "PromoteTarget", "StartParityCheck", "Repoint", "Release", "DropSlot", "RetireSource"}) {
    SCOPED_TRACE(where);
    SetUp();
    world_->crash_on = where;
    std::string id = Create(Spec());
    bool crashed = false;
    try {
      (void)engine_->RunUntilSettled(id);
    } catch (const SimulatedCrash&) {
      crashed = true;
    }
    ASSERT_TRUE(crashed);
    EXPECT_NE(Get(id)["phase"], "finalized");
    if (std::string(where) == "PromoteTarget" || std::string(where) == "StartParityCheck") {
      // Promote and snapshot are committed with the switch phase: the
      // restart finds drain and runs them again.
      EXPECT_EQ(Get(id)["phase"], "drain");
    }
    engine_ = NewEngine();  // a restarted pgshiftd
    Run(id);
    json m = Get(id);
    EXPECT_EQ(m["phase"], "finalized");
    EXPECT_EQ(world_->routed, world_->target_ep);
    EXPECT_FALSE(world_->held);
    EXPECT_TRUE(world_->retired);
    EXPECT_TRUE(world_->slots.empty());
    EXPECT_EQ(world_->timeline, 2) << "promoted exactly once";
  }
}

TEST_F(EngineTest, CrashBeforeAnEffectAlsoResumes) {
  for (const char* where : {"FenceSource", "PromoteTarget", "Repoint", "RetireSource"}) {
    SCOPED_TRACE(where);
    SetUp();
    world_->crash_on = where;
    world_->crash_after_effect = false;
    std::string id = Create(Spec());
    EXPECT_THROW((void)engine_->RunUntilSettled(id), SimulatedCrash);
    engine_ = NewEngine();
    Run(id);
    EXPECT_EQ(Get(id)["phase"], "finalized");
  }
}

// Without reverse replication (engine_rollback_test.cc has it on).
TEST_F(EngineTest, RollbackAfterSwitchNeedsExplicitDiscardAndRoutesBack) {
  world_->capabilities.reverse_replication = false;
  std::string id = Create(Spec(true, false));
  Run(id);
  ASSERT_EQ(Get(id)["phase"], "verify");
  ASSERT_EQ(world_->routed, world_->target_ep);
  auto refused = engine_->Act(id, "rollback", json::object());
  EXPECT_EQ(refused.status().code(), Code::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("discard_target_writes"), std::string::npos);
  EXPECT_EQ(engine_->Act(id, "rollback", {{"bogus", 1}}).status().code(), Code::kInvalidArgument);
  ASSERT_TRUE(engine_->Act(id, "rollback", {{"discard_target_writes", true}}).ok());
  Run(id);
  json m = Get(id);
  EXPECT_EQ(m["phase"], "rolled_back");
  EXPECT_EQ(world_->routed, world_->source_ep);
  EXPECT_FALSE(world_->fenced);
  EXPECT_FALSE(world_->held);
  EXPECT_FALSE(world_->target_running);
  EXPECT_FALSE(world_->retired);
  EXPECT_TRUE(world_->slots.empty());
}

TEST_F(EngineTest, RollbackBeforeCutoverLeavesTheRouteAlone) {
  std::string id = Create(Spec(false, false));
  Run(id);
  ASSERT_EQ(Get(id)["phase"], "ready");
  ASSERT_TRUE(engine_->Act(id, "rollback", json::object()).ok());
  Run(id);
  EXPECT_EQ(Get(id)["phase"], "rolled_back");
  EXPECT_EQ(world_->routed, world_->source_ep);
  EXPECT_FALSE(world_->fenced);
  EXPECT_FALSE(world_->promoted);
  EXPECT_FALSE(world_->target_running);
  EXPECT_TRUE(world_->slots.empty());
}

TEST_F(EngineTest, FailedVerifyRoutesTrafficBack) {
  world_->probe_fails = true;
  std::string id = Create(Spec(true, true));
  Run(id);
  json m = Get(id);
  EXPECT_EQ(m["phase"], "rolled_back");
  EXPECT_NE(m["result"]["verify_failure"].get<std::string>().find("refuses writes"),
            std::string::npos);
  EXPECT_EQ(world_->routed, world_->source_ep);
  EXPECT_FALSE(world_->fenced);
}

TEST_F(EngineTest, BlockingFindingStopsUntilOverriddenWithAReason) {
  world_->preflight.push_back({.id = "unlogged_tables",
                               .severity = checks::Severity::kBlocking,
                               .subject = "public.cache",
                               .message = "unlogged table with rows"});
  std::string id = Create(Spec());
  Run(id);
  json m = Get(id);
  EXPECT_EQ(m["phase"], "preflight");
  EXPECT_EQ(m["state"], "blocked");
  EXPECT_TRUE(world_->slots.empty()) << "nothing is created while blocked";
  EXPECT_EQ(engine_->Act(id, "override", {{"finding", "unlogged_tables"}}).status().code(),
            Code::kInvalidArgument);
  EXPECT_EQ(engine_->Act(id, "override", {{"finding", "nope"}, {"reason", "x"}}).status().code(),
            Code::kNotFound);
  EXPECT_EQ(engine_->Act(id, "cutover", json::object()).status().code(), Code::kFailedPrecondition);
  ASSERT_TRUE(engine_
                  ->Act(id, "override",
                        {{"finding", "unlogged_tables"},
                         {"subject", "public.cache"},
                         {"reason", "cache is rebuilt on start"}})
                  .ok());
  Run(id);
  m = Get(id);
  EXPECT_EQ(m["phase"], "finalized");
  bool recorded = false;
  for (const auto& f : m["findings"]) {
    recorded = recorded || (f["id"] == "unlogged_tables" && f["overridden"] == true &&
                            f["override_reason"] == "cache is rebuilt on start");
  }
  EXPECT_TRUE(recorded);
}

TEST_F(EngineTest, ParityMismatchRefusesFinalizeUntilOverridden) {
  world_->parity_mismatch = {"public.cache"};
  std::string id = Create(Spec(true, true));
  Run(id);
  json m = Get(id);
  EXPECT_EQ(m["phase"], "verify");
  EXPECT_EQ(m["state"], "blocked");
  EXPECT_NE(m["error"].get<std::string>().find("public.cache"), std::string::npos);
  EXPECT_FALSE(world_->retired) << "the source must stay intact";
  auto refused = engine_->Act(id, "finalize", json::object());
  EXPECT_EQ(refused.status().code(), Code::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("public.cache"), std::string::npos);
  ASSERT_TRUE(engine_
                  ->Act(id, "override",
                        {{"finding", "data_parity"},
                         {"subject", "public.cache"},
                         {"reason", "cache table, rebuilt"}})
                  .ok());
  Run(id);
  EXPECT_EQ(Get(id)["phase"], "finalized");
}

TEST_F(EngineTest, PrePromotionParityMismatchAbortsWhileTheSourceIsAuthoritative) {
  world_->parity_mismatch = {"public.cache"};
  json spec = Spec(true, true);
  spec["options"]["parity_before_promote_ms"] = 2000;
  std::string id = Create(spec);
  Run(id);
  json m = Get(id);
  EXPECT_EQ(m["phase"], "ready");
  EXPECT_NE(m["error"].get<std::string>().find("public.cache"), std::string::npos);
  EXPECT_FALSE(world_->promoted);
  EXPECT_FALSE(world_->fenced);
  EXPECT_FALSE(world_->held);
  EXPECT_EQ(world_->routed, world_->source_ep);
}

TEST_F(EngineTest, ParityInterruptedByARestartIsAWarningNotASilentPass) {
  std::string id = Create(Spec(true, false));
  world_->crash_on = "ProbeTargetWrite";  // in verify, after the check started
  world_->crash_after_effect = false;
  EXPECT_THROW((void)engine_->RunUntilSettled(id), SimulatedCrash);
  world_->parity_started = false;  // the restarted pgshiftd has lost the snapshot
  engine_ = NewEngine();
  Run(id);
  json m = Get(id);
  ASSERT_EQ(m["phase"], "verify");
  bool warned = false;
  for (const auto& f : m["findings"]) {
    warned = warned || (f["id"] == "data_parity" && f["severity"] == "warning");
  }
  EXPECT_TRUE(warned) << m["findings"].dump();
}

TEST_F(EngineTest, BadSpecsAreRejectedWithTheFieldNamedAndNothingStored) {
  auto expect_bad = [&](json spec, const std::string& needle) {
    auto r = engine_->Create(spec);
    ASSERT_FALSE(r.ok()) << spec.dump();
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
    EXPECT_NE(r.status().message().find(needle), std::string::npos) << r.status().message();
  };
  json s = Spec();
  s["colour"] = "blue";
  expect_bad(s, "spec.colour");
  s = Spec();
  s["source"]["conninfo"] = "host=x port=5432 nonsense";
  expect_bad(s, "source.conninfo");
  s = Spec();
  s["source"]["conninfo"] = "host=x port=notaport";
  expect_bad(s, "source.conninfo: port 'notaport'");
  s = Spec();
  s.erase("target");
  expect_bad(s, "spec.target");
  s = Spec();
  s["target"]["data_dir"] = "relative/dir";
  expect_bad(s, "absolute");
  s = Spec();
  s["options"]["sustain_seconds"] = "long";
  expect_bad(s, "options.sustain_seconds");
  s = Spec();
  s["options"]["parity_load_pct"] = 0;
  expect_bad(s, "options.parity_load_pct");
  s = Spec();
  s["options"]["basebackup_max_rate_kbps"] = 5;
  expect_bad(s, "options.basebackup_max_rate_kbps");
  s = Spec();
  s["options"]["max_step_attempts"] = 0;
  expect_bad(s, "max_step_attempts");
  s = Spec();
  s["options"]["max_auto_cutover_attempts"] = "three";
  expect_bad(s, "options.max_auto_cutover_attempts");
  expect_bad(json::array(), "JSON object");
  EXPECT_TRUE(engine_->List().value().empty());
  EXPECT_EQ(engine_->Get("m-missing").status().code(), Code::kNotFound);
  EXPECT_EQ(engine_->Act("m-missing", "cutover", json::object()).status().code(), Code::kNotFound);
}

TEST_F(EngineTest, UnreachableSourceIsRefusedAtCreate) {
  world_->source_down = true;
  auto r = engine_->Create(Spec());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_NE(r.status().message().find("cannot reach the source"), std::string::npos);
  EXPECT_TRUE(engine_->List().value().empty());
}

TEST_F(EngineTest, InactiveSlotIsDroppedOnlyOnExplicitRequest) {
  world_->logical_slots = {{.name = "old_etl", .plugin = "test_decoding", .active = false},
                           {.name = "live_cdc", .plugin = "test_decoding", .active = true}};
  world_->preflight.push_back({.id = "slot_health",
                               .severity = checks::Severity::kBlocking,
                               .subject = "old_etl",
                               .message = "inactive, retains WAL"});
  std::string id = Create(Spec(false, false));
  Run(id);
  ASSERT_EQ(Get(id)["state"], "blocked");
  EXPECT_EQ(world_->logical_slots.size(), 2u) << "never dropped without a request";
  EXPECT_EQ(engine_->Act(id, "drop_slot", {{"slot", "old_etl"}}).status().code(),
            Code::kInvalidArgument);
  ASSERT_TRUE(engine_->Act(id, "drop_slot", {{"slot", "live_cdc"}, {"reason", "x"}}).ok());
  Run(id);
  EXPECT_EQ(world_->logical_slots.size(), 2u) << "an active slot is refused";
  world_->preflight.clear();  // the check no longer sees the slot once it is gone
  ASSERT_TRUE(engine_->Act(id, "drop_slot", {{"slot", "old_etl"}, {"reason", "ETL retired"}}).ok());
  Run(id);
  ASSERT_EQ(world_->logical_slots.size(), 1u);
  EXPECT_EQ(world_->logical_slots[0].name, "live_cdc");
  EXPECT_EQ(Get(id)["phase"], "ready");
}

TEST_F(EngineTest, AStepThatKeepsFailingBacksOffThenStopsForAnOperator) {
  world_->fail_on = "EnsurePhysicalSlot";
  json spec = Spec();
  spec["options"]["max_step_attempts"] = 3;
  std::string id = Create(spec);
  const int64_t started = clock_.now_;
  Run(id);
  json m = Get(id);
  EXPECT_EQ(m["phase"], "provision");
  EXPECT_EQ(m["state"], "failed");
  EXPECT_NE(m["error"].get<std::string>().find("EnsurePhysicalSlot failed"), std::string::npos);
  int retries = 0;
  bool gave_up = false;
  const json events = engine_->Events(id).value();
  for (const auto& e : events) {
    const std::string msg = e["message"];
    retries += msg.find("will retry") != std::string::npos;
    gave_up = gave_up || msg.find("giving up after 3 attempts") != std::string::npos;
  }
  EXPECT_EQ(retries, 2);
  EXPECT_TRUE(gave_up);
  EXPECT_GE(clock_.now_ - started, 400 + 800) << "backs off 200 ms << attempt";
  world_->fail_on.clear();
  ASSERT_TRUE(engine_->Act(id, "retry", json::object()).ok());
  Run(id);
  EXPECT_EQ(Get(id)["phase"], "finalized");
}

TEST_F(EngineTest, KeysAnotherVersionStoredSurviveTheRunner) {
  std::string id = Create(Spec(false, false));
  auto rec = store_->Get(id);
  ASSERT_TRUE(rec.ok());
  rec->result["reverse_replication"] = {{"slot", "pgshift_rev"}};
  rec->progress["cdc_lag_bytes"] = 12;
  ASSERT_TRUE(store_->Update(*rec).ok());
  Run(id);
  json m = Get(id);
  ASSERT_EQ(m["phase"], "ready");
  EXPECT_EQ(m["result"]["reverse_replication"], (json{{"slot", "pgshift_rev"}}));
  EXPECT_EQ(m["progress"]["cdc_lag_bytes"], 12);
  EXPECT_TRUE(m["progress"].contains("lag_bytes")) << "and the runner's own keys beside them";
}

TEST_F(EngineTest, SecondMigrationOntoTheSameTargetDirIsRefused) {
  std::string id = Create(Spec(false, false));
  auto again = engine_->Create(Spec());
  EXPECT_EQ(again.status().code(), Code::kAlreadyExists);
  EXPECT_NE(again.status().message().find(id), std::string::npos);
}

// --- CDC: logical slots carried across the cutover (workflow/cdc_slots.h) ---

// A slot whose consumer the router carries (walsender pid 4242).
void AddCarriedSlot(FakeWorld& w, const std::string& name = "orders_cdc", int pid = 4242) {
  LogicalSlot s{.name = name, .plugin = "test_decoding", .database = "app"};
  s.confirmed_flush_lsn = "0/1000000";
  s.active = true;
  s.active_pid = pid;
  w.logical_slots.push_back(s);
  w.replication_sessions.push_back({.backend_pid = pid, .streaming = true, .slot = name});
}

int64_t CallPos(const std::vector<std::string>& calls, const std::string& call) {
  return std::find(calls.begin(), calls.end(), call) - calls.begin();
}

TEST_F(EngineTest, CdcSlotIsDrainedPausedAndRecreatedBeforeTrafficIsReleased) {
  AddCarriedSlot(*world_);
  std::string id = Create(Spec());
  Run(id);
  json m = Get(id);
  ASSERT_EQ(m["phase"], "finalized") << m.dump();
  const auto& c = world_->calls;
  EXPECT_LT(CallPos(c, "WriteFinalMarker"), CallPos(c, "RequestReplicationFeedback"));
  EXPECT_LT(CallPos(c, "RequestReplicationFeedback"), CallPos(c, "PauseReplication"));
  EXPECT_LT(CallPos(c, "PauseReplication"), CallPos(c, "PromoteTarget"));
  EXPECT_LT(CallPos(c, "PromoteTarget"), CallPos(c, "EnsureTargetLogicalSlot"));
  EXPECT_LT(CallPos(c, "EnsureTargetLogicalSlot"), CallPos(c, "Repoint"))
      << "the slot exists on the target before any client write is released";
  ASSERT_EQ(world_->target_logical_slots.size(), 1u);
  EXPECT_EQ(world_->target_logical_slots[0].name, "orders_cdc");
  EXPECT_EQ(world_->target_logical_slots[0].plugin, "test_decoding");
  EXPECT_TRUE(world_->logical_slots.empty()) << "finalize drops the source's carried slot";
  const json& slot = m["result"]["cdc_slots"][0];
  EXPECT_EQ(slot["state"], "advanced");
  EXPECT_TRUE(slot["consumer"]["through_router"].get<bool>());
  auto drained = Lsn::Parse(slot["drained_lsn"]);
  auto final_lsn = Lsn::Parse(m["result"]["final_lsn"]);
  ASSERT_TRUE(drained.ok() && final_lsn.ok());
  EXPECT_GE(*drained, *final_lsn);
  EXPECT_GE(slot["drain_ms"].get<int64_t>(), 0);
  EXPECT_FALSE(slot["recreated_lsn"].get<std::string>().empty());
}

TEST_F(EngineTest, CdcConsumerThatDoesNotConfirmAbortsTheCutoverNamingTheSlot) {
  AddCarriedSlot(*world_);
  world_->consumers_confirm = false;
  json spec = Spec();
  spec["options"]["cdc_drain_timeout_ms"] = 300;
  std::string id = Create(spec);
  Run(id);
  json m = Get(id);
  EXPECT_EQ(m["phase"], "ready");
  EXPECT_NE(m["error"].get<std::string>().find("orders_cdc"), std::string::npos) << m["error"];
  EXPECT_EQ(world_->routed, world_->source_ep) << "traffic stays on the source";
  EXPECT_FALSE(world_->held);
  EXPECT_FALSE(world_->fenced);
  EXPECT_FALSE(world_->promoted);
  EXPECT_EQ(world_->replication_pauses, 0) << "a consumer is paused only once drained";
  EXPECT_TRUE(world_->target_logical_slots.empty());
}

TEST_F(EngineTest, CdcConsumerAroundTheRouterBlocksAtPreflightUntilOverridden) {
  LogicalSlot s{.name = "direct_cdc", .plugin = "wal2json", .database = "app"};
  s.active = true;
  s.active_pid = 777;
  s.consumer_client_addr = "10.1.2.3:5555";
  world_->logical_slots.push_back(s);
  std::string id = Create(Spec());
  Run(id);
  json m = Get(id);
  ASSERT_EQ(m["phase"], "preflight");
  EXPECT_EQ(m["state"], "blocked");
  EXPECT_NE(m["error"].get<std::string>().find("cdc_consumer_bypasses_router(direct_cdc)"),
            std::string::npos)
      << m["error"];
  bool names_address = false;
  for (const auto& f : m["findings"]) {
    if (f["id"] == "cdc_consumer_bypasses_router") {
      names_address = f["message"].get<std::string>().find("10.1.2.3:5555") != std::string::npos;
    }
  }
  EXPECT_TRUE(names_address) << m["findings"].dump();
  ASSERT_TRUE(engine_
                  ->Act(id, "override",
                        {{"finding", "cdc_consumer_bypasses_router"},
                         {"subject", "direct_cdc"},
                         {"reason", "we repoint the consumer by hand"}})
                  .ok());
  Run(id);
  EXPECT_EQ(Get(id)["phase"], "finalized");
  EXPECT_EQ(world_->target_logical_slots.size(), 1u);
}

// A route that sends its clients to another server than the source: the
// cutover would move them onto a copy of the wrong database.
TEST_F(EngineTest, ARouteServingAnotherServerBlocksAtPreflightUntilOverridden) {
  world_->routed = {"127.0.0.1", 6543};
  std::string id = Create(Spec());
  Run(id);
  json m = Get(id);
  ASSERT_EQ(m["phase"], "preflight");
  EXPECT_EQ(m["state"], "blocked");
  EXPECT_NE(m["error"].get<std::string>().find("route_serves_another_server"), std::string::npos)
      << m["error"];
  EXPECT_FALSE(world_->held);
  ASSERT_TRUE(engine_
                  ->Act(id, "override",
                        {{"finding", "route_serves_another_server"},
                         {"subject", "route"},
                         {"reason", "the proxy reaches the source through a relay"}})
                  .ok());
  Run(id);
  EXPECT_EQ(Get(id)["phase"], "finalized");
  EXPECT_EQ(world_->routed, world_->target_ep);
}

TEST(RouteCheck, SameServerByAddressAndPort) {
  EXPECT_TRUE(SameServer({"127.0.0.1", 5432}, {"127.0.0.1", 5432}));
  EXPECT_TRUE(SameServer({"localhost", 5432}, {"127.0.0.1", 5432}));
  EXPECT_FALSE(SameServer({"localhost", 5432}, {"127.0.0.1", 5433}));
  EXPECT_FALSE(SameServer({"127.0.0.2", 5432}, {"127.0.0.1", 5432}));
  EXPECT_FALSE(SameServer({"no-such-host.invalid", 5432}, {"127.0.0.1", 5432}));
}

TEST_F(EngineTest, CrashAroundCdcRecreateResumesWithEachSlotOnce) {
  for (const char* where : {"PauseReplication", "EnsureTargetLogicalSlot"}) {
    SCOPED_TRACE(where);
    SetUp();
    AddCarriedSlot(*world_);
    AddCarriedSlot(*world_, "audit_cdc", 4343);
    world_->crash_on = where;
    std::string id = Create(Spec());
    EXPECT_THROW((void)engine_->RunUntilSettled(id), SimulatedCrash);
    EXPECT_EQ(Get(id)["phase"], "drain") << "promote to cdc_recreate commit with the switch";
    engine_ = NewEngine();
    Run(id);
    json m = Get(id);
    EXPECT_EQ(m["phase"], "finalized");
    EXPECT_EQ(world_->target_logical_slots.size(), 2u);
    for (const auto& slot : m["result"]["cdc_slots"]) EXPECT_EQ(slot["state"], "advanced");
  }
}

TEST_F(EngineTest, FinalizeWaitsForCarriedSlotsToAdvanceOnTheTarget) {
  AddCarriedSlot(*world_);
  std::string id = Create(Spec(true, true));
  world_->crash_on = "Repoint";  // stop right at the switch to stop consumers confirming
  world_->crash_after_effect = true;
  EXPECT_THROW((void)engine_->RunUntilSettled(id), SimulatedCrash);
  world_->consumers_confirm = false;  // the consumer never reconnects
  engine_ = NewEngine();
  EXPECT_EQ(engine_->RunUntilSettled(id, 500).code(), Code::kTimeout) << "finalize keeps waiting";
  json m = Get(id);
  EXPECT_EQ(m["phase"], "verify");
  EXPECT_FALSE(world_->retired) << "the source and its slot stay until the consumer moved";
  EXPECT_EQ(world_->logical_slots.size(), 1u);
  ASSERT_TRUE(engine_
                  ->Act(id, "override",
                        {{"finding", "cdc_slot_advanced"},
                         {"subject", "orders_cdc"},
                         {"reason", "the consumer is retired"}})
                  .ok());
  Run(id);
  EXPECT_EQ(Get(id)["phase"], "finalized");
}

}  // namespace
}  // namespace pgshift
