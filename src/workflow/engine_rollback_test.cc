// Deterministic tests of rolling back after the switch (DESIGN.md §2):
// reverse replication set up before traffic is released, the lossless path
// (hold, the source applies the target's writes, sequences, CDC slots moved
// past what it applied, route back), the path that discards the target's
// writes when reverse replication cannot carry them, the dry run, and the
// refusals (after finalize) and restarts.
#include <gtest/gtest.h>

#include "testing/fake_env.h"
#include "workflow/engine.h"
#include "workflow/engine_test_util.h"

namespace pgshift {
namespace {

using json = nlohmann::json;
using testing_util::EngineTest;
using testing_util::Spec;

int64_t CallPos(const std::vector<std::string>& calls, const std::string& call) {
  return std::find(calls.begin(), calls.end(), call) - calls.begin();
}

int64_t LastCallPos(const std::vector<std::string>& calls, const std::string& call) {
  auto it = std::find(calls.rbegin(), calls.rend(), call);
  return it == calls.rend() ? static_cast<int64_t>(calls.size()) : calls.rend() - it - 1;
}

void AddCarriedSlot(FakeWorld& w) {
  LogicalSlot s{.name = "orders_cdc", .plugin = "test_decoding", .database = "app"};
  s.confirmed_flush_lsn = "0/1000000";
  s.active = true;
  s.active_pid = 4242;
  w.logical_slots.push_back(s);
  w.replication_sessions.push_back({.backend_pid = 4242, .streaming = true, .slot = s.name});
}

class RollbackTest : public EngineTest {
 protected:
  // A migration switched to the target, waiting in verify.
  std::string SwitchedMigration() {
    std::string id = Create(Spec(/*auto_cutover=*/true, /*auto_finalize=*/false));
    Run(id);
    EXPECT_EQ(Get(id)["phase"], "verify");
    EXPECT_EQ(world_->routed, world_->target_ep);
    return id;
  }
};

TEST_F(RollbackTest, ReverseReplicationIsInPlaceBeforeTrafficIsReleased) {
  std::string id = SwitchedMigration();
  const auto& c = world_->calls;
  EXPECT_LT(CallPos(c, "ReverseReplicationFindings"), CallPos(c, "Hold"))
      << "what it can carry is checked before the hold";
  EXPECT_LT(CallPos(c, "PromoteTarget"), CallPos(c, "EnsureReverseReplication"));
  EXPECT_LT(CallPos(c, "EnsureReverseReplication"), CallPos(c, "Repoint"));
  EXPECT_TRUE(world_->reverse_in_place);
  json m = Get(id);
  EXPECT_EQ(m["result"]["reverse_replication_on"], true);
  EXPECT_EQ(m["rollback_path"], "reverse_replication");
}

TEST_F(RollbackTest, LosslessRollbackAppliesTheTargetsWritesWhileHeldThenRoutesBack) {
  AddCarriedSlot(*world_);
  std::string id = SwitchedMigration();
  // No confirmation needed: nothing is lost.
  ASSERT_TRUE(engine_->Act(id, "rollback", json::object()).ok());
  world_->calls.clear();
  Run(id);
  json m = Get(id);
  ASSERT_EQ(m["phase"], "rolled_back") << m.dump(1);
  const json& r = m["result"];
  EXPECT_EQ(r["rollback_path"], "reverse_replication");
  EXPECT_EQ(r["rollback_sequences_synced"], world_->sequences_behind);
  auto target = Lsn::Parse(r["rollback_target_lsn"]);
  auto applied = Lsn::Parse(r["rollback_applied_lsn"]);
  ASSERT_TRUE(target.ok() && applied.ok()) << r.dump();
  EXPECT_GE(*applied, *target);
  EXPECT_GE(r["rollback_hold_ms"].get<int64_t>(), 0);
  const auto& c = world_->calls;
  // Held first; the consumers confirm on the target and are paused; the
  // source applies, sequences follow, the CDC slot moves past the target's
  // position; only then back to the source, unfenced, released.
  EXPECT_LT(CallPos(c, "Hold"), CallPos(c, "InspectReverseReplication"));
  EXPECT_LT(CallPos(c, "InspectReverseReplication"), CallPos(c, "PauseReplication"));
  EXPECT_LT(CallPos(c, "PauseReplication"), CallPos(c, "SyncSequencesToSource"));
  EXPECT_LT(CallPos(c, "AdvanceSourceSlot"), CallPos(c, "Hold")) << "most of it before the hold";
  EXPECT_LT(CallPos(c, "SyncSequencesToSource"), LastCallPos(c, "AdvanceSourceSlot"));
  EXPECT_LT(LastCallPos(c, "AdvanceSourceSlot"), CallPos(c, "Repoint"));
  EXPECT_LT(CallPos(c, "Repoint"), CallPos(c, "DropReverseReplication"));
  EXPECT_LT(CallPos(c, "DropReverseReplication"), CallPos(c, "UnfenceSource"));
  EXPECT_LT(CallPos(c, "UnfenceSource"), CallPos(c, "Release"));
  ASSERT_TRUE(world_->advanced.count("orders_cdc"));
  EXPECT_GT(world_->advanced["orders_cdc"], target->value)
      << "the source slot is past every position the consumer knows";
  EXPECT_EQ(world_->routed, world_->source_ep);
  EXPECT_FALSE(world_->fenced);
  EXPECT_FALSE(world_->held);
  EXPECT_FALSE(world_->reverse_in_place);
  EXPECT_FALSE(world_->target_running);
}

TEST_F(RollbackTest, WhatReverseReplicationCannotCarryMakesTheRollbackAskForConfirmation) {
  world_->reverse_obstacles.push_back({.id = "reverse_replication",
                                       .severity = checks::Severity::kBlocking,
                                       .subject = "app.public.nokey",
                                       .message = "table app.public.nokey has no primary key"});
  std::string id = SwitchedMigration();
  json m = Get(id);
  EXPECT_EQ(m["result"]["reverse_replication_on"], false);
  EXPECT_NE(m["result"]["reverse_replication_off"].get<std::string>().find("app.public.nokey"),
            std::string::npos);
  EXPECT_EQ(m["rollback_path"], "discard_target_writes");
  EXPECT_FALSE(world_->reverse_in_place);
  bool named = false;
  for (const auto& f : m["findings"]) {
    named = named || (f["id"] == "reverse_replication" && f["subject"] == "app.public.nokey" &&
                      f["severity"] == "warning");
  }
  EXPECT_TRUE(named) << m["findings"].dump(1);
  auto refused = engine_->Act(id, "rollback", json::object());
  ASSERT_EQ(refused.status().code(), Code::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("every write made on the target since the switch"),
            std::string::npos)
      << refused.status().message();
  EXPECT_NE(refused.status().message().find("app.public.nokey"), std::string::npos);
  ASSERT_TRUE(engine_->Act(id, "rollback", {{"discard_target_writes", true}}).ok());
  Run(id);
  EXPECT_EQ(Get(id)["result"]["rollback_path"], "discard_target_writes");
  EXPECT_EQ(world_->routed, world_->source_ep);
  EXPECT_FALSE(world_->fenced);
}

TEST_F(RollbackTest, DryRunSaysThePathWithoutRollingBack) {
  AddCarriedSlot(*world_);
  std::string id = SwitchedMigration();
  auto plan = engine_->Act(id, "rollback", {{"dry_run", true}});
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  const json& p = (*plan)["rollback"];
  EXPECT_EQ(p["path"], "reverse_replication");
  EXPECT_EQ(p["needs_confirmation"], false);
  EXPECT_TRUE(p["would_lose"].empty());
  EXPECT_EQ(p["expected_hold_ms"], Get(id)["result"]["hold_ms"]);
  EXPECT_NE(p["moves_back"].dump().find("orders_cdc"), std::string::npos);
  EXPECT_EQ(Get(id)["phase"], "verify") << "a dry run changes nothing";
  EXPECT_TRUE(Get(id)["pending_actions"].empty());
  // The apply worker is failing: the dry run says so and what would be lost.
  world_->reverse_apply_stuck = true;
  plan = engine_->Act(id, "rollback", {{"dry_run", true}});
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ((*plan)["rollback"]["path"], "discard_target_writes");
  EXPECT_EQ((*plan)["rollback"]["needs_confirmation"], true);
  EXPECT_NE((*plan)["rollback"]["obstacles"].dump().find("apply worker"), std::string::npos);
}

TEST_F(RollbackTest, ASourceThatCannotApplyReleasesTrafficAndCanBeToldToDiscard) {
  std::string id = SwitchedMigration();
  ASSERT_TRUE(engine_->Act(id, "rollback", json::object()).ok());
  world_->reverse_apply_stuck = true;
  Run(id);
  json m = Get(id);
  ASSERT_EQ(m["phase"], "rolling_back");
  ASSERT_EQ(m["state"], "failed");
  EXPECT_NE(m["error"].get<std::string>().find("apply worker"), std::string::npos) << m["error"];
  EXPECT_FALSE(world_->held) << "traffic goes on, on the target, between attempts";
  EXPECT_EQ(world_->routed, world_->target_ep);
  EXPECT_EQ(engine_->Act(id, "rollback", json::object()).status().code(),
            Code::kFailedPrecondition);
  ASSERT_TRUE(engine_->Act(id, "rollback", {{"discard_target_writes", true}}).ok());
  Run(id);
  m = Get(id);
  EXPECT_EQ(m["phase"], "rolled_back");
  EXPECT_EQ(m["result"]["rollback_path"], "discard_target_writes");
  EXPECT_EQ(world_->routed, world_->source_ep);
  EXPECT_FALSE(world_->reverse_in_place);
}

TEST_F(RollbackTest, RefusedAfterFinalizeWithTheReason) {
  std::string id = Create(Spec(/*auto_cutover=*/true, /*auto_finalize=*/true));
  Run(id);
  ASSERT_EQ(Get(id)["phase"], "finalized");
  EXPECT_FALSE(world_->reverse_in_place) << "finalize tears reverse replication down";
  EXPECT_LT(LastCallPos(world_->calls, "DropReverseReplication"),
            CallPos(world_->calls, "RetireSource"));
  EXPECT_EQ(Get(id)["rollback_path"], "none");
  auto refused = engine_->Act(id, "rollback", json::object());
  ASSERT_EQ(refused.status().code(), Code::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("source is retired"), std::string::npos)
      << refused.status().message();
}

TEST_F(RollbackTest, RollingBackTwiceIsHarmless) {
  std::string id = SwitchedMigration();
  ASSERT_TRUE(engine_->Act(id, "rollback", json::object()).ok());
  // Queued behind the first; dropped with a warning once the first applied.
  ASSERT_TRUE(engine_->Act(id, "rollback", json::object()).ok());
  Run(id);
  ASSERT_EQ(Get(id)["phase"], "rolled_back");
  auto again = engine_->Act(id, "rollback", json::object());
  EXPECT_EQ(again.status().code(), Code::kFailedPrecondition);
  EXPECT_EQ(Get(id)["phase"], "rolled_back");
  EXPECT_EQ(world_->routed, world_->source_ep);
  EXPECT_FALSE(world_->fenced);
  EXPECT_EQ(std::count(world_->calls.begin(), world_->calls.end(), "SyncSequencesToSource"), 1);
}

TEST_F(RollbackTest, ResumesAfterACrashInsideEveryRollbackStep) {
  for (const char* where :
       {"Hold", "InspectReverseReplication", "SyncSequencesToSource", "AdvanceSourceSlot",
        "Repoint", "DropReverseReplication", "UnfenceSource", "Release", "StopTarget"}) {
    SCOPED_TRACE(where);
    SetUp();
    AddCarriedSlot(*world_);
    std::string id = SwitchedMigration();
    ASSERT_TRUE(engine_->Act(id, "rollback", json::object()).ok());
    world_->crash_on = where;
    EXPECT_THROW((void)engine_->RunUntilSettled(id), SimulatedCrash);
    engine_ = NewEngine();  // a restarted pgshiftd
    Run(id);
    json m = Get(id);
    EXPECT_EQ(m["phase"], "rolled_back");
    EXPECT_EQ(m["result"]["rollback_path"], "reverse_replication");
    EXPECT_EQ(world_->routed, world_->source_ep);
    EXPECT_FALSE(world_->fenced);
    EXPECT_FALSE(world_->held);
    EXPECT_FALSE(world_->reverse_in_place);
    EXPECT_TRUE(world_->advanced.count("orders_cdc"));
  }
}

TEST_F(RollbackTest, TurnedOffBySpecLeavesTheDiscardPath) {
  json spec = Spec(/*auto_cutover=*/true, /*auto_finalize=*/false);
  spec["options"]["reverse_replication"] = false;
  std::string id = Create(spec);
  Run(id);
  json m = Get(id);
  ASSERT_EQ(m["phase"], "verify");
  EXPECT_EQ(m["result"]["reverse_replication_on"], false);
  EXPECT_EQ(m["rollback_path"], "discard_target_writes");
  EXPECT_EQ(CallPos(world_->calls, "EnsureReverseReplication"),
            static_cast<int64_t>(world_->calls.size()));
}

}  // namespace
}  // namespace pgshift
