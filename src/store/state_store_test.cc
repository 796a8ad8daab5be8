#include "store/state_store.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include "common/os.h"
#include "store/fleet_run_store_test_util.h"
#include "store/state_store_test_util.h"

namespace pgshift {
namespace {

using json = nlohmann::json;

using testing::Sample;

TEST(SqliteStateStore, RoundTripsAndSurvivesReopen) {
  auto dir = MakeTempDir("pgshift-store");
  ASSERT_TRUE(dir.ok());
  const std::string path = *dir + "/state.db";
  {
    auto store = SqliteStateStore::Open(path);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    ASSERT_TRUE((*store)->Insert(Sample("m-1")).ok());
    EXPECT_EQ((*store)->Insert(Sample("m-1")).code(), Code::kAlreadyExists);
    auto m = (*store)->Get("m-1");
    ASSERT_TRUE(m.ok());
    m->phase = "quiesce";
    m->result["final_lsn"] = "0/3000060";
    ASSERT_TRUE((*store)->Update(*m).ok());
    ASSERT_TRUE((*store)->AppendEvent("m-1", {0, 5, "quiesce", "info", "held"}, kNoFence).ok());
  }
  auto store = SqliteStateStore::Open(path);
  ASSERT_TRUE(store.ok());
  auto m = (*store)->Get("m-1");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->phase, "quiesce");
  EXPECT_EQ(m->result["final_lsn"], "0/3000060");
  auto ev = (*store)->Events("m-1");
  ASSERT_TRUE(ev.ok());
  ASSERT_EQ(ev->size(), 1u);
  EXPECT_EQ((*ev)[0].message, "held");
  EXPECT_EQ((*store)->Get("nope").status().code(), Code::kNotFound);
  (void)RemoveTree(*dir);
}

// ListLive leaves out the finalized and rolled-back migrations, in SQL and
// in the base class's filter of List() (what a store without an override gets).
TEST(SqliteStateStore, ListLiveLeavesOutTerminalPhases) {
  auto store = SqliteStateStore::Open(":memory:");
  ASSERT_TRUE(store.ok());
  auto& s = **store;
  const std::vector<std::pair<std::string, std::string>> phases = {{"m-a", "sync"},
                                                                   {"m-b", "finalized"},
                                                                   {"m-c", "rolling_back"},
                                                                   {"m-d", "rolled_back"},
                                                                   {"m-e", "verify"}};
  for (const auto& [id, phase] : phases) {
    MigrationRecord m = Sample(id);
    m.phase = phase;
    ASSERT_TRUE(s.Insert(m).ok());
  }
  auto ids = [](const std::vector<MigrationRecord>& v) {
    std::vector<std::string> out;
    for (const auto& m : v) out.push_back(m.id);
    return out;
  };
  auto live = s.ListLive();
  ASSERT_TRUE(live.ok()) << live.status().ToString();
  EXPECT_EQ(ids(*live), (std::vector<std::string>{"m-a", "m-c", "m-e"}));
  auto filtered = s.StateStore::ListLive();
  ASSERT_TRUE(filtered.ok());
  EXPECT_EQ(ids(*filtered), ids(*live));
  EXPECT_EQ(s.List()->size(), 5u);
}

TEST(SqliteStateStore, ActionsAreNotOverwrittenByEngineUpdates) {
  auto store = SqliteStateStore::Open(":memory:");
  ASSERT_TRUE(store.ok());
  auto& s = **store;
  ASSERT_TRUE(s.Insert(Sample("m-2")).ok());
  auto stale = s.Get("m-2");
  ASSERT_TRUE(stale.ok());
  ASSERT_TRUE(s.RequestAction("m-2", "rollback", {{"discard_target_writes", true}}).ok());
  stale->progress["lag_bytes"] = 10;
  ASSERT_TRUE(s.Update(*stale).ok());  // engine writes a record read before the request
  auto now = s.Get("m-2");
  ASSERT_TRUE(now.ok());
  ASSERT_EQ(now->actions.size(), 1u);
  EXPECT_EQ(now->actions[0].action, "rollback");
  EXPECT_EQ(now->actions[0].body["discard_target_writes"], true);
  EXPECT_EQ(now->progress["lag_bytes"], 10);
  ASSERT_TRUE(s.UpdateWithEvents(*now, {}, {now->actions[0].seq}).ok());
  EXPECT_TRUE(s.Get("m-2")->actions.empty());
  EXPECT_EQ(s.RequestAction("zzz", "cutover", {}).code(), Code::kNotFound);
}

TEST(SqliteStateStore, RequestsQueueInOrderAndOnlyTheAppliedOneIsRemoved) {
  auto store = SqliteStateStore::Open(":memory:");
  ASSERT_TRUE(store.ok());
  auto& s = **store;
  ASSERT_TRUE(s.Insert(Sample("m-4")).ok());
  ASSERT_TRUE(s.RequestAction("m-4", "finalize", json::object()).ok());
  ASSERT_TRUE(s.RequestAction("m-4", "override", {{"finding", "a"}, {"reason", "r"}}).ok());
  // The engine loads the queue; another request arrives before it commits.
  auto loaded = s.Get("m-4");
  ASSERT_TRUE(loaded.ok());
  ASSERT_EQ(loaded->actions.size(), 2u);
  EXPECT_EQ(loaded->actions[0].action, "finalize");
  EXPECT_EQ(loaded->actions[1].action, "override");
  ASSERT_TRUE(s.RequestAction("m-4", "override", {{"finding", "b"}, {"reason", "r"}}).ok());
  // A retried request is queued once.
  ASSERT_TRUE(s.RequestAction("m-4", "override", {{"finding", "b"}, {"reason", "r"}}).ok());
  ASSERT_TRUE(s.UpdateWithEvents(*loaded, {}, {loaded->actions[1].seq}).ok());
  auto now = s.Get("m-4");
  ASSERT_TRUE(now.ok());
  ASSERT_EQ(now->actions.size(), 2u);
  EXPECT_EQ(now->actions[0].action, "finalize");
  EXPECT_EQ(now->actions[1].body["finding"], "b") << "requested meanwhile: still queued";
  // Removing a request already gone changes nothing.
  ASSERT_TRUE(s.UpdateWithEvents(*now, {}, {loaded->actions[1].seq}).ok());
  EXPECT_EQ(s.Get("m-4")->actions.size(), 2u);
}

TEST(SqliteStateStore, APendingRequestOfAnOlderStateFileIsQueued) {
  auto dir = MakeTempDir("pgshift-store");
  ASSERT_TRUE(dir.ok());
  const std::string path = *dir + "/state.db";
  {
    auto store = SqliteStateStore::Open(path);
    ASSERT_TRUE(store.ok());
    ASSERT_TRUE((*store)->Insert(Sample("m-5")).ok());
  }
  {
    // What an older pgshiftd wrote: the request in the migrations row.
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db,
                           "UPDATE migrations SET pending_action='rollback', "
                           "action_body='{\"discard_target_writes\":true}' WHERE id='m-5'",
                           nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(db);
  }
  auto store = SqliteStateStore::Open(path);
  ASSERT_TRUE(store.ok());
  auto m = (*store)->Get("m-5");
  ASSERT_TRUE(m.ok());
  ASSERT_EQ(m->actions.size(), 1u);
  EXPECT_EQ(m->actions[0].action, "rollback");
  EXPECT_EQ(m->actions[0].body["discard_target_writes"], true);
  (void)RemoveTree(*dir);
}

TEST(SqliteStateStore, UpdateWithEventsWritesAllOrNothing) {
  auto store = SqliteStateStore::Open(":memory:");
  ASSERT_TRUE(store.ok());
  auto& s = **store;
  ASSERT_TRUE(s.Insert(Sample("m-3")).ok());
  auto m = s.Get("m-3");
  ASSERT_TRUE(m.ok());
  m->phase = "drain";
  ASSERT_TRUE(
      s.UpdateWithEvents(
           *m, {{0, 7, "quiesce", "info", "held"}, {0, 9, "drain", "info", "final source LSN 0/1"}},
           {})
          .ok());
  EXPECT_EQ(s.Get("m-3")->phase, "drain");
  auto ev = s.Events("m-3");
  ASSERT_TRUE(ev.ok());
  ASSERT_EQ(ev->size(), 2u);
  EXPECT_EQ((*ev)[0].message, "held");
  EXPECT_EQ((*ev)[1].at_ms, 9);
  // A record that is not there: no event is left behind either.
  MigrationRecord ghost = Sample("m-ghost");
  EXPECT_EQ(s.UpdateWithEvents(ghost, {{0, 1, "sync", "info", "lost"}}, {}).code(),
            Code::kNotFound);
  EXPECT_TRUE(s.Events("m-ghost")->empty());
  // The store still takes writes after the rollback.
  m->phase = "promote";
  ASSERT_TRUE(s.UpdateWithEvents(*m, {{0, 11, "promote", "info", "replayed"}}, {}).ok());
  EXPECT_EQ(s.Events("m-3")->size(), 3u);
}

TEST(SqliteStateStore, AuditEntriesAndDatabaseLinksSurviveReopen) {
  auto dir = MakeTempDir("pgshift-store");
  ASSERT_TRUE(dir.ok());
  const std::string path = *dir + "/state.db";
  {
    auto store = SqliteStateStore::Open(path);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    for (int i = 1; i <= 3; ++i) {
      ASSERT_TRUE((*store)
                      ->AppendAudit({0, i, "alice", "migration.cutover", "app", "m-1",
                                     "try " + std::to_string(i)})
                      .ok());
    }
    ASSERT_TRUE((*store)->LinkDatabase("m-1", "app").ok());
  }
  struct stat st {};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u) << "specs may hold a source password";
  auto store = SqliteStateStore::Open(path);
  ASSERT_TRUE(store.ok());
  auto all = (*store)->ListAudit(100);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[0].detail, "try 1");
  EXPECT_EQ((*all)[2].identity, "alice");
  EXPECT_EQ((*all)[2].database, "app");
  auto newest = (*store)->ListAudit(2);
  ASSERT_TRUE(newest.ok());
  ASSERT_EQ(newest->size(), 2u);
  EXPECT_EQ((*newest)[0].detail, "try 2");  // the two newest, oldest first
  auto links = (*store)->MigrationDatabases();
  ASSERT_TRUE(links.ok());
  EXPECT_EQ(links->at("m-1"), "app");
  (void)RemoveTree(*dir);
}

TEST(SqliteStateStore, ALinkedInsertIsOnePerKeyAndOneLivePerDatabase) {
  auto dir = MakeTempDir("pgshift-link-store");
  ASSERT_TRUE(dir.ok());
  const std::string path = *dir + "/state.db";
  {
    auto store = SqliteStateStore::Open(path);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    testing::ExpectLinkedInsertContract(**store, **store);
  }
  auto store = SqliteStateStore::Open(path);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_EQ(*(*store)->MigrationWithKey("f-1/app"), "m-1") << "kept across a restart";
  (void)RemoveTree(*dir);
}

TEST(SqliteStateStore, FleetRunsAreLeasedFencedAndSurviveReopen) {
  auto dir = MakeTempDir("pgshift-fleet-store");
  ASSERT_TRUE(dir.ok());
  const std::string path = *dir + "/state.db";
  {
    auto store = SqliteStateStore::Open(path);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    testing::ExpectFleetRunStoreContract(**store, **store);
  }
  auto store = SqliteStateStore::Open(path);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  auto runs = (*store)->ListFleetRuns();
  ASSERT_TRUE(runs.ok());
  ASSERT_EQ(runs->size(), 2u);
  EXPECT_EQ((*runs)[0].doc["n"], 4);
  // Restarted: the lease of the process before is free at once.
  auto l = (*store)->AcquireFleetLease("f-1", "host:2", 60000);
  ASSERT_TRUE(l.ok()) << l.status().ToString();
  EXPECT_EQ(l->token, 3);
  (void)RemoveTree(*dir);
}

}  // namespace
}  // namespace pgshift
