// Stopping pgshiftd does not wait for a base backup (issue 17): a stop
// request kills a running pg_basebackup — here one limited to 32 kB/s, which
// would take many minutes — CreateReplica returns Aborted within a bound, and
// the next attempt discards the partial copy and builds the replica.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include "common/clock.h"
#include "pg/conn.h"
#include "provider/local/local_env_testing.h"
#include "provider/registry.h"

namespace pgshift {
namespace {

using local_testing::EnvFor;
using local_testing::SocketConninfo;
using local_testing::SpecFor;

// pg_basebackup's lowest --max-rate: the copy of even a fresh cluster takes minutes.
constexpr int64_t kSlowKbps = 32;
// How long CreateReplica may take to return after the stop request.
constexpr int64_t kStopBoundMs = 3000;

// Processes whose command line mentions `needle` (pg_basebackup and its
// WAL-streaming child name the directory they write).
int ProcessesMentioning(const std::string& needle) {
  int n = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    std::ifstream in(e.path() / "cmdline", std::ios::binary);
    std::string cmd((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (cmd.find(needle) != std::string::npos) ++n;
  }
  return n;
}

bool WaitFor(const std::function<bool()>& cond, int64_t timeout_ms) {
  const int64_t deadline = MonotonicMs() + timeout_ms;
  while (MonotonicMs() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return cond();
}

class LocalEnvStopTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pg = testing::TestCluster::Create({.name = "stop"});
    ASSERT_TRUE(pg.ok()) << pg.status().ToString();
    pg_ = std::move(pg).value();
    ASSERT_TRUE(pg_->Psql("create table filler as select g, repeat('x', 200) as pad "
                          "from generate_series(1, 20000) g")
                    .ok());
    spec_ = SpecFor(*pg_, SocketConninfo(*pg_), "stop");
    spec_.options.basebackup_max_rate_kbps = kSlowKbps;
  }

  // Starts CreateReplica on `env` in the background, waits until
  // pg_basebackup is copying, calls `stop`, and checks that the call ends
  // promptly with Aborted and leaves no process and no replica behind.
  void StopsABaseBackup(MigrationEnv& env, const std::function<void()>& stop) {
    const std::string slot = SlotNameFor("m-stop");
    ASSERT_TRUE(env.EnsurePhysicalSlot(slot).ok());
    const std::string partial = spec_.target.data_dir + ".partial";
    auto build =
        std::async(std::launch::async, [&] { return env.CreateReplica(slot, [](int) {}); });
    ASSERT_TRUE(WaitFor([&] { return ProcessesMentioning(partial) > 0; }, 15000))
        << "pg_basebackup did not start";
    std::this_thread::sleep_for(std::chrono::milliseconds(500));  // well into the copy
    ASSERT_EQ(build.wait_for(std::chrono::seconds(0)), std::future_status::timeout)
        << "the rate-limited copy finished early: " << build.get().ToString();

    const int64_t asked = MonotonicMs();
    stop();
    ASSERT_EQ(build.wait_for(std::chrono::milliseconds(kStopBoundMs)), std::future_status::ready)
        << "CreateReplica still running " << kStopBoundMs << " ms after the stop request";
    const int64_t took = MonotonicMs() - asked;
    Status st = build.get();
    RecordProperty("stop_to_return_ms", std::to_string(took));
    std::printf("CreateReplica returned %lld ms after the stop request\n",
                static_cast<long long>(took));
    EXPECT_EQ(st.code(), Code::kAborted) << st.ToString();
    EXPECT_NE(st.message().find("stopped"), std::string::npos) << st.ToString();
    // Its WAL-streaming child, killed with it, may take a moment to exit.
    EXPECT_TRUE(WaitFor([&] { return ProcessesMentioning(partial) == 0; }, 1000))
        << "pg_basebackup outlived the stop";
    EXPECT_FALSE(PathExists(spec_.target.data_dir)) << "a partial copy was published";
    // The source lets go of the slot: its walsender ended with the client.
    auto admin = PgConn::Connect(pg_->Conninfo());
    ASSERT_TRUE(admin.ok());
    EXPECT_TRUE(WaitFor(
        [&] {
          auto r = (*admin)->Query("select count(*) as n from pg_stat_replication");
          return r.ok() && r->Int(0, "n") == 0;
        },
        10000));
    // Stopped for good: a later call refuses at once.
    Status again = env.CreateReplica(slot, [](int) {});
    EXPECT_EQ(again.code(), Code::kAborted) << again.ToString();
  }

  // A fresh env (pgshiftd restarted) discards the partial copy and builds the replica.
  void NextAttemptBuildsTheReplica() {
    MigrationSpec fast = spec_;
    fast.options.basebackup_max_rate_kbps = 0;
    auto env = EnvFor(fast, "m-stop");
    ASSERT_TRUE(env);
    local_testing::TargetStopper stopper(env.get());
    Status built = env->CreateReplica(SlotNameFor("m-stop"), [](int) {});
    ASSERT_TRUE(built.ok()) << built.ToString();
    auto t = env->InspectTarget();
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    EXPECT_TRUE(t->running && t->in_recovery);
    EXPECT_FALSE(PathExists(spec_.target.data_dir + ".partial"));
  }

  std::unique_ptr<testing::TestCluster> pg_;
  MigrationSpec spec_;
};

TEST_F(LocalEnvStopTest, RequestStopEndsARateLimitedBaseBackup) {
  auto env = EnvFor(spec_, "m-stop");
  ASSERT_TRUE(env);
  StopsABaseBackup(*env, [&] { env->RequestStop(); });
  NextAttemptBuildsTheReplica();
}

// pgshiftd's path: the engine asks the registry, which asks every factory,
// whose envs all watch the factory's flag.
TEST_F(LocalEnvStopTest, RegistryStopReachesEnvsOfItsFactories) {
  ProviderRegistry registry;
  ASSERT_TRUE(registry.Register(kLocalProvider, std::make_unique<LocalEnvFactory>()).ok());
  auto env = registry.Make("m-stop", spec_);
  ASSERT_TRUE(env.ok()) << env.status().ToString();
  StopsABaseBackup(**env, [&] { registry.RequestStop(); });
  // Envs made after the stop refuse too.
  auto later = registry.Make("m-later", spec_);
  ASSERT_TRUE(later.ok()) << later.status().ToString();
  EXPECT_EQ((*later)->CreateReplica(SlotNameFor("m-stop"), [](int) {}).code(), Code::kAborted);
  NextAttemptBuildsTheReplica();
}

}  // namespace
}  // namespace pgshift
