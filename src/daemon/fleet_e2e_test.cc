// Fleet end to end through a real pgshiftd (no PostgreSQL needed): a wave
// whose first database has an unreachable source (a forced failure the
// engine's validation reports) stops per the rule — the next database of the
// wave is never started — and the stopped run with its reason is still there
// after pgshiftd restarts on the same state. Takes a few seconds.
#include <gtest/gtest.h>
#include <httplib.h>

#include <csignal>
#include <nlohmann/json.hpp>

#include "common/clock.h"
#include "common/os.h"
#include "common/process.h"

namespace pgshift {
namespace {

using json = nlohmann::json;

constexpr int64_t kBoundMs = 60000;  // safety bound, not a performance assertion
constexpr int64_t kPollMs = 200;

class FleetE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = MakeTempDir("pgshift-fleet");
    ASSERT_TRUE(dir.ok());
    dir_ = *dir;
    auto port = FreePort();
    ASSERT_TRUE(port.ok());
    port_ = *port;
    const std::string placement = "placement: {data_root: " + dir_ + "/pg, ports: 61300-61310}";
    ASSERT_TRUE(WriteFileAtomic(dir_ + "/reg.yaml",
                                "databases:\n"
                                "  a-bad: {team: t, source: {host: 127.0.0.1, port: 1}, "
                                "tags: [w1], " +
                                    placement +
                                    "}\n"
                                    "  b-next: {team: t, source: {host: 127.0.0.1, port: 1}, "
                                    "tags: [w1], " +
                                    placement + "}\n")
                    .ok());
    StartPgshiftd();
  }
  void TearDown() override {
    if (pid_ > 0) StopChild(pid_, SIGTERM, 10000);
    (void)RemoveTree(dir_);
  }
  void StartPgshiftd() {
    auto pid = DefaultRunner().Spawn(
        {.argv = {PGSHIFTD_PATH, "--listen", "127.0.0.1:" + std::to_string(port_), "--state",
                  dir_ + "/state.db", "--registry", dir_ + "/reg.yaml"},
         .output_file = dir_ + "/pgshiftd.log"});
    ASSERT_TRUE(pid.ok()) << pid.status().ToString();
    pid_ = *pid;
    const int64_t deadline = MonotonicMs() + kBoundMs;
    while (!PortOpen("127.0.0.1", port_) && MonotonicMs() < deadline) DefaultClock().SleepMs(50);
    ASSERT_TRUE(PortOpen("127.0.0.1", port_));
  }
  std::pair<int, json> Call(const std::string& method, const std::string& path,
                            const std::string& body = "") {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(30);
    auto r = method == "GET" ? c.Get(path.c_str()) : c.Post(path.c_str(), body, "application/json");
    EXPECT_TRUE(r) << method << " " << path;
    if (!r) return {0, nullptr};
    return {r->status, json::parse(r->body, nullptr, false)};
  }

  std::string dir_;
  int port_ = 0;
  pid_t pid_ = -1;
};

TEST_F(FleetE2E, AForcedFailureStopsTheWave) {
  auto [plan_status, plan] = Call("POST", "/v1/fleet/plan", R"({"waves":["w1"]})");
  ASSERT_EQ(plan_status, 200) << plan.dump();
  ASSERT_EQ(plan["waves"][0]["databases"].size(), 2u);

  auto [st, run] =
      Call("POST", "/v1/fleet/runs", R"({"waves":["w1"],"wave_concurrency":1,"stop_after":1})");
  ASSERT_EQ(st, 201) << run.dump();
  const std::string id = run["id"];
  json got;
  const int64_t deadline = MonotonicMs() + kBoundMs;
  while (MonotonicMs() < deadline) {
    got = Call("GET", "/v1/fleet/runs/" + id).second;
    if (got.value("status", "") != "running") break;
    DefaultClock().SleepMs(kPollMs);
  }
  ASSERT_EQ(got["status"], "stopped") << got.dump(2);
  EXPECT_NE(got["reason"].get<std::string>().find("a-bad failed"), std::string::npos);
  EXPECT_EQ(got["databases"][0]["status"], "failed");
  EXPECT_NE(got["databases"][0]["error"].get<std::string>().find("source"), std::string::npos);
  EXPECT_EQ(got["databases"][1]["status"], "pending") << "b-next must never start";
  EXPECT_EQ(got["report"]["summary"]["pending"], 1);
  auto [list_status, migrations] = Call("GET", "/v1/migrations");
  EXPECT_EQ(migrations["migrations"].size(), 0u) << migrations.dump();

  // Restarted on the same state, pgshiftd still shows the stopped run.
  ASSERT_TRUE(StopChild(pid_, SIGTERM, 10000));
  pid_ = -1;
  StartPgshiftd();
  auto [again_status, again] = Call("GET", "/v1/fleet/runs/" + id);
  ASSERT_EQ(again_status, 200);
  EXPECT_EQ(again["status"], "stopped");
  EXPECT_EQ(again["reason"], got["reason"]);
  EXPECT_EQ(again["databases"][1]["status"], "pending");
}

}  // namespace
}  // namespace pgshift
