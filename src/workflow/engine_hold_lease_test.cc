// The cutover against a router whose hold has a lease (FakeWorld's
// router_leases): renewed under its epoch, adopted again by a restarted
// pgshiftd while the router still holds it, and a hold that lapsed while
// pgshiftd was down aborts the cutover (retried) or, once the target was
// promoted, rolls back. Deterministic: the lapse is the test's LapseHold().
#include <gtest/gtest.h>

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

}  // namespace
}  // namespace pgshift
