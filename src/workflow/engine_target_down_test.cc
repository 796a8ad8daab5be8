// The target server going down under a migration (FakeWorld): found
// stopped while it streams, it is started again rather than the step failing
// until the migration gives up; found stopped inside the hold, the cutover
// is aborted at once onto the unfenced source instead of holding traffic
// until drain_timeout_ms.
#include <gtest/gtest.h>

#include "testing/fake_env.h"
#include "workflow/engine.h"
#include "workflow/engine_test_util.h"

namespace pgshift {
namespace {

using json = nlohmann::json;
using testing_util::EngineTest;
using testing_util::Spec;

int EventsSaying(Engine& engine, const std::string& id, const std::string& needle) {
  int n = 0;
  const json events = engine.Events(id).value();
  for (const auto& e : events) {
    n += e["message"].get<std::string>().find(needle) != std::string::npos;
  }
  return n;
}

TEST_F(EngineTest, TargetFoundStoppedInSyncIsStartedAgain) {
  auto stopped = std::make_shared<bool>(false);
  world_->on_call = [w = world_.get(), stopped](const std::string& call) {
    if (call == "Lag" && !*stopped) {
      *stopped = true;
      w->target_running = false;  // crashed under the first sample
    }
  };
  std::string id = Create(Spec());
  Run(id);
  EXPECT_EQ(Get(id)["phase"], "finalized");
  EXPECT_TRUE(*stopped);
  EXPECT_EQ(EventsSaying(*engine_, id, "the target is not running"), 1);
  EXPECT_EQ(EventsSaying(*engine_, id, "will retry: the target was down and has been started"), 1)
      << "the attempt that found it down counts, with its reason";
  EXPECT_EQ(std::count(world_->calls.begin(), world_->calls.end(), "CreateReplica"), 2);
}

TEST_F(EngineTest, TargetThatKeepsStoppingInSyncEndsFailedWithTheReason) {
  world_->on_call = [w = world_.get()](const std::string& call) {
    if (call == "Lag") w->target_running = false;
  };
  json spec = Spec();
  spec["options"]["max_step_attempts"] = 3;
  std::string id = Create(spec);
  Run(id);
  json m = Get(id);
  EXPECT_EQ(m["phase"], "sync");
  EXPECT_EQ(m["state"], "failed");
  EXPECT_NE(m["error"].get<std::string>().find("the target was down"), std::string::npos)
      << m["error"];
  EXPECT_FALSE(world_->fenced);
  EXPECT_EQ(world_->routed, world_->source_ep);
}

TEST_F(EngineTest, TargetStoppedInDrainAbortsTheCutoverAtOnce) {
  std::string id = Create(Spec(false, false));
  Run(id);
  ASSERT_EQ(Get(id)["phase"], "ready");
  world_->on_call = [w = world_.get()](const std::string& call) {
    if (call == "WriteFinalMarker") w->target_running = false;
  };
  const int64_t asked = clock_.now_;
  ASSERT_TRUE(engine_->Act(id, "cutover", json::object()).ok());
  Run(id);
  world_->on_call = nullptr;
  json m = Get(id);
  EXPECT_EQ(m["phase"], "ready");
  EXPECT_EQ(EventsSaying(*engine_, id,
                         "cutover aborted, traffic released to the source: the target stopped "
                         "during drain"),
            1);
  EXPECT_LT(clock_.now_ - asked, 60000) << "traffic was held until drain_timeout_ms";
  EXPECT_FALSE(world_->fenced);
  EXPECT_FALSE(world_->held);
  EXPECT_FALSE(world_->promoted);
  EXPECT_EQ(world_->routed, world_->source_ep);
  // Back in ready, the standby is started again; a second cutover finishes.
  EXPECT_TRUE(world_->target_running);
  ASSERT_TRUE(engine_->Act(id, "cutover", json::object()).ok());
  Run(id);
  ASSERT_TRUE(engine_->Act(id, "finalize", json::object()).ok());
  Run(id);
  EXPECT_EQ(Get(id)["phase"], "finalized");
}

}  // namespace
}  // namespace pgshift
