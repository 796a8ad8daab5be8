// End-to-end: a fleet run taken over by another pgshiftd on the same
// PostgreSQL store. Four sandboxes (a source behind a pgshift-proxy with a
// ledger writer through it), one registry naming them db0..db3 in two waves,
// two pgshiftd on one store; the driver dies mid-wave, the other takes the
// run over and finishes both waves: every database finalized exactly once
// by one migration, 0 lost / 0 duplicated rows (~30-40 s each).
//   - The driver kills itself (SIGKILL) right after creating wave 1's first
//     migration and before recording it in the run — the crash that could
//     start a database twice; the survivor adopts that migration (found by
//     the run's start key) and starts the rest.
//   - The driver is killed (kill -9) with wave 1's migrations under way.
#include <gtest/gtest.h>

#include <map>
#include <thread>

#include "common/os.h"
#include "e2e/control_plane_fixture.h"

namespace pgshift::e2e {
namespace {

constexpr size_t kDatabases = 4;
constexpr int kWaveConcurrency = 2;
constexpr int64_t kRunPollMs = 250;

std::string DbName(size_t i) { return "db" + std::to_string(i); }

class FleetTakeoverE2E : public ControlPlaneFixture {
 protected:
  void SetUp() override {
    ControlPlaneFixture::SetUp();
    auto dir = MakeTempDir("pgshift-fleet-takeover");
    ASSERT_TRUE(dir.ok());
    dir_ = *dir;
  }
  void TearDown() override {
    ControlPlaneFixture::TearDown();
    (void)RemoveTree(dir_);
  }
  std::string RegistryPath() const { return dir_ + "/registry.json"; }

  // db<i> is sandbox i's database "app", routed by its proxy; waves w1 (db0,
  // db1) and w2 (db2, db3).
  void WriteRegistry() {
    json routers = json::array();
    json dbs = json::object();
    for (size_t i = 0; i < sandboxes_.size(); ++i) {
      demo::Sandbox& sb = *sandboxes_[i];
      const std::string router = "proxy-" + std::to_string(i);
      routers.push_back(
          {{"name", router}, {"type", "proxy"}, {"admin_url", sb.RouterConfig()["admin_url"]}});
      const std::string port = std::to_string(sb.target_port());
      dbs[DbName(i)] = {
          {"team", "fleet"},
          {"source",
           {{"host", "127.0.0.1"}, {"port", sb.source().spec().port}, {"user", "postgres"}}},
          {"router", router},
          {"route", "app"},
          {"placement",
           {{"data_root", sb.dir()}, {"ports", port + "-" + port}, {"os_user", "postgres"}}},
          {"tags", {i < kDatabases / 2 ? "w1" : "w2"}}};
    }
    ASSERT_TRUE(
        WriteFileAtomic(RegistryPath(), json{{"routers", routers}, {"databases", dbs}}.dump(2))
            .ok());
  }

  // GET /v1/fleet/runs/{id} through sandbox `via`'s pgshiftd.
  json Run(size_t via, const std::string& id) {
    auto r = sandboxes_[via]->Api("GET", "/v1/fleet/runs/" + id);
    if (!r.ok() || (*r)["status"] != 200) return json::object();
    return (*r)["body"];
  }

  // The sandboxes, the registry, pgshiftd a (armed with `faults`) and b on
  // the store, the writers, and a run of both waves created on a; its id.
  std::string StartRunOnA(const std::string& faults) {
    StartSandboxes(kDatabases, kLeaseMs, {"--registry", RegistryPath()});
    EXPECT_EQ(sandboxes_.size(), kDatabases);
    if (sandboxes_.size() != kDatabases) return "";
    WriteRegistry();
    a_ = StartPgshiftd(0, faults);
    b_ = StartPgshiftd(1);
    StartWriters();
    const json request = {{"waves", {"w1", "w2"}},
                          {"wave_concurrency", kWaveConcurrency},
                          {"max_concurrent", kWaveConcurrency},
                          {"options", Options(/*auto_cutover=*/false)}};
    auto created = sandboxes_[0]->Api("POST", "/v1/fleet/runs", request.dump());
    EXPECT_TRUE(created.ok()) << created.status().ToString();
    if (!created.ok()) return "";
    EXPECT_EQ((*created)["status"], 201) << (*created)["body"].dump();
    return (*created)["body"].value("id", "");
  }

  // a is dead: b completes run `id`, every database finalized by one
  // migration (the run's), `made_by_a` of them made by a and finished by b,
  // the others made and finished by b; every ledger clean.
  void ExpectCompletedByBOncePerDatabase(const std::string& id, int made_by_a) {
    json run;
    const int64_t deadline = MonotonicMs() + kMigrationBoundMs;
    while (MonotonicMs() < deadline) {
      run = Run(1, id);
      if (run.value("status", "") == "completed" || run.value("status", "") == "stopped") break;
      std::this_thread::sleep_for(std::chrono::milliseconds(kRunPollMs));
    }
    ASSERT_EQ(run.value("status", ""), "completed") << run.dump(2);
    EXPECT_EQ(run["driver"], b_) << "the survivor drove the run to its end";

    auto listed = sandboxes_[1]->Api("GET", "/v1/migrations");
    ASSERT_TRUE(listed.ok());
    const json& body = (*listed)["body"];
    const json migrations = body.is_object() ? body.value("migrations", json::array()) : body;
    std::map<std::string, std::vector<std::string>> by_db;
    for (const auto& m : migrations) by_db[m["spec"].value("name", "")].push_back(m["id"]);
    EXPECT_EQ(migrations.size(), kDatabases) << migrations.dump();
    int by_a = 0;
    for (const auto& d : run["databases"]) {
      const std::string name = d["name"];
      EXPECT_EQ(d["status"], "succeeded") << d.dump();
      ASSERT_EQ(by_db[name].size(), 1u)
          << name << " was started " << by_db[name].size() << " times";
      EXPECT_EQ(d["migration_id"], by_db[name][0]) << name;
      auto m = sandboxes_[1]->WaitFor(by_db[name][0], Terminal, kMigrationBoundMs);
      ASSERT_TRUE(m.ok()) << m.status().ToString();
      EXPECT_EQ((*m)["phase"], "finalized") << m->dump();
      const auto owners = OwnerRuns(Events(1, by_db[name][0]));
      ASSERT_FALSE(owners.empty()) << name;
      if (owners.front() == a_) {
        ++by_a;
        EXPECT_EQ(owners, (std::vector<std::string>{a_, b_})) << name << ": taken over once";
      } else {
        EXPECT_EQ(owners, std::vector<std::string>{b_}) << name;
      }
    }
    EXPECT_EQ(by_a, made_by_a);
    for (size_t i = 0; i < kDatabases; ++i) ExpectLedgerClean(i);
  }

  std::string dir_;
  std::string a_, b_;  // the owner ids of the two pgshiftd
};

TEST_F(FleetTakeoverE2E, ASurvivorFinishesARunWhoseDriverDiedMidStartAndStartsNoDatabaseTwice) {
  // a dies between creating wave 1's first migration and recording it.
  const std::string id = StartRunOnA("crash:fleet_started_unrecorded");
  ASSERT_FALSE(id.empty());
  const int64_t deadline = MonotonicMs() + kDeathBoundMs;
  while (sandboxes_[0]->PgshiftdRunning() && MonotonicMs() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_FALSE(sandboxes_[0]->PgshiftdRunning()) << "pgshiftd a never started a migration";
  ExpectCompletedByBOncePerDatabase(id, /*made_by_a=*/1);
}

TEST_F(FleetTakeoverE2E, ASurvivorFinishesARunWhoseDriverWasKilledMidWave) {
  const std::string id = StartRunOnA("");
  ASSERT_FALSE(id.empty());
  // Both of wave 1's migrations recorded and under way: kill -9 a.
  const int64_t deadline = MonotonicMs() + kDeathBoundMs;
  int running = 0;
  while (running < kWaveConcurrency && MonotonicMs() < deadline) {
    running = 0;
    for (const auto& d : Run(1, id).value("databases", json::array())) {
      running += d.value("status", "") == "running";
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(kRunPollMs));
  }
  ASSERT_EQ(running, kWaveConcurrency) << Run(1, id).dump(2);
  ASSERT_TRUE(sandboxes_[0]->KillPgshiftd(SIGKILL).ok());
  ExpectCompletedByBOncePerDatabase(id, /*made_by_a=*/kWaveConcurrency);
}

}  // namespace
}  // namespace pgshift::e2e
