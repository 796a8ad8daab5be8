// Unit tests of the fleet: planning (waves, limits, windows), the runner's
// limits, wave order, cutover windows, the stop rule and restarts — against
// the fake migration service.
#include <gtest/gtest.h>

#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <thread>

#include "common/os.h"
#include "fleet/plan.h"
#include "fleet/report.h"
#include "fleet/runner.h"
#include "fleet/tz.h"
#include "store/state_store.h"
#include "testing/fake_migration_service.h"

namespace pgshift::fleet {
namespace {

using nlohmann::json;

// 2026-12-05 was a Saturday; 03:00 UTC.
constexpr int64_t kSaturday0300Ms = 1796439600000;
constexpr int64_t kHourMs = 3600 * 1000;

constexpr const char* kRegistry = R"(
databases:
  a1: {team: pay, source: {host: h}, tags: [canary]}
  a2: {team: pay, source: {host: h}, tags: [canary]}
  b1: {team: search, source: {host: h}, tags: [bulk]}
  b2: {team: search, source: {host: h}, tags: [bulk], window: {days: [sat], start: "02:00", end: "05:00"}}
  b3: {team: search, source: {host: h}, tags: [bulk]}
  z:  {team: other, source: {host: h}}
)";

inventory::Registry TestRegistry() {
  auto r = inventory::Registry::Parse(kRegistry, "/etc/reg.yaml", nullptr);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return *r;
}

class ManualClock : public Clock {
 public:
  int64_t NowMs() override { return now; }
  void SleepMs(int64_t ms) override { now += ms; }
  int64_t now = kSaturday0300Ms;
};

// Starts a migration in the fake named after the database, idempotent by
// key as ByNameStarter is.
class FakeStarter : public Starter {
 public:
  explicit FakeStarter(api::FakeMigrationService& svc) : svc_(svc) {}
  Result<json> Start(const std::string& db, const json& options, const std::string& key) override {
    if (auto made = svc_.MigrationWithKey(key); !made.empty()) return svc_.Get(made);
    started.push_back(db);
    last_options = options;
    if (db == fail_start) return Unavailable("source of " + db + " is unreachable");
    return svc_.CreateLinked({{"name", db}}, {.database = db, .key = key});
  }
  Result<std::string> StartedWith(const std::string& key) override {
    return svc_.MigrationWithKey(key);
  }
  std::vector<std::string> started;  // the starts that created a migration (or failed)
  json last_options;
  std::string fail_start;

 private:
  api::FakeMigrationService& svc_;
};

json Migration(const std::string& id, const std::string& name, const std::string& phase,
               const std::string& state) {
  return {{"id", id},
          {"name", name},
          {"phase", phase},
          {"state", state},
          {"error", ""},
          {"findings", json::array()},
          {"result", json::object()},
          {"spec", json::object()}};
}

std::vector<std::string> Names(const Wave& w) {
  std::vector<std::string> out;
  for (const auto& d : w.databases) out.push_back(d.name);
  return out;
}

TEST(FleetPlan, WavesByTagInTheRequestedOrder) {
  auto req = FleetRequest::FromJson({{"waves", {"canary", "bulk"}}});
  ASSERT_TRUE(req.ok());
  auto plan = BuildPlan(*req, TestRegistry());
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  ASSERT_EQ(plan->waves.size(), 2u);
  EXPECT_EQ(plan->waves[0].name, "canary");
  EXPECT_EQ(Names(plan->waves[0]), (std::vector<std::string>{"a1", "a2"}));
  EXPECT_EQ(Names(plan->waves[1]), (std::vector<std::string>{"b1", "b2", "b3"}));
  EXPECT_EQ(plan->unplanned, std::vector<std::string>{"z"});
  ASSERT_TRUE(plan->waves[1].databases[1].window.has_value());
  const std::string text = RenderPlanText(plan->ToJson());
  EXPECT_NE(text.find("wave 1 (canary)"), std::string::npos) << text;
  EXPECT_NE(text.find("window sat 02:00-05:00 UTC"), std::string::npos) << text;
  EXPECT_NE(text.find("not planned (in no wave): z"), std::string::npos) << text;
  // Round trip through JSON (the stored form).
  auto back = FleetPlan::FromJson(plan->ToJson());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->ToJson(), plan->ToJson());
}

TEST(FleetPlan, ByTeamDefaultsToSortedValuesAndSelection) {
  auto req = FleetRequest::FromJson({{"by", "team"}, {"databases", {"b1", "a2"}}});
  ASSERT_TRUE(req.ok());
  auto plan = BuildPlan(*req, TestRegistry());
  ASSERT_TRUE(plan.ok());
  ASSERT_EQ(plan->waves.size(), 2u);
  EXPECT_EQ(plan->waves[0].name, "pay");
  EXPECT_EQ(Names(plan->waves[0]), std::vector<std::string>{"a2"});
  EXPECT_EQ(plan->waves[1].name, "search");
}

TEST(FleetPlan, RefusesBadRequests) {
  EXPECT_EQ(FleetRequest::FromJson({{"by", "colour"}}).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(FleetRequest::FromJson({{"by", "size"}, {"waves", {"big"}}}).status().code(),
            Code::kInvalidArgument);
  EXPECT_EQ(FleetRequest::FromJson({{"max_concurrent", 0}}).status().code(),
            Code::kInvalidArgument);
  EXPECT_EQ(FleetRequest::FromJson({{"stop_afterr", 1}}).status().code(), Code::kInvalidArgument);
  auto req = FleetRequest::FromJson({{"databases", {"nope"}}});
  ASSERT_TRUE(req.ok());
  EXPECT_EQ(BuildPlan(*req, TestRegistry()).status().code(), Code::kNotFound);
  auto none = FleetRequest::FromJson({{"waves", {"missing"}}});
  EXPECT_EQ(BuildPlan(*none, TestRegistry()).status().code(), Code::kInvalidArgument);
}

TEST(FleetPlan, Sizes) {
  EXPECT_EQ(*ParseSize("10GB"), int64_t{10} << 30);
  EXPECT_EQ(*ParseSize("1.5TB"), (int64_t{3} << 40) / 2);
  EXPECT_EQ(*ParseSize("512MB"), int64_t{512} << 20);
  EXPECT_EQ(*ParseSize("100kB"), 102400);
  EXPECT_EQ(*ParseSize("4096"), 4096);
  for (const char* bad : {"", "GB", "ten GB", "-1GB", "0", "1PB"}) {
    EXPECT_FALSE(ParseSize(bad).ok()) << bad;
  }
  EXPECT_EQ(FormatSize(int64_t{10} << 30), "10GB");
  EXPECT_EQ(FormatSize((int64_t{3} << 40) / 2), "1.5TB");
  EXPECT_EQ(FormatSize(100), "100B");
}

TEST(FleetPlan, WavesBySizeSmallestFirstWithTheMeasuredSizes) {
  const std::map<std::string, int64_t> measured = {{"a1", int64_t{40} << 30},
                                                   {"a2", int64_t{200} << 20},
                                                   {"b1", int64_t{5} << 30},
                                                   {"b2", int64_t{300} << 20},
                                                   {"b3", int64_t{3} << 40}};
  const SizeOf sizes = [&](const inventory::DatabaseEntry& e) -> Result<int64_t> {
    auto it = measured.find(e.name);
    if (it == measured.end()) return Unavailable("connection refused");
    return it->second;
  };
  auto req = FleetRequest::FromJson({{"by", "size"}, {"waves", {"100GB", "1GB"}}});
  ASSERT_TRUE(req.ok()) << req.status().ToString();
  auto plan = BuildPlan(*req, TestRegistry(), sizes);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  ASSERT_EQ(plan->waves.size(), 2u);
  EXPECT_EQ(plan->waves[0].name, "up to 1GB") << "bounds in ascending order";
  EXPECT_EQ(Names(plan->waves[0]), (std::vector<std::string>{"a2", "b2"})) << "smallest first";
  EXPECT_EQ(Names(plan->waves[1]), (std::vector<std::string>{"b1", "a1"}));
  EXPECT_EQ(plan->waves[1].databases[1].size_bytes, int64_t{40} << 30);
  EXPECT_EQ(plan->unplanned, (std::vector<std::string>{"b3", "z"}));
  ASSERT_EQ(plan->notes.size(), 2u);
  EXPECT_NE(plan->notes[0].find("b3: 3TB, above every wave's bound"), std::string::npos);
  EXPECT_NE(plan->notes[1].find("z: size unknown (connection refused)"), std::string::npos);
  const std::string text = RenderPlanText(plan->ToJson());
  EXPECT_NE(text.find("wave 2 (up to 100GB)"), std::string::npos) << text;
  EXPECT_NE(text.find("b1  team search  size 5GB"), std::string::npos) << text;
  auto back = FleetPlan::FromJson(plan->ToJson());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->ToJson(), plan->ToJson()) << "sizes survive the stored form";
  // The default bounds: a wave per decade that has a database.
  auto all = BuildPlan(*FleetRequest::FromJson({{"by", "size"}}), TestRegistry(), sizes);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->waves.size(), 4u);
  EXPECT_EQ(all->waves[3].name, "up to 10TB");
  EXPECT_EQ(BuildPlan(*req, TestRegistry()).status().code(), Code::kFailedPrecondition)
      << "no way to measure";
}

TEST(FleetPlan, SourcesAreMeasuredAtOnceUpToTheBound) {
  // More databases than the bound; each measure waits until the bound's
  // worth have started (or all have), so measures one at a time would see
  // one in flight (and wait out the safety timeout).
  constexpr int kDatabases = kSizeConcurrency + 3;
  constexpr auto kSafety = std::chrono::seconds(10);
  std::string yaml = "databases:\n";
  for (int i = 0; i < kDatabases; ++i) {
    yaml += "  d" + std::to_string(i) + ": {team: t, source: {host: h}}\n";
  }
  auto registry = inventory::Registry::Parse(yaml, "/etc/reg.yaml", nullptr);
  ASSERT_TRUE(registry.ok()) << registry.status().ToString();
  std::mutex mu;
  std::condition_variable cv;
  int started = 0, in_flight = 0, max_in_flight = 0;
  const SizeOf sizes = [&](const inventory::DatabaseEntry& e) -> Result<int64_t> {
    std::unique_lock lock(mu);
    ++started;
    max_in_flight = std::max(max_in_flight, ++in_flight);
    cv.notify_all();
    cv.wait_for(lock, kSafety, [&] { return started >= kSizeConcurrency; });
    --in_flight;
    if (e.name == "d1") return Unavailable("connection refused");
    return int64_t{1} << 20;
  };
  auto plan = BuildPlan(*FleetRequest::FromJson({{"by", "size"}}), *registry, sizes);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(started, kDatabases);
  EXPECT_EQ(max_in_flight, kSizeConcurrency);
  ASSERT_EQ(plan->waves.size(), 1u);
  EXPECT_EQ(plan->waves[0].databases.size(), kDatabases - 1u);
  EXPECT_EQ(plan->unplanned, std::vector<std::string>{"d1"});
  ASSERT_EQ(plan->notes.size(), 1u);
  EXPECT_NE(plan->notes[0].find("d1: size unknown (connection refused)"), std::string::npos);
}

TEST(FleetPlan, MaintenanceWindows) {
  inventory::Window sat{{"sat"}, "02:00", "05:00", "UTC"};
  EXPECT_TRUE(*WindowOpen(sat, kSaturday0300Ms));
  EXPECT_FALSE(*WindowOpen(sat, kSaturday0300Ms + 3 * kHourMs));   // 06:00
  EXPECT_FALSE(*WindowOpen(sat, kSaturday0300Ms + 24 * kHourMs));  // Sunday
  inventory::Window offset{{"sat"}, "04:00", "05:00", "UTC+02:00"};
  EXPECT_TRUE(*WindowOpen(offset, kSaturday0300Ms - kHourMs));  // 02:00 UTC = 04:00 local
  // Spanning midnight: open late Friday and early Saturday.
  inventory::Window night{{"fri"}, "23:00", "04:00", "UTC"};
  EXPECT_TRUE(*WindowOpen(night, kSaturday0300Ms));
  EXPECT_FALSE(*WindowOpen(night, kSaturday0300Ms + 2 * kHourMs));
  inventory::Window unknown{{}, "02:00", "05:00", "Mars/Olympus_Mons"};
  EXPECT_EQ(WindowOpen(unknown, kSaturday0300Ms).status().code(), Code::kInvalidArgument);
  inventory::Window escape{{}, "02:00", "05:00", "../../etc/passwd"};
  EXPECT_EQ(WindowOpen(escape, kSaturday0300Ms).status().code(), Code::kInvalidArgument);
  // A named zone: 03:00 UTC on 2026-12-05 is 04:00 in Paris (CET, winter).
  inventory::Window paris{{"sat"}, "04:00", "04:30", "Europe/Paris"};
  EXPECT_TRUE(*WindowOpen(paris, kSaturday0300Ms));
  EXPECT_FALSE(*WindowOpen(paris, kSaturday0300Ms + kHourMs));
}

TEST(TimeZones, OffsetsFromTheTzDatabaseAcrossDaylightSavingTime) {
  constexpr int64_t kHourS = 3600;
  // 2026-07-01 12:00 UTC: summer; 2026-12-05 03:00 UTC: winter.
  constexpr int64_t kJuly2026 = 1782907200;
  constexpr int64_t kDec2026 = kSaturday0300Ms / 1000;
  EXPECT_EQ(*ZoneOffsetSeconds("Europe/Paris", kJuly2026), 2 * kHourS);
  EXPECT_EQ(*ZoneOffsetSeconds("Europe/Paris", kDec2026), 1 * kHourS);
  EXPECT_EQ(*ZoneOffsetSeconds("America/New_York", kJuly2026), -4 * kHourS);
  EXPECT_EQ(*ZoneOffsetSeconds("America/New_York", kDec2026), -5 * kHourS);
  EXPECT_EQ(*ZoneOffsetSeconds("Australia/Sydney", kJuly2026), 10 * kHourS);
  EXPECT_EQ(*ZoneOffsetSeconds("Australia/Sydney", kDec2026), 11 * kHourS) << "southern summer";
  EXPECT_EQ(*ZoneOffsetSeconds("Asia/Kolkata", kJuly2026), 5 * kHourS + 30 * 60);
  // The 2026 changes in Paris: 29 March 01:00 UTC and 25 October 01:00 UTC.
  constexpr int64_t kSpring = 1774746000, kAutumn = 1792890000;
  EXPECT_EQ(*ZoneOffsetSeconds("Europe/Paris", kSpring - 1), 1 * kHourS);
  EXPECT_EQ(*ZoneOffsetSeconds("Europe/Paris", kSpring), 2 * kHourS);
  EXPECT_EQ(*ZoneOffsetSeconds("Europe/Paris", kAutumn - 1), 2 * kHourS);
  EXPECT_EQ(*ZoneOffsetSeconds("Europe/Paris", kAutumn), 1 * kHourS);
  // Past the table of a fat file (2037): the footer's rule.
  constexpr int64_t kJuly2050 = 2540289600, kJan2050 = 2524651200;
  EXPECT_EQ(*ZoneOffsetSeconds("Europe/Paris", kJuly2050), 2 * kHourS);
  EXPECT_EQ(*ZoneOffsetSeconds("Europe/Paris", kJan2050), 1 * kHourS);
  EXPECT_EQ(*ZoneOffsetSeconds("America/New_York", kJuly2050), -4 * kHourS);
}

class FleetRunnerTest : public ::testing::Test {
 protected:
  FleetRunnerTest() : registry_(TestRegistry()), starter_(svc_) {
    auto s = SqliteStateStore::Open(":memory:");
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(*s);
  }
  std::unique_ptr<FleetRunner> NewRunner(FleetRunnerOptions opts = {}) {
    return std::make_unique<FleetRunner>(svc_, starter_, *store_, &registry_, clock_, opts);
  }
  // Moves the fake's migration of `db` to `phase`/`state`.
  void Set(const std::string& db, const std::string& phase, const std::string& state) {
    auto list = svc_.List();
    for (const auto& m : *list) {
      if (m["name"] == db) svc_.Put(Migration(m["id"], db, phase, state));
    }
  }
  json Db(const json& run, const std::string& name) {
    for (const auto& d : run["databases"]) {
      if (d["name"] == name) return d;
    }
    return nullptr;
  }

  inventory::Registry registry_;
  api::FakeMigrationService svc_;
  FakeStarter starter_;
  std::unique_ptr<SqliteStateStore> store_;
  ManualClock clock_;
};

TEST_F(FleetRunnerTest, WaveLimitAndWaveOrder) {
  auto runner = NewRunner();
  auto run = runner->Create(
      {{"waves", {"canary", "bulk"}}, {"wave_concurrency", 1}, {"options", {{"verify_ms", 100}}}});
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  runner->Tick();
  EXPECT_EQ(starter_.started, std::vector<std::string>{"a1"});
  EXPECT_EQ(starter_.last_options["auto_cutover"], false);
  EXPECT_EQ(starter_.last_options["auto_finalize"], true);
  EXPECT_EQ(starter_.last_options["verify_ms"], 100);
  runner->Tick();
  EXPECT_EQ(starter_.started.size(), 1u) << "wave_concurrency 1";
  Set("a1", "finalized", "finalized");
  runner->Tick();
  EXPECT_EQ(starter_.started, (std::vector<std::string>{"a1", "a2"}));
  runner->Tick();
  EXPECT_EQ(starter_.started.size(), 2u) << "wave bulk waits for canary to end";
  Set("a2", "finalized", "finalized");
  runner->Tick();
  EXPECT_EQ(starter_.started, (std::vector<std::string>{"a1", "a2", "b1"}));
}

TEST_F(FleetRunnerTest, GlobalLimitAcrossRuns) {
  auto runner = NewRunner();
  ASSERT_TRUE(runner->Create({{"waves", {"canary"}}, {"wave_concurrency", 2}}).ok());
  ASSERT_TRUE(
      runner->Create({{"waves", {"bulk"}}, {"max_concurrent", 3}, {"wave_concurrency", 3}}).ok());
  runner->Tick();
  EXPECT_EQ(starter_.started, (std::vector<std::string>{"a1", "a2", "b1"}))
      << "3 live at most across runs";
}

TEST_F(FleetRunnerTest, CutoverOnlyInsideTheWindowUnlessApproved) {
  auto runner = NewRunner();
  auto run = runner->Create({{"databases", {"b2"}}});
  ASSERT_TRUE(run.ok());
  const std::string id = (*run)["id"];
  clock_.now = kSaturday0300Ms + 3 * kHourMs;  // 06:00: closed
  runner->Tick();
  Set("b2", "ready", "waiting");
  runner->Tick();
  EXPECT_FALSE(svc_.LastCall("Act").has_value());
  auto got = runner->Get(id);
  ASSERT_TRUE(got.ok());
  EXPECT_NE(Db(*got, "b2")["cutover"].get<std::string>().find("outside the maintenance window"),
            std::string::npos)
      << got->dump();
  clock_.now = kSaturday0300Ms;  // 03:00: open
  runner->Tick();
  auto act = svc_.LastCall("Act");
  ASSERT_TRUE(act.has_value());
  EXPECT_EQ(act->action, "cutover");
  EXPECT_EQ(Db(*runner->Get(id), "b2")["cutover"], "requested");
}

TEST_F(FleetRunnerTest, ApprovalCutsOverOutsideTheWindow) {
  auto runner = NewRunner();
  auto run = runner->Create({{"databases", {"b2"}}, {"approve_outside_window", true}});
  ASSERT_TRUE(run.ok());
  clock_.now = kSaturday0300Ms + 3 * kHourMs;
  runner->Tick();
  Set("b2", "ready", "waiting");
  runner->Tick();
  auto act = svc_.LastCall("Act");
  ASSERT_TRUE(act.has_value());
  EXPECT_EQ(act->action, "cutover");
}

TEST_F(FleetRunnerTest, StopRuleStartsNoNewMigrations) {
  auto runner = NewRunner();
  auto run = runner->Create({{"waves", {"bulk"}}, {"wave_concurrency", 2}, {"stop_after", 1}});
  ASSERT_TRUE(run.ok());
  const std::string id = (*run)["id"];
  runner->Tick();
  EXPECT_EQ(starter_.started, (std::vector<std::string>{"b1", "b2"}));
  auto list = svc_.List();
  json failed = Migration((*list)[0]["id"], "b1", "sync", "failed");
  failed["error"] = "base backup failed: connection refused";
  svc_.Put(failed);
  Set("b2", "ready", "waiting");
  runner->Tick();
  runner->Tick();
  EXPECT_EQ(starter_.started.size(), 2u) << "b3 must not start";
  auto got = runner->Get(id);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ((*got)["status"], "stopped");
  EXPECT_NE((*got)["reason"].get<std::string>().find("b1 failed"), std::string::npos);
  EXPECT_EQ(Db(*got, "b3")["status"], "pending");
  EXPECT_NE(Db(*got, "b2")["cutover"].get<std::string>().find("stopped"), std::string::npos);
  EXPECT_FALSE(svc_.LastCall("Act").has_value()) << "no cutover once the fleet stopped";
  const json report = (*got)["report"];
  EXPECT_EQ(report["summary"]["failed"], 1);
  EXPECT_EQ(report["summary"]["pending"], 1);
  EXPECT_EQ(Db(report, "b1")["error"], "base backup failed: connection refused");
  const std::string text = RenderRunText(*got);
  EXPECT_NE(text.find("stopped"), std::string::npos) << text;
  EXPECT_EQ(runner->Resume(id).status().code(), Code::kFailedPrecondition);
}

TEST_F(FleetRunnerTest, FailedStartAndRollbackCount) {
  auto runner = NewRunner();
  starter_.fail_start = "b1";
  auto run = runner->Create({{"waves", {"bulk"}}, {"wave_concurrency", 1}, {"stop_after", 2}});
  ASSERT_TRUE(run.ok());
  const std::string id = (*run)["id"];
  runner->Tick();  // b1 fails to start: 1 of 2
  runner->Tick();  // b2 starts
  EXPECT_EQ(starter_.started, (std::vector<std::string>{"b1", "b2"}));
  Set("b2", "rolled_back", "rolled_back");
  runner->Tick();
  EXPECT_EQ(starter_.started.size(), 2u);
  auto got = runner->Get(id);
  EXPECT_EQ((*got)["status"], "stopped");
  EXPECT_EQ(Db((*got)["report"], "b2")["rolled_back"], true);
}

TEST_F(FleetRunnerTest, PauseResumeAndRestart) {
  auto runner = NewRunner();
  auto run = runner->Create({{"waves", {"canary"}}, {"wave_concurrency", 1}});
  ASSERT_TRUE(run.ok());
  const std::string id = (*run)["id"];
  runner->Tick();
  ASSERT_TRUE(runner->Pause(id).ok());
  EXPECT_EQ(runner->Pause(id).status().code(), Code::kFailedPrecondition);
  Set("a1", "finalized", "finalized");
  runner->Tick();
  EXPECT_EQ(starter_.started.size(), 1u) << "paused: nothing new starts";
  // A new runner over the same store (pgshiftd restarted) sees the run.
  runner.reset();
  auto again = NewRunner();
  ASSERT_TRUE(again->Load().ok());
  auto got = again->Get(id);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ((*got)["status"], "paused");
  EXPECT_EQ(Db(*got, "a1")["status"], "succeeded");
  ASSERT_TRUE(again->Resume(id).ok());
  again->Tick();
  EXPECT_EQ(starter_.started, (std::vector<std::string>{"a1", "a2"}));
  Set("a2", "finalized", "finalized");
  again->Tick();
  EXPECT_EQ((*again->Get(id))["status"], "completed");
  EXPECT_EQ(again->Get("f-nope").status().code(), Code::kNotFound);
}

TEST_F(FleetRunnerTest, ARunWhoseDriverDiedIsTakenOverAndItsDriverFencedOff) {
  constexpr int64_t kShortLeaseMs = 300;
  auto a = NewRunner({.owner = "pgshiftd-a", .lease_ttl_ms = kShortLeaseMs});
  auto b = NewRunner({.owner = "pgshiftd-b", .lease_ttl_ms = kShortLeaseMs});
  auto run = a->Create({{"waves", {"canary"}}, {"wave_concurrency", 1}});
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  const std::string id = (*run)["id"];
  a->Tick();
  EXPECT_EQ(starter_.started, std::vector<std::string>{"a1"});
  b->Tick();
  EXPECT_TRUE(b->Driven().empty()) << "a's lease stands";
  EXPECT_EQ((*b->Get(id))["driver"], "pgshiftd-a") << "b shows the run a drives";

  // a stops (as if killed: no renewal, no release); past its lease b takes over.
  std::this_thread::sleep_for(std::chrono::milliseconds(kShortLeaseMs + 100));
  b->Tick();
  EXPECT_EQ(b->Driven(), std::vector<std::string>{id});
  EXPECT_EQ(starter_.started, std::vector<std::string>{"a1"}) << "a1 runs on, not started again";
  Set("a1", "finalized", "finalized");
  b->Tick();
  EXPECT_EQ(starter_.started, (std::vector<std::string>{"a1", "a2"}));

  // a wakes up: its write is refused, and it lets the run go.
  EXPECT_TRUE(IsLeaseLost(a->Pause(id).status()));
  a->Tick();
  EXPECT_TRUE(a->Driven().empty());
  auto got = b->Get(id);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ((*got)["status"], "running") << "nothing of a's late write landed";
  EXPECT_EQ((*got)["driver"], "pgshiftd-b");
  EXPECT_EQ(Db(*got, "a2")["status"], "running");
}

// A run whose driver saved `db` as starting, then died: the migration
// `made` exists (created with the run's key in the same commit), or not.
class InterruptedStartTest : public FleetRunnerTest {
 protected:
  std::string DieWhileStarting(const std::string& db, bool made) {
    auto a = NewRunner({.owner = "pgshiftd-a", .lease_ttl_ms = kDeadLeaseMs});
    auto run = a->Create({{"databases", {db}}});
    EXPECT_TRUE(run.ok());
    const std::string id = (*run)["id"];
    auto rec = store_->GetFleetRun(id);
    EXPECT_TRUE(rec.ok());
    rec->doc["databases"][0]["status"] = "starting";
    EXPECT_TRUE(store_->UpdateFleetRun(*rec, 0).ok());
    if (made) {
      migration_ = svc_.CreateLinked({{"name", db}}, {.database = db, .key = StartKey(id, db)})
                       ->value("id", "");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(kDeadLeaseMs + 100));
    return id;
  }
  static constexpr int64_t kDeadLeaseMs = 300;
  std::string migration_;
};

TEST_F(InterruptedStartTest, AStartInterruptedByTheDriversDeathIsAdoptedNotRepeated) {
  const std::string id = DieWhileStarting("b1", /*made=*/true);
  auto b = NewRunner({.owner = "pgshiftd-b"});
  b->Tick();
  EXPECT_TRUE(starter_.started.empty()) << "b1's migration exists: adopted";
  auto got = b->Get(id);
  EXPECT_EQ(Db(*got, "b1")["status"], "running");
  EXPECT_EQ(Db(*got, "b1")["migration_id"], migration_);
  b->Tick();
  EXPECT_TRUE(starter_.started.empty());
  EXPECT_EQ(svc_.List()->size(), 1u) << "one migration of b1";
}

TEST_F(InterruptedStartTest, AMigrationThatEndedBeforeTheTakeoverIsRecordedNotRepeated) {
  // Not live any more: a search among live migrations missed it and started
  // the database again.
  const std::string id = DieWhileStarting("b1", /*made=*/true);
  Set("b1", "finalized", "finalized");
  auto b = NewRunner({.owner = "pgshiftd-b"});
  b->Tick();
  b->Tick();
  EXPECT_TRUE(starter_.started.empty());
  auto got = b->Get(id);
  EXPECT_EQ(Db(*got, "b1")["status"], "succeeded");
  EXPECT_EQ(Db(*got, "b1")["migration_id"], migration_);
  EXPECT_EQ((*got)["status"], "completed");
  EXPECT_EQ(svc_.List()->size(), 1u);
}

TEST_F(InterruptedStartTest, AStartThatNeverHappenedIsMadeOnce) {
  const std::string id = DieWhileStarting("b1", /*made=*/false);
  auto b = NewRunner({.owner = "pgshiftd-b"});
  b->Tick();
  EXPECT_EQ(starter_.started, std::vector<std::string>{"b1"});
  b->Tick();
  EXPECT_EQ(starter_.started, std::vector<std::string>{"b1"});
  EXPECT_EQ(Db(*b->Get(id), "b1")["status"], "running");
  EXPECT_EQ(svc_.List()->size(), 1u);
}

TEST_F(InterruptedStartTest, APausedRunRecordsAMadeStartButMakesNone) {
  const std::string made = DieWhileStarting("b1", /*made=*/true);
  auto b = NewRunner({.owner = "pgshiftd-b"});
  ASSERT_TRUE(b->Load().ok());
  ASSERT_TRUE(b->Pause(made).ok());
  b->Tick();
  EXPECT_EQ(Db(*b->Get(made), "b1")["status"], "running");
  EXPECT_TRUE(starter_.started.empty());
}

TEST_F(FleetRunnerTest, APauseMadeOnAnotherPgshiftdIsAppliedByTheDriver) {
  auto a = NewRunner({.owner = "pgshiftd-a"});
  auto b = NewRunner({.owner = "pgshiftd-b"});
  auto run = a->Create({{"waves", {"bulk"}}, {"wave_concurrency", 1}});
  ASSERT_TRUE(run.ok());
  const std::string id = (*run)["id"];
  auto asked = b->Pause(id);
  ASSERT_TRUE(asked.ok()) << asked.status().ToString();
  EXPECT_EQ((*asked)["request"], "pause");
  EXPECT_EQ((*asked)["status"], "running") << "not applied by b";
  a->Tick();
  EXPECT_TRUE(starter_.started.empty()) << "paused before its first start";
  auto got = b->Get(id);
  EXPECT_EQ((*got)["status"], "paused");
  EXPECT_EQ((*got)["request"], "");
  EXPECT_EQ(b->Pause(id).status().code(), Code::kFailedPrecondition);
  ASSERT_TRUE(b->Resume(id).ok());
  a->Tick();
  EXPECT_EQ((*a->Get(id))["status"], "running");
  EXPECT_EQ(starter_.started, std::vector<std::string>{"b1"});
}

TEST_F(FleetRunnerTest, RunsKeptAsFilesByAnOlderPgshiftdAreImportedOnce) {
  auto dir = MakeTempDir("pgshift-fleet-import");
  ASSERT_TRUE(dir.ok());
  const std::string legacy = *dir + "/state.db.fleet";
  auto plan = BuildPlan(*FleetRequest::FromJson({{"waves", {"canary"}}}), registry_);
  ASSERT_TRUE(plan.ok());
  FleetRun old = FleetRun::New("f-1-1", *plan, kSaturday0300Ms);
  old.status = RunStatus::kPaused;
  ASSERT_TRUE(std::filesystem::create_directory(legacy));
  ASSERT_TRUE(WriteFileAtomic(legacy + "/f-1-1.json", old.ToJson().dump()).ok());
  auto n = ImportFleetDir(legacy, *store_);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 1);
  EXPECT_EQ(*ImportFleetDir(legacy, *store_), 0) << "the directory was renamed";
  auto runner = NewRunner();
  ASSERT_TRUE(runner->Load().ok());
  auto got = runner->Get("f-1-1");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ((*got)["status"], "paused");
  EXPECT_EQ(runner->Driven(), std::vector<std::string>{"f-1-1"});
  (void)RemoveTree(*dir);
}

}  // namespace
}  // namespace pgshift::fleet
