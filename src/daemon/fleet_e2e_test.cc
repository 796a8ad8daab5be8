// Fleet end to end through a real pgshiftd: a wave with a forced failure (a
// database whose source is unreachable, refused by the engine's validation)
// stops per the rule, so the next database of the wave never starts — once
// with no PostgreSQL at all (and the stopped run survives a restart of
// pgshiftd on the same state), once after a real migration of a small
// PostgreSQL 15 cluster finalized first in the same wave (~15 s).
#include <gtest/gtest.h>
#include <httplib.h>

#include <csignal>
#include <nlohmann/json.hpp>

#include "common/clock.h"
#include "common/os.h"
#include "common/process.h"
#include "testing/pg_harness.h"

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
  }
  // Writes the registry: `entries` are "name: {...}" lines under databases.
  void Registry(const std::string& entries) {
    ASSERT_TRUE(WriteFileAtomic(dir_ + "/reg.yaml", "databases:\n" + entries).ok());
  }
  std::string Placement(const std::string& root) const {
    return "placement: {data_root: " + root + ", ports: 61300-61310}";
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
  const std::string bad = "{team: t, source: {host: 127.0.0.1, port: 1}, tags: [w1], " +
                          Placement(dir_ + "/pg") + "}\n";
  Registry("  a-bad: " + bad + "  b-next: " + bad);
  StartPgshiftd();
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

// A plan by size measures the real source; a real migration finalizes in
// the wave, then a database with a bad source fails and the stop rule keeps
// the last one from starting.
TEST_F(FleetE2E, RealMigrationThenForcedFailureStopsTheWave) {
  auto source = testing::TestCluster::Create({.name = "fleetsrc"});
  ASSERT_TRUE(source.ok()) << source.status().ToString();
  auto root = testing::MakePgOwnedTempDir("pgshift-fleet-targets");
  ASSERT_TRUE(root.ok());
  const std::string place = Placement(*root);
  Registry(
      "  a-good: {team: t, source: {host: 127.0.0.1, port: " + std::to_string((*source)->port()) +
      ", dbname: postgres}, tags: [w1], " + place +
      "}\n  b-bad: {team: t, source: {host: 127.0.0.1, port: 1}, tags: [w1], " + place +
      "}\n  c-next: {team: t, source: {host: 127.0.0.1, port: 1}, tags: [w1], " + place + "}\n");
  StartPgshiftd();
  // By size: the real source is measured; the unreachable ones are left out, saying why.
  auto [size_status, by_size] = Call("POST", "/v1/fleet/plan", R"({"by":"size"})");
  ASSERT_EQ(size_status, 200) << by_size.dump();
  ASSERT_EQ(by_size["waves"].size(), 1u) << by_size.dump(2);
  EXPECT_EQ(by_size["waves"][0]["name"], "up to 1GB") << "a fresh cluster is small";
  EXPECT_EQ(by_size["waves"][0]["databases"][0]["name"], "a-good");
  EXPECT_GT(by_size["waves"][0]["databases"][0]["size_bytes"].get<int64_t>(), 1 << 20);
  EXPECT_EQ(by_size["unplanned"], json({"b-bad", "c-next"}));
  EXPECT_NE(by_size["notes"][0].get<std::string>().find("b-bad: size unknown"), std::string::npos);
  auto [st, run] = Call("POST", "/v1/fleet/runs",
                        R"({"waves":["w1"],"wave_concurrency":1,"stop_after":1,)"
                        R"("options":{"sustain_seconds":1,"verify_seconds":1}})");
  ASSERT_EQ(st, 201) << run.dump();
  const std::string id = run["id"];
  json got;
  const int64_t deadline = MonotonicMs() + 3 * kBoundMs / 2;
  while (MonotonicMs() < deadline) {
    got = Call("GET", "/v1/fleet/runs/" + id).second;
    if (got.value("status", "") != "running") break;
    DefaultClock().SleepMs(kPollMs);
  }
  ASSERT_EQ(got["status"], "stopped") << got.dump(2);
  const json& dbs = got["report"]["databases"];
  EXPECT_EQ(dbs[0]["status"], "succeeded") << dbs[0].dump(2);
  EXPECT_EQ(dbs[0]["state"], "finalized");
  EXPECT_TRUE(dbs[0]["hold_ms"].is_number()) << dbs[0].dump(2);
  EXPECT_GE(dbs[0]["phases"].size(), 5u);
  EXPECT_EQ(dbs[1]["status"], "failed");
  EXPECT_EQ(dbs[2]["status"], "pending") << "c-next must never start";
  auto [list_status, migrations] = Call("GET", "/v1/migrations");
  EXPECT_EQ(migrations["migrations"].size(), 1u);
  if (pid_ > 0) StopChild(pid_, SIGTERM, 10000);
  pid_ = -1;
  (void)RemoveTree(*root);
}

}  // namespace
}  // namespace pgshift
