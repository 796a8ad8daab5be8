// The cutover against a router whose hold has a lease (FakeWorld's
// router_leases): renewed under its epoch, adopted again by a restarted
// pgshiftd while the router still holds it, and a hold that lapsed while
// pgshiftd was down aborts the cutover (retried) or, once the target was
// promoted, rolls back; one that the switch released before pgshiftd died
// goes on on the target. Deterministic: the lapse is the test's LapseHold().
// Then a rollback's hold, on leases that expire on the real clock
// (leases_expire): renewed while it lasts longer than its lease, joined by
// a restarted pgshiftd, and taken again after a restart that found it
// lapsed once the route was back on the still fenced source.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "testing/fake_env.h"
#include "workflow/engine_test_util.h"

namespace pgshift {
namespace {

using json = nlohmann::json;
using testing_util::EngineTest;
using testing_util::Spec;

class HoldLeaseTest : public EngineTest {
 protected:
  void SetUp() override {
    EngineTest::SetUp();
    world_->router_leases = true;
  }
  bool HasEvent(const std::string& id, const std::string& needle) {
    for (const auto& e : Events(id))
      if (e["message"].get<std::string>().find(needle) != std::string::npos) return true;
    return false;
  }
  // Runs until pgshiftd "dies" inside PromoteTarget (before or after its
  // effect), with drain recorded; then `meanwhile`, then a restarted pgshiftd.
  std::string CrashAtPromotion(bool after_effect, const std::function<void()>& meanwhile) {
    world_->crash_on = "PromoteTarget";
    world_->crash_after_effect = after_effect;
    std::string id = Create(Spec());
    EXPECT_THROW((void)engine_->RunUntilSettled(id), SimulatedCrash);
    EXPECT_EQ(Get(id)["phase"], "drain");
    EXPECT_EQ(Get(id)["result"]["hold_epoch"], 1);
    meanwhile();
    engine_ = NewEngine();
    Run(id);
    return id;
  }
};

TEST_F(HoldLeaseTest, TheCutoverSwitchesUnderItsLeasedHold) {
  std::string id = Create(Spec());
  Run(id);
  json m = Get(id);
  EXPECT_EQ(m["phase"], "finalized");
  EXPECT_EQ(m["result"]["hold_epoch"], 1);
  // The hold lease follows the store lease (defaults.h) when the spec sets none.
  EXPECT_TRUE(HasEvent(
      id, "hold 1 with a lease of " +
              std::to_string(workflow_defaults::HoldLeaseFor(workflow_defaults::kLeaseTtlMs)) +
              " ms"));
  EXPECT_EQ(world_->routed, world_->target_ep);
  EXPECT_EQ(world_->hold_epoch.load(), 0u) << "the switch released it";
}

TEST_F(HoldLeaseTest, ARestartedPgshiftdAdoptsTheHoldTheRouterStillHas) {
  std::string id = CrashAtPromotion(false, [] {});
  json m = Get(id);
  EXPECT_EQ(m["phase"], "finalized");
  EXPECT_TRUE(HasEvent(id, "still holds traffic under hold 1"));
  EXPECT_EQ(std::count(world_->calls.begin(), world_->calls.end(), "Hold"), 1)
      << "one hold, adopted";
  EXPECT_EQ(world_->timeline, 2);
}

TEST_F(HoldLeaseTest, AHoldThatLapsedBeforePromotionAbortsTheCutoverWhichIsRetried) {
  std::string id = CrashAtPromotion(false, [this] {
    EXPECT_TRUE(world_->fenced);
    world_->LapseHold();
  });
  json m = Get(id);
  EXPECT_EQ(m["phase"], "finalized") << m.dump(2);
  EXPECT_TRUE(HasEvent(id, "no longer this cutover's, so no drain"));
  EXPECT_TRUE(HasEvent(id, "fake: hold 1 lapsed"));
  EXPECT_TRUE(HasEvent(id, "cutover aborted, traffic released to the source"));
  EXPECT_EQ(m["result"]["cutover_attempts"], 2);
  EXPECT_EQ(m["result"]["hold_epoch"], 2) << "the retry took a new hold";
  EXPECT_EQ(world_->timeline, 2) << "promoted once, by the retry";
  EXPECT_EQ(world_->routed, world_->target_ep);
}

TEST_F(HoldLeaseTest, AHoldThatLapsedAfterPromotionRollsBackToTheSource) {
  std::string id = CrashAtPromotion(true, [this] { world_->LapseHold(); });
  json m = Get(id);
  EXPECT_EQ(m["phase"], "rolled_back") << m.dump(2);
  EXPECT_TRUE(HasEvent(id, "no longer this cutover's"));
  EXPECT_EQ(world_->routed, world_->source_ep);
  EXPECT_FALSE(world_->fenced) << "the source takes traffic again";
  EXPECT_FALSE(world_->held);
}

// pgshiftd dies after the switch released the hold onto the target, before
// recording it: the restart finds the hold gone and the route on the target,
// and goes on (a rollback would discard what clients wrote there since).
TEST_F(HoldLeaseTest, ARestartAfterTheSwitchBeforeItsRecordGoesOnOnTheTarget) {
  world_->crash_on = "Release";  // the switch's, after its effect
  std::string id = Create(Spec());
  EXPECT_THROW((void)engine_->RunUntilSettled(id), SimulatedCrash);
  EXPECT_EQ(Get(id)["phase"], "switch");
  EXPECT_EQ(world_->routed, world_->target_ep);
  engine_ = NewEngine();
  Run(id);
  json m = Get(id);
  EXPECT_EQ(m["phase"], "finalized") << m.dump(2);
  EXPECT_TRUE(HasEvent(id, "the switch was made before this pgshiftd took over"));
  EXPECT_FALSE(HasEvent(id, "rolling back"));
  EXPECT_EQ(world_->routed, world_->target_ep);
  EXPECT_EQ(world_->timeline, 2) << "promoted once";
}

// A lease short enough for a test, long enough for a loaded machine to
// renew it every third; the rollback's hold outlasts it several times.
constexpr int64_t kShortLeaseMs = 600;
constexpr auto kLongerThanTheLease = std::chrono::milliseconds(3 * kShortLeaseMs);

class RollbackHoldLeaseTest : public HoldLeaseTest {
 protected:
  void SetUp() override {
    HoldLeaseTest::SetUp();
    world_->leases_expire = true;
  }
  // Switched to the target and waiting in verify, the rollback asked for.
  std::string SwitchedThenRollingBack() {
    json spec = Spec(/*auto_cutover=*/true, /*auto_finalize=*/false);
    spec["options"]["hold_lease_ms"] = kShortLeaseMs;
    std::string id = Create(spec);
    Run(id);
    EXPECT_EQ(Get(id)["phase"], "verify");
    EXPECT_EQ(world_->routed, world_->target_ep);
    EXPECT_TRUE(engine_->Act(id, "rollback", json::object()).ok());
    return id;
  }
  // Rolled back to the source, losslessly, with nothing held or fenced.
  void ExpectRolledBack(const std::string& id) {
    json m = Get(id);
    EXPECT_EQ(m["phase"], "rolled_back") << m.dump(1);
    EXPECT_EQ(m["result"]["rollback_path"], "reverse_replication");
    EXPECT_EQ(world_->routed, world_->source_ep);
    EXPECT_FALSE(world_->fenced);
    EXPECT_FALSE(world_->held);
    EXPECT_EQ(world_->hold_epoch.load(), 0u);
  }
};

TEST_F(RollbackHoldLeaseTest, TheFakeLapsesAHoldNotRenewedWithinItsLease) {
  auto env = FakeEnvFactory(world_).Make("m", MigrationSpec{});
  ASSERT_TRUE(env.ok());
  ASSERT_TRUE((*env)->router().HoldLeased(1000, kShortLeaseMs).ok());
  std::this_thread::sleep_for(kLongerThanTheLease);
  EXPECT_EQ((*env)->router().RenewHold(HoldLease{.epoch = 1}).code(), Code::kFailedPrecondition);
  EXPECT_TRUE((*env)->router().Release().ok());
  EXPECT_EQ(world_->lapses, 1);
}

TEST_F(RollbackHoldLeaseTest, ARollbacksHoldLongerThanItsLeaseIsRenewedAndDoesNotLapse) {
  std::string id = SwitchedThenRollingBack();
  const int renewals_before = world_->renewals;
  bool in_hold = false;
  world_->on_call = [&](const std::string& call) {
    if (call != "SyncSequencesToSource") return;
    in_hold = world_->held;
    std::this_thread::sleep_for(kLongerThanTheLease);  // a slow step inside the hold
  };
  Run(id);
  ExpectRolledBack(id);
  EXPECT_TRUE(in_hold);
  EXPECT_EQ(world_->lapses, 0) << "the hold lapsed before the route went back";
  EXPECT_GE(world_->renewals - renewals_before, 2);
  EXPECT_EQ(world_->last_epoch, 2u) << "the cutover's hold, then the rollback's";
  EXPECT_GE(Get(id)["result"]["rollback_hold_ms"].get<int64_t>(), 0);
}

TEST_F(RollbackHoldLeaseTest, ARestartedPgshiftdJoinsTheRollbacksHoldStillInPlace) {
  std::string id = SwitchedThenRollingBack();
  world_->crash_on = "SyncSequencesToSource";  // the target's writes applied, traffic held
  EXPECT_THROW((void)engine_->RunUntilSettled(id), SimulatedCrash);
  EXPECT_TRUE(world_->held);
  EXPECT_EQ(Get(id)["phase"], "rolling_back");
  engine_ = NewEngine();
  Run(id);
  ExpectRolledBack(id);
  EXPECT_EQ(world_->lapses, 0);
  EXPECT_EQ(world_->last_epoch, 2u) << "the restarted pgshiftd joined the rollback's hold";
}

TEST_F(RollbackHoldLeaseTest, ARestartAfterRoutingBackHoldsAgainUntilTheSourceIsUnfenced) {
  std::string id = SwitchedThenRollingBack();
  world_->crash_on = "Repoint";  // routed back to the source, still fenced
  EXPECT_THROW((void)engine_->RunUntilSettled(id), SimulatedCrash);
  EXPECT_EQ(world_->routed, world_->source_ep);
  EXPECT_TRUE(world_->fenced);
  engine_.reset();  // pgshiftd is down: nobody renews
  std::this_thread::sleep_for(kLongerThanTheLease);
  world_->calls.clear();
  engine_ = NewEngine();
  Run(id);
  ExpectRolledBack(id);
  EXPECT_EQ(world_->lapses, 1) << "the rollback's hold lapsed while pgshiftd was down";
  EXPECT_EQ(world_->last_epoch, 3u) << "held again";
  const auto& c = world_->calls;
  auto pos = [&](const std::string& call) {
    return std::find(c.begin(), c.end(), call) - c.begin();
  };
  EXPECT_LT(pos("Hold"), pos("UnfenceSource"));
  EXPECT_LT(pos("UnfenceSource"), pos("Release"));
  EXPECT_EQ(std::count(c.begin(), c.end(), "SyncSequencesToSource"), 0)
      << "the target's writes were applied before the restart";
}

}  // namespace
}  // namespace pgshift
