// The workflow against its own faults: commits to the state store that fail
// (a full disk, an unwritable file) and operator requests that arrive while
// a step runs. Deterministic, against FakeWorld and a HookedStore.
#include <gtest/gtest.h>

#include <map>

#include "workflow/engine.h"
#include "workflow/engine_test_util.h"

namespace pgshift {
namespace {

using json = nlohmann::json;
using testing_util::AllMainPhases;
using testing_util::EngineTest;
using testing_util::HookedStore;
using testing_util::Spec;

Status DiskFull() { return Internal("state store: database or disk is full (injected)"); }

class StoreFaultTest : public EngineTest {
 protected:
  // The engine on a HookedStore over the fixture's store.
  void UseHookedStore() {
    hooked_ = std::make_unique<HookedStore>(*store_);
    engine_ = NewEngine(*hooked_);
  }
  // "phase/kind" of every event, in order.
  std::vector<std::string> EventShape(const std::string& id) {
    std::vector<std::string> out;
    for (const auto& e : Events(id)) {
      out.push_back(e["phase"].get<std::string>() + "/" + e["kind"].get<std::string>());
    }
    return out;
  }
  // Events recorded more than once (the same phase, kind and message).
  std::vector<std::string> Repeated(const std::string& id) {
    std::map<std::string, int> seen;
    std::vector<std::string> out;
    for (const auto& e : Events(id)) {
      std::string key = e["phase"].get<std::string>() + " " + e["kind"].get<std::string>() + " " +
                        e["message"].get<std::string>();
      if (++seen[key] == 2) out.push_back(key);
    }
    return out;
  }
  void ExpectFinishedOnce(const std::string& id) {
    json m = Get(id);
    EXPECT_EQ(m["phase"], "finalized") << m.dump();
    EXPECT_EQ(Phases(id), AllMainPhases());
    EXPECT_EQ(Repeated(id), std::vector<std::string>{});
    EXPECT_EQ(world_->timeline, 2) << "promoted exactly once";
    EXPECT_EQ(world_->routed, world_->target_ep);
    EXPECT_FALSE(world_->held);
    EXPECT_TRUE(world_->retired);
    EXPECT_TRUE(world_->slots.empty());
    EXPECT_TRUE(m["pending_actions"].empty());
  }

  std::unique_ptr<HookedStore> hooked_;
};

TEST_F(StoreFaultTest, ACommitFailingAtAnyWriteIsRetriedAndTheMigrationFinishesOnce) {
  // The writes of a migration in which none fails, and its events.
  UseHookedStore();
  std::string id = Create(Spec());
  int total = 0;
  hooked_->on_write = [&](const std::string&) {
    ++total;
    return Status::OK();
  };
  Run(id);
  ExpectFinishedOnce(id);
  const std::vector<std::string> clean_events = EventShape(id);
  ASSERT_GT(total, 20);

  constexpr int kFailuresInARow = 3;
  for (int n = 1; n <= total; ++n) {
    SCOPED_TRACE("writes " + std::to_string(n) + ".." + std::to_string(n + kFailuresInARow - 1) +
                 " of " + std::to_string(total) + " fail");
    SetUp();
    UseHookedStore();
    id = Create(Spec());
    int writes = 0;
    int failed = 0;
    hooked_->on_write = [&](const std::string&) {
      ++writes;
      if (writes < n || writes >= n + kFailuresInARow) return Status::OK();
      ++failed;
      return DiskFull();
    };
    Run(id);
    EXPECT_EQ(failed, kFailuresInARow);
    ExpectFinishedOnce(id);
    EXPECT_EQ(EventShape(id), clean_events) << "no event lost or written twice";
    if (HasFailure()) break;
  }
}

// While every commit fails, steps run the recorded phase again and again but
// the migration does not move past it; once commits succeed it finishes.
TEST_F(StoreFaultTest, WhileCommitsFailTheMigrationDoesNotMoveOn) {
  for (const std::string failing_in : {"quiesce", "drain"}) {
    SCOPED_TRACE("commits fail from phase " + failing_in);
    SetUp();
    UseHookedStore();
    const std::string id = Create(Spec());
    bool failing = false;
    size_t events_before = 0;
    hooked_->after_get = [&](const MigrationRecord& m) {
      if (!failing && m.phase == failing_in) {
        failing = true;
        events_before = store_->Events(id)->size();
      }
    };
    hooked_->on_write = [&](const std::string&) { return failing ? DiskFull() : Status::OK(); };
    EXPECT_EQ(engine_->RunUntilSettled(id, 40).code(), Code::kTimeout);
    ASSERT_TRUE(failing);
    json m = Get(id);
    EXPECT_EQ(m["phase"], failing_in) << "no phase is recorded past the failed commit";
    EXPECT_EQ(store_->Events(id)->size(), events_before);
    if (failing_in == "quiesce") {
      EXPECT_FALSE(world_->promoted) << "drain never ran: quiesce's outcome is not recorded";
    } else {
      // drain chains promote, snapshot and cdc_recreate into the step that
      // records switch; that commit fails, so the switch never runs.
      EXPECT_EQ(world_->routed, world_->source_ep);
      EXPECT_EQ(std::count(world_->calls.begin(), world_->calls.end(), "Repoint"), 0);
      EXPECT_TRUE(world_->held) << "traffic stays held, on the fenced source";
    }
    hooked_->after_get = nullptr;
    failing = false;
    Run(id);
    ExpectFinishedOnce(id);
  }
}

// Two overrides for the migration blocked at preflight: the second is
// requested between the engine's load of the first and its commit.
TEST_F(StoreFaultTest, ARequestMadeWhileTheEngineAppliesAnotherIsAppliedToo) {
  for (const char* f : {"a", "b"}) {
    world_->preflight.push_back({.id = "unlogged_tables",
                                 .severity = checks::Severity::kBlocking,
                                 .subject = std::string("public.") + f,
                                 .message = "unlogged table with rows"});
  }
  UseHookedStore();
  std::string id = Create(Spec());
  Run(id);
  ASSERT_EQ(Get(id)["state"], "blocked");
  auto override_of = [](const std::string& subject) {
    return json{{"finding", "unlogged_tables"}, {"subject", subject}, {"reason", "rebuilt"}};
  };
  ASSERT_TRUE(engine_->Act(id, "override", override_of("public.a")).ok());
  bool requested = false;
  hooked_->after_get = [&](const MigrationRecord& m) {
    if (requested || m.actions.empty()) return;
    requested = true;  // before Act, which reads the record too
    ASSERT_TRUE(engine_->Act(id, "override", override_of("public.b")).ok());
  };
  Run(id);
  ASSERT_TRUE(requested);
  json m = Get(id);
  EXPECT_EQ(m["phase"], "finalized") << m["error"];
  for (const auto& f : m["findings"]) {
    if (f["id"] != "unlogged_tables") continue;
    EXPECT_EQ(f["overridden"], true) << f.dump();
  }
  EXPECT_TRUE(m["pending_actions"].empty());
}

// A rollback requested inside the step that consumes the cutover stays
// queued (the cutover's commit removes only the cutover) and is applied next.
TEST_F(StoreFaultTest, ARollbackRequestedWhileTheCutoverIsConsumedIsApplied) {
  UseHookedStore();
  std::string id = Create(Spec(false, false));
  Run(id);
  ASSERT_EQ(Get(id)["phase"], "ready");
  ASSERT_TRUE(engine_->Act(id, "cutover", json::object()).ok());
  bool armed = false, requested = false;
  hooked_->after_get = [&](const MigrationRecord& m) {
    armed = armed || (!m.actions.empty() && m.actions.front().action == "cutover");
  };
  hooked_->on_write = [&](const std::string& op) {
    if (armed && !requested && op == "update") {  // ready's lag sample, before it cuts over
      requested = true;
      EXPECT_TRUE(engine_->Act(id, "rollback", json::object()).ok());
    }
    return Status::OK();
  };
  Run(id);
  ASSERT_TRUE(requested);
  json m = Get(id);
  EXPECT_EQ(m["phase"], "rolled_back");
  EXPECT_EQ(world_->routed, world_->source_ep);
  EXPECT_FALSE(world_->fenced);
  EXPECT_FALSE(world_->held);
  std::vector<std::string> messages;
  for (const auto& e : Events(id)) messages.push_back(e["message"]);
  auto has = [&](const std::string& needle) {
    return std::any_of(messages.begin(), messages.end(), [&](const std::string& msg) {
      return msg.find(needle) != std::string::npos;
    });
  };
  EXPECT_TRUE(has("cutover approved by operator"));
  EXPECT_TRUE(has("rollback requested by operator (from cdc_prepare)"));
}

// Requests queue behind each other instead of replacing one another; a
// request repeated while queued counts once; one that no longer applies is
// dropped with an event rather than left waiting or applied late.
TEST_F(StoreFaultTest, RequestsQueueAndAStaleOneIsDroppedVisibly) {
  std::string id = Create(Spec(false, false));
  Run(id);
  ASSERT_EQ(Get(id)["phase"], "ready");
  ASSERT_TRUE(engine_->Act(id, "cutover", json::object()).ok());
  ASSERT_TRUE(engine_->Act(id, "cutover", json::object()).ok());
  ASSERT_TRUE(engine_->Act(id, "rollback", json::object()).ok());
  json m = Get(id);
  EXPECT_EQ(m["pending_actions"], (json{"cutover", "rollback"}));
  EXPECT_EQ(m["pending_action"], "cutover");
  Run(id);
  m = Get(id);
  EXPECT_EQ(m["phase"], "rolled_back");
  EXPECT_FALSE(world_->promoted);
  EXPECT_TRUE(m["pending_actions"].empty());
  bool dropped = false;
  for (const auto& e : Events(id)) {
    dropped = dropped || (e["kind"] == "warning" &&
                          e["message"].get<std::string>().find("cutover request dropped") == 0);
  }
  EXPECT_TRUE(dropped);
}

// An operator's request whose effect could not be recorded stays queued and
// is applied again, once.
TEST_F(StoreFaultTest, AnActionWhoseCommitFailedStaysQueuedAndIsAppliedOnce) {
  world_->preflight.push_back({.id = "unlogged_tables",
                               .severity = checks::Severity::kBlocking,
                               .subject = "public.cache",
                               .message = "unlogged table with rows"});
  UseHookedStore();
  std::string id = Create(Spec());
  Run(id);
  ASSERT_EQ(Get(id)["state"], "blocked");
  ASSERT_TRUE(engine_
                  ->Act(id, "override",
                        {{"finding", "unlogged_tables"}, {"reason", "cache is rebuilt on start"}})
                  .ok());
  int failures_left = 2;
  hooked_->on_write = [&](const std::string&) {
    return failures_left-- > 0 ? DiskFull() : Status::OK();
  };
  Run(id);
  EXPECT_LT(failures_left, 0) << "both failed commits were tried";
  EXPECT_EQ(Get(id)["phase"], "finalized");
  int overridden = 0;
  for (const auto& e : Events(id)) {
    overridden += e["message"].get<std::string>().find("overridden") != std::string::npos;
  }
  EXPECT_EQ(overridden, 1);
}

}  // namespace
}  // namespace pgshift
