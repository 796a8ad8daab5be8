// The engine's worker pool and leases, threaded, on the fake world (one per
// migration, so each is touched by one worker at a time) and the real clock.
#include <gtest/gtest.h>

#include <filesystem>
#include <thread>

#include "workflow/engine.h"
#include "workflow/engine_test_util.h"

namespace pgshift {
namespace {

using json = nlohmann::json;
using testing_util::Spec;

constexpr int64_t kSettleBoundMs = 60000;  // a safety net on a loaded machine
constexpr int64_t kLeaseMs = 1500;

// Each migration gets a world of its own.
class WorldPerMigration : public EnvFactory {
 public:
  Result<std::unique_ptr<MigrationEnv>> Make(const std::string& id,
                                             const MigrationSpec& spec) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto& f = factories_[id];
    if (!f) f = std::make_unique<FakeEnvFactory>(std::make_shared<FakeWorld>());
    return f->Make(id, spec);
  }

 private:
  std::mutex mu_;
  std::map<std::string, std::unique_ptr<FakeEnvFactory>> factories_;
};

json QuickSpec(int n, bool auto_cutover) {
  json s = Spec(auto_cutover);
  s["target"]["data_dir"] = "/tmp/pgshift-unit/target-" + std::to_string(n);
  s["options"]["sustain_seconds"] = 0;
  s["options"]["verify_seconds"] = 0;
  s["options"]["poll_ms"] = 10;
  return s;
}

size_t ThreadCount() {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/task")) ++n;
  return n;
}

bool WaitUntil(const std::function<bool()>& pred) {
  const int64_t deadline = MonotonicMs() + kSettleBoundMs;
  while (!pred()) {
    if (MonotonicMs() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

TEST(EnginePool, ManyMigrationsRunOnABoundedPool) {
  auto store = SqliteStateStore::Open(":memory:");
  ASSERT_TRUE(store.ok());
  WorldPerMigration envs;
  constexpr int kWorkers = 2;
  constexpr int kMigrations = 8;
  const size_t threads_before = ThreadCount();
  Engine engine(**store, envs, DefaultClock(),
                {.owner = "pgshiftd-a", .lease_ttl_ms = kLeaseMs, .workers = kWorkers});
  std::vector<std::string> ids;
  for (int i = 0; i < kMigrations; ++i) {
    auto m = engine.Create(QuickSpec(i, true));
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    ids.push_back((*m)["id"]);
  }
  // The pool and the keeper, not a thread per migration.
  EXPECT_LE(ThreadCount(), threads_before + kWorkers + 1);
  ASSERT_TRUE(WaitUntil([&] {
    for (const auto& id : ids) {
      auto m = (*store)->Get(id);
      if (!m.ok() || m->phase != "finalized") return false;
    }
    return true;
  })) << "not every migration finalized";
  for (const auto& id : ids) {
    auto events = (*store)->Events(id);
    ASSERT_TRUE(events.ok());
    for (const auto& e : *events) EXPECT_EQ(e.owner, "pgshiftd-a") << e.message;
  }
  EXPECT_TRUE(WaitUntil([&] { return engine.Owned().empty(); })) << "finished slots are let go";
}

TEST(EnginePool, AnEngineThatLostALeaseStopsDrivingThatMigration) {
  auto store = SqliteStateStore::Open(":memory:");
  ASSERT_TRUE(store.ok());
  auto& s = **store;
  WorldPerMigration envs;
  Engine engine(s, envs, DefaultClock(), {.owner = "pgshiftd-a", .lease_ttl_ms = kLeaseMs});
  auto created = engine.Create(QuickSpec(0, /*auto_cutover=*/false));
  ASSERT_TRUE(created.ok());
  const std::string id = (*created)["id"];
  ASSERT_TRUE(WaitUntil([&] {
    auto m = s.Get(id);
    return m.ok() && m->phase == "ready" && m->state == "waiting";
  }));

  // Another pgshiftd takes it over the moment a's lease lapses (here: is let go).
  Result<Lease> b = Internal("not yet");
  ASSERT_TRUE(WaitUntil([&] {
    auto m = s.Get(id);
    if (m.ok() && m->lease.owner == "pgshiftd-a") (void)s.ReleaseLease(id, m->lease);
    b = s.AcquireLease(id, "pgshiftd-b", 60000);
    return b.ok();
  }));
  ASSERT_TRUE(WaitUntil([&] { return engine.Owned().empty(); }))
      << "a's renewal finds the lease lost and drops the migration";

  // A cutover asked of a is queued for b; a does not take the migration back.
  ASSERT_TRUE(engine.Act(id, "cutover", json::object()).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(3 * kLeaseMs));
  auto m = s.Get(id);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->phase, "ready");
  EXPECT_EQ(m->lease.owner, "pgshiftd-b");
  EXPECT_EQ(m->lease.token, b->token);
  EXPECT_EQ(m->actions.size(), 1u) << "left for its owner";
  EXPECT_TRUE(engine.Owned().empty());
}

}  // namespace
}  // namespace pgshift
