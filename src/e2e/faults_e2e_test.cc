// The kill -9 matrix: pgshiftd kills itself at a phase boundary (its fault
// point before the phase's step, PGSHIFT_FAULTS=crash:before_<phase>,
// common/faults.h) or in the middle of a phase (after its step's effects,
// before the commit that records leaving it: crash:after_<phase>), is
// started again, and the migration still ends where it should (finalized,
// or rolled_back for the rollback branch) with every acknowledged ledger
// row, written through pgshift-proxy all along (beside pgbench), on the new
// primary exactly once and in a CDC consumer's stream (pg_recvlogical
// through the proxy, its slot carried across) exactly once, no pgbench
// transaction failed, and every phase's transition in the events. And bad
// requests: each a 4xx with a clear message and no change of state.
//
// One sandbox per test; the crash points of a test are those of one
// migration, in phase order: the pgshiftd started after a crash is armed
// for the next point, and the one after the last runs without a fault.
// `make e2e-faults` runs the whole matrix (FaultsMatrixE2E.*) and the bad
// requests and prints the summary line last; ctest runs FaultsE2E.* (a
// representative subset inside the hold, and the bad requests).
#include <gtest/gtest.h>
#include <signal.h>

#include <cstdio>
#include <functional>

#include "api/http_server.h"
#include "common/clock.h"
#include "common/os.h"
#include "e2e/faults_fixture.h"
#include "e2e/faults_report.h"
#include "model/phase.h"
#include "store/state_store.h"

namespace pgshift::e2e {
namespace {

// The phase recorded when pgshiftd dies before `p`'s step, or after it
// (before the commit that records leaving `p`): `p` itself, or for a phase
// chained into the step before it, the phase that step began in.
Phase RecordedAtCrashIn(Phase p) {
  while (ChainsInto(p)) p = kPhaseTable[PhaseOrder(p) - 1].phase;
  return p;
}

// The runner's fault points around a phase's step (runner.cc).
constexpr std::string_view kBefore = "before_";
constexpr std::string_view kAfter = "after_";

// `prefix` + each phase with a step on `branch` but preflight, which runs as
// the migration is created (for "after_", preflight's too).
std::vector<std::string> PointsOnBranch(PhaseBranch branch, std::string_view prefix) {
  std::vector<std::string> points;
  for (const auto& info : PhasesOf(branch)) {
    if (info.terminal || (info.phase == Phase::kPreflight && prefix == kBefore)) continue;
    points.push_back(std::string(prefix) + info.name);
  }
  return points;
}

// One crash point of a run: what was seen when pgshiftd died there.
struct CrashPoint {
  std::string name;          // the fault point, before_<phase> or after_<phase>
  std::string phase;         // the phase whose step it is in
  bool died = false;         // pgshiftd was gone within the bound
  bool recorded_ok = false;  // the state file held the phase expected there
  std::string note;          // why not
};

// `name`'s point with its phase; the phase is "" when `name` is neither.
CrashPoint PointNamed(const std::string& name) {
  for (std::string_view prefix : {kBefore, kAfter}) {
    if (name.starts_with(prefix)) return {.name = name, .phase = name.substr(prefix.size())};
  }
  return {.name = name};
}

class FaultsE2E : public FaultsTest {
 protected:
  // POST /v1/migrations. pgshiftd may die on its fault point before it
  // answers; the migration is then read from the state file.
  std::string CreateOrRead(const json& options) {
    auto r = sb_->Api("POST", "/v1/migrations", sb_->MigrationSpec(options).dump());
    if (r.ok()) return CreatedId(*r);
    auto all = OpenState();
    if (!all) return "";
    auto list = all->List();
    return list.ok() && list->size() == 1 ? list->front().id : "";
  }

  // The state file, opened while pgshiftd is down.
  std::unique_ptr<SqliteStateStore> OpenState() {
    auto store = SqliteStateStore::Open(sb_->dir() + "/state.db");
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    return store.ok() ? std::move(store).value() : nullptr;
  }

  // Checks the state file after pgshiftd died at `point`, before or after
  // its phase's step: no later phase is recorded.
  void CheckRecordedAtCrash(const std::string& id, CrashPoint& point) {
    auto phase = ParsePhase(point.phase);
    ASSERT_TRUE(phase.has_value()) << point.name;
    auto store = OpenState();
    ASSERT_TRUE(store);
    auto m = store->Get(id);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    const std::string want = PhaseName(RecordedAtCrashIn(*phase));
    point.recorded_ok = m->phase == want;
    if (!point.recorded_ok) point.note = "recorded phase " + m->phase + ", expected " + want;
    EXPECT_EQ(m->phase, want) << "pgshiftd should have died at " << point.name;
    if (!ChainsInto(*phase)) {
      // The transition into the phase was committed before its step.
      auto events = store->Events(id);
      ASSERT_TRUE(events.ok());
      bool entered = false;
      for (const auto& e : *events) entered = entered || e.phase == point.phase;
      EXPECT_TRUE(entered) << "no event of " << point.phase << " at the crash";
      if (!entered) point.recorded_ok = false;
    }
  }

  // Arms the first of the fault points `names` (before_<phase> or
  // after_<phase>, in the order the migration reaches them), lets `trigger`
  // create the migration or start what reaches them, and goes through every
  // crash point; pgshiftd runs without faults afterwards. Returns the
  // migration's id.
  std::string CrashThrough(const std::vector<std::string>& names,
                           const std::function<std::string()>& trigger) {
    points_.clear();
    for (const auto& n : names) points_.push_back(PointNamed(n));
    EXPECT_TRUE(sb_->KillPgshiftd(SIGTERM).ok());
    StartPgshiftd(*sb_, "crash:" + names.front());
    const std::string id = trigger();
    EXPECT_FALSE(id.empty());
    for (size_t i = 0; i < points_.size() && !id.empty(); ++i) {
      CrashPoint& point = points_[i];
      point.died = WaitForPgshiftdToDie(*sb_, kMigrationBoundMs);
      EXPECT_TRUE(point.died) << "pgshiftd did not die at " << point.name;
      if (!point.died) {
        point.note = "pgshiftd did not die there";
        break;
      }
      CheckRecordedAtCrash(id, point);
      StartPgshiftd(*sb_, i + 1 < points_.size() ? "crash:" + points_[i + 1].name : "");
      if (HasFatalFailure()) break;
    }
    return id;
  }

  // Adds this test's scenarios (its crash points) to the report.
  // `path`'s transitions must all be in the events.
  void Report(const std::string& id, const std::string& ending,
              const std::vector<std::string>& path) {
    missing_events_ += MissingTransitions(Events(id), path);
    FaultsTotals& t = TheFaultsTotals();
    const bool clean = !HasFailure();
    for (const auto& p : points_) {
      t.AddScenario("crash:" + p.name + " -> " + ending, clean && p.died && p.recorded_ok, p.note);
    }
    AddLosses(t);
    char line[200];
    std::snprintf(line, sizeof line,
                  "  %zu crash point(s) in one sandbox, %.0f s; %zu phases, %d transition(s) "
                  "missing; CDC: %lld row(s) lost, %lld duplicated",
                  points_.size(), Seconds(), path.size(), missing_events_,
                  static_cast<long long>(cdc_lost_), static_cast<long long>(cdc_duplicated_));
    t.lines.push_back(line);
    t.Write();
  }

  // An automatic migration crashing at each of the fault points `names` finishes.
  void CrashThroughToFinalized(const std::vector<std::string>& names) {
    StartFullLoad();
    std::this_thread::sleep_for(std::chrono::seconds(1));
    const std::string id = CrashThrough(names, [&] { return CreateOrRead(Options(true)); });
    ASSERT_FALSE(id.empty());
    auto m = sb_->WaitFor(id, Terminal, kMigrationBoundMs);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    EXPECT_EQ((*m)["phase"], "finalized") << m->dump(2);
    StopWritersAndCheck(sb_->TargetConninfo());
    EXPECT_FALSE(sb_->source().Running()) << "the source is retired";
    std::vector<std::string> path;
    for (const auto& info : PhasesOf(PhaseBranch::kMain)) path.push_back(info.name);
    Report(id, "finalized", path);
  }

  // Asks `id`, waiting in `from`, to roll back: pgshiftd dies applying the
  // request (after_<from>: recorded still in `from`, the request still
  // queued), then before and after the rollback's step; the migration ends
  // rolled back by `path` with the load clean on the source.
  void CrashThroughRollbackToRolledBack(const std::string& id, Phase from,
                                        const std::string& path) {
    std::vector<std::string> points = {std::string(kAfter) + PhaseName(from)};
    for (std::string_view prefix : {kBefore, kAfter}) {
      for (const auto& p : PointsOnBranch(PhaseBranch::kRollback, prefix)) points.push_back(p);
    }
    ASSERT_EQ(points.size(), 3u);
    CrashThrough(points, [&] {
      // pgshiftd may die applying the request before it answers: it was
      // queued first, and the restart applies it.
      auto r = sb_->Api("POST", "/v1/migrations/" + id + "/rollback", "{}");
      if (r.ok()) {
        EXPECT_EQ((*r)["status"], 202) << (*r)["body"].dump();
      }
      return id;
    });
    auto m = sb_->WaitFor(id, Terminal, kMigrationBoundMs);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    EXPECT_EQ((*m)["phase"], "rolled_back") << m->dump(2);
    EXPECT_EQ((*m)["state"], "rolled_back");
    EXPECT_EQ((*m)["result"].value("rollback_path", ""), path) << (*m)["result"].dump();
    StopWritersAndCheck(sb_->SourceConninfo());
    EXPECT_TRUE(sb_->source().Running());
    EXPECT_EQ(*sb_->source().Psql(std::string("select count(*) from pg_replication_slots where "
                                              "slot_name <> '") +
                                  kFaultsCdcSlot + "'"),
              "0\n")
        << "the migration's slot is dropped; the consumer's stays";
    std::vector<std::string> phases;
    for (const auto& info : PhasesOf(PhaseBranch::kMain)) {
      if (PhaseOrder(info.phase) <= PhaseOrder(from)) phases.push_back(info.name);
    }
    for (const auto& info : PhasesOf(PhaseBranch::kRollback)) phases.push_back(info.name);
    Report(id, "rolled_back", phases);
  }

  std::vector<CrashPoint> points_;
};

// Inside the hold (traffic waits while pgshiftd is down): before the fence,
// after the promotion (cdc_recreate is chained: the restart finds drain and
// promotes nothing twice) and before the switch.
TEST_F(FaultsE2E, CrashBeforeQuiesceCdcRecreateAndSwitchStillFinishes) {
  CrashThroughToFinalized({"before_quiesce", "before_cdc_recreate", "before_switch"});
}

class FaultsMatrixE2E : public FaultsE2E {};

TEST_F(FaultsMatrixE2E, CrashAtEveryMainPhaseBoundaryStillFinishes) {
  const std::vector<std::string> points = PointsOnBranch(PhaseBranch::kMain, kBefore);
  ASSERT_EQ(points.size(), 13u);
  CrashThroughToFinalized(points);
}

// In the middle of every phase: its step's effects done (the slot made, the
// replica built, the source fenced, the target promoted, traffic switched,
// the source retired, ...), the commit that records leaving the phase not
// made; the restart runs the step again over its own effects.
TEST_F(FaultsMatrixE2E, CrashAfterEveryMainPhaseStepStillFinishes) {
  const std::vector<std::string> points = PointsOnBranch(PhaseBranch::kMain, kAfter);
  ASSERT_EQ(points.size(), 14u);
  CrashThroughToFinalized(points);
}

// A rollback requested while the migration waits in ready: pgshiftd dies
// as it applies the request, before the commit that records rolling_back
// (after_ready: the request is still queued); then after recording
// rolling_back, before its step; then after the step routed back, dropped
// the slot and stopped the target, before recording rolled_back. Each
// restart goes on, and the migration is rolled back.
TEST_F(FaultsMatrixE2E, CrashWhileRollingBackStillRollsBack) {
  StartFullLoad();
  const std::string id = CreateInReady(Options(false));
  ASSERT_FALSE(id.empty());
  CrashThroughRollbackToRolledBack(id, Phase::kReady, "source_untouched");
}

// The same after the switch, waiting in verify with traffic on the target:
// the rollback holds traffic, the source applies the target's writes
// (reverse replication), the CDC slots move back, and nothing written on
// the target in the meantime is lost, whatever the crash.
TEST_F(FaultsMatrixE2E, CrashWhileRollingBackAfterTheSwitchStillRollsBack) {
  // pgbench_history has no primary key: with a replica identity the target
  // can publish its rows back.
  ASSERT_TRUE(sb_->source().Psql("alter table pgbench_history replica identity full", "app").ok());
  StartFullLoad();
  const std::string id = Create(Options(true, {{"auto_finalize", false}}));
  ASSERT_FALSE(id.empty());
  auto m = sb_->WaitFor(id, WaitingOrTerminal, kMigrationBoundMs);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ASSERT_EQ((*m)["phase"], "verify") << m->dump(2);
  CrashThroughRollbackToRolledBack(id, Phase::kVerify, "reverse_replication");
}

// Malformed and oversized bodies, invalid connection strings, unknown ids
// and actions in the wrong state: each a 4xx naming the problem, and the
// migration (waiting in ready) exactly as it was.
TEST_F(FaultsE2E, BadRequestsGet4xxAndChangeNothing) {
  json ready;
  const std::string id = CreateInReady(Options(false), &ready);
  ASSERT_FALSE(id.empty());
  auto events_before = sb_->Api("GET", "/v1/migrations/" + id + "/events");
  ASSERT_TRUE(events_before.ok());
  const size_t n_events = (*events_before)["body"]["events"].size();

  struct Case {
    std::string method, path, body;
    int status;
    std::string needle;
  };
  const std::string m = "/v1/migrations/" + id;
  // A spec for another target directory, so that it trips only on `change`.
  const std::string elsewhere = sb_->dir() + "/elsewhere";
  auto spec_with = [&](const std::function<void(json&)>& change) {
    json spec = sb_->MigrationSpec(Options(false));
    spec["target"]["data_dir"] = elsewhere;
    change(spec);
    return spec.dump();
  };
  const std::string oversized =
      R"({"name":")" + std::string(api::kMaxRequestBodyBytes, 'x') + R"("})";
  const std::vector<Case> cases = {
      // Malformed bodies.
      {"POST", m + "/cutover", "{not json", 400, "invalid JSON"},
      {"POST", "/v1/migrations", "", 400, "empty"},
      {"POST", m + "/rollback", "[1]", 400, "object"},
      {"POST", m + "/rollback", R"({"discard_target_writes":true,"bogus":1})", 400, "bogus"},
      {"POST", m + "/override", R"({"finding":"lag_sustained"})", 400, "reason"},
      {"POST", m + "/drop_slot", R"({"reason":"x"})", 400, "slot"},
      {"POST", "/v1/migrations", oversized, 413, "exceeds"},
      {"POST", m + "/override", oversized, 413, "exceeds"},
      // Invalid connection strings and specs.
      {"POST", "/v1/migrations",
       spec_with([](json& s) { s["source"]["conninfo"] = "host='127.0.0.1 port=5432"; }), 400,
       "source.conninfo"},
      {"POST", "/v1/migrations", spec_with([](json& s) { s["source"]["conninfo"] = ""; }), 400,
       "source.conninfo"},
      {"POST", "/v1/migrations",
       spec_with([](json& s) { s["source"]["conninfo"] = "host=127.0.0.1 port=notaport"; }), 400,
       "source.conninfo: port 'notaport'"},
      {"POST", "/v1/migrations",
       spec_with([](json& s) { s["target"]["data_dir"] = "relative/dir"; }), 400, "absolute"},
      // The same target data directory as the running migration.
      {"POST", "/v1/migrations",
       spec_with([&](json& s) { s["target"]["data_dir"] = sb_->target_dir(); }), 409, id},
      // Unknown ids and paths.
      {"GET", "/v1/migrations/m-nothere", "", 404, "m-nothere"},
      {"GET", "/v1/migrations/m-nothere/events", "", 404, "m-nothere"},
      {"POST", "/v1/migrations/m-nothere/cutover", "{}", 404, "m-nothere"},
      {"GET", "/v1/nothing", "", 404, "no such endpoint"},
      {"POST", m + "/frobnicate", "{}", 404, "unknown migration action 'frobnicate'"},
      // Actions in the wrong state.
      {"POST", m + "/finalize", "{}", 409, "only after the switch"},
      {"POST", m + "/retry", "{}", 409, "nothing to retry"},
      {"POST", m + "/override", R"({"finding":"nope","reason":"x"})", 404, "nope"},
      {"POST", m + "/drop_slot",
       json{{"slot", "pgshift_" + id.substr(0, 1) + "_" + id.substr(2)}, {"reason", "x"}}.dump(),
       409, "own replica slot"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.method + " " + c.path + " " + c.body.substr(0, 80));
    auto r = sb_->Api(c.method, c.path, c.body);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ((*r)["status"], c.status) << (*r)["body"].dump().substr(0, 300);
    const std::string error =
        (*r)["body"].is_object() ? (*r)["body"].value("error", "") : (*r)["body"].dump();
    EXPECT_NE(error.find(c.needle), std::string::npos) << error.substr(0, 300);
  }

  auto now = sb_->Api("GET", m);
  ASSERT_TRUE(now.ok());
  const json& after = (*now)["body"];
  for (const char* key : {"phase", "state", "findings", "error", "pending_actions", "spec"}) {
    EXPECT_EQ(after[key], ready[key]) << key;
  }
  auto events = sb_->Api("GET", m + "/events");
  ASSERT_TRUE(events.ok());
  EXPECT_EQ((*events)["body"]["events"].size(), n_events) << "no request was recorded";
  auto list = sb_->Api("GET", "/v1/migrations");
  ASSERT_TRUE(list.ok());
  EXPECT_EQ((*list)["body"]["migrations"].size(), 1u) << "nothing else was stored";
  EXPECT_FALSE(PathExists(elsewhere)) << "nothing else was created";
  EXPECT_EQ(*sb_->source().Psql("select count(*) from pg_replication_slots"), "1\n")
      << "only the migration's own slot";

  FaultsTotals& t = TheFaultsTotals();
  t.AddScenario("bad requests (" + std::to_string(cases.size()) + " cases)", !HasFailure());
  t.Write();
}

}  // namespace
}  // namespace pgshift::e2e
