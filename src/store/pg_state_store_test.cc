// PgStateStore on a real PostgreSQL cluster: the store contract, leases
// between two stores (two pgshiftd) on the server's clock, fencing, and the
// schema created once by concurrent openers.
#include "store/pg_state_store.h"

#include <gtest/gtest.h>

#include <thread>

#include "store/fleet_run_store_test_util.h"
#include "store/state_store_test_util.h"
#include "testing/pg_harness.h"

namespace pgshift {
namespace {

using json = nlohmann::json;

using testing::Sample;

class PgStateStoreTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto c = testing::TestCluster::Create({.name = "store"});
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    cluster_ = std::move(*c).release();
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(cluster_, nullptr);
    // Each test on a fresh schema.
    ASSERT_TRUE(cluster_->Psql("drop schema if exists pgshift cascade").ok());
  }
  std::unique_ptr<PgStateStore> Open() {
    auto s = PgStateStore::Open({.conninfo = cluster_->Conninfo()});
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? std::move(*s) : nullptr;
  }
  static testing::TestCluster* cluster_;
};
testing::TestCluster* PgStateStoreTest::cluster_ = nullptr;

TEST_F(PgStateStoreTest, ConcurrentOpenersCreateTheSchemaOnce) {
  std::vector<std::thread> openers;
  std::atomic<int> ok{0};
  for (int i = 0; i < 4; ++i) {
    openers.emplace_back([&] {
      if (PgStateStore::Open({.conninfo = cluster_->Conninfo()}).ok()) ++ok;
    });
  }
  for (auto& t : openers) t.join();
  EXPECT_EQ(ok, 4);
  auto v = cluster_->Psql("select string_agg(version::text, ',') from pgshift.schema_version");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, "3\n");
}

TEST_F(PgStateStoreTest, RecordsQueuesEventsAndAuditRoundTrip) {
  auto s = Open();
  ASSERT_TRUE(s);
  ASSERT_TRUE(s->Insert(Sample("m-1")).ok());
  EXPECT_EQ(s->Insert(Sample("m-1")).code(), Code::kAlreadyExists);
  ASSERT_TRUE(s->RequestAction("m-1", "rollback", {{"discard_target_writes", true}}).ok());
  ASSERT_TRUE(s->RequestAction("m-1", "rollback", {{"discard_target_writes", true}}).ok());
  ASSERT_TRUE(s->RequestAction("m-1", "retry", json::object()).ok());
  EXPECT_EQ(s->RequestAction("zzz", "cutover", {}).code(), Code::kNotFound);
  auto m = s->Get("m-1");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ASSERT_EQ(m->actions.size(), 2u) << "a repeated request is queued once";
  EXPECT_EQ(m->actions[0].body["discard_target_writes"], true);
  m->phase = "drain";
  m->result["final_lsn"] = "0/3000060";
  ASSERT_TRUE(
      s->UpdateWithEvents(*m, {{0, 7, "quiesce", "info", "held", "x"}}, {m->actions[0].seq}).ok());
  auto again = s->Get("m-1");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->phase, "drain");
  EXPECT_EQ(again->result["final_lsn"], "0/3000060");
  ASSERT_EQ(again->actions.size(), 1u);
  EXPECT_EQ(again->actions[0].action, "retry");
  auto events = s->Events("m-1");
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 1u);
  EXPECT_EQ((*events)[0].owner, "x");
  EXPECT_EQ(s->Get("nope").status().code(), Code::kNotFound);
  MigrationRecord ghost = Sample("ghost");
  EXPECT_EQ(s->UpdateWithEvents(ghost, {{0, 1, "sync", "info", "lost"}}, {}).code(),
            Code::kNotFound);
  EXPECT_TRUE(s->Events("ghost")->empty());

  for (int i = 1; i <= 3; ++i) {
    ASSERT_TRUE(s->AppendAudit(
                     {0, i, "alice", "migration.cutover", "app", "m-1", "try " + std::to_string(i)})
                    .ok());
  }
  auto newest = s->ListAudit(2);
  ASSERT_TRUE(newest.ok());
  ASSERT_EQ(newest->size(), 2u);
  EXPECT_EQ((*newest)[0].detail, "try 2");
  ASSERT_TRUE(s->LinkDatabase("m-1", "app").ok());
  ASSERT_TRUE(s->LinkDatabase("m-1", "app2").ok());
  EXPECT_EQ(s->MigrationDatabases()->at("m-1"), "app2");
  auto all = s->List();
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 1u);
}

// ListLive filters in SQL, and the queued actions it returns are those of
// the migrations it selected (its query takes no parameter).
TEST_F(PgStateStoreTest, ListLiveLeavesOutTerminalPhasesWithTheirQueues) {
  auto s = Open();
  ASSERT_TRUE(s);
  for (const auto& [id, phase] : std::vector<std::pair<std::string, std::string>>{
           {"m-a", "sync"}, {"m-b", "finalized"}, {"m-c", "rolled_back"}, {"m-d", "verify"}}) {
    MigrationRecord m = Sample(id);
    m.phase = phase;
    ASSERT_TRUE(s->Insert(m).ok());
    ASSERT_TRUE(s->RequestAction(id, "retry", json::object()).ok());
  }
  auto live = s->ListLive();
  ASSERT_TRUE(live.ok()) << live.status().ToString();
  ASSERT_EQ(live->size(), 2u);
  EXPECT_EQ((*live)[0].id, "m-a");
  EXPECT_EQ((*live)[1].id, "m-d");
  for (const auto& m : *live) EXPECT_EQ(m.actions.size(), 1u) << m.id;
  EXPECT_EQ(s->List()->size(), 4u);
}

TEST_F(PgStateStoreTest, TwoStoresShareLeasesAndALostLeaseIsFenced) {
  auto a = Open();
  auto b = Open();  // another pgshiftd's
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(a->Insert(Sample("m-1")).ok());
  constexpr int64_t kShortTtl = 300;
  auto la = a->AcquireLease("m-1", "pgshiftd-a", kShortTtl);
  ASSERT_TRUE(la.ok()) << la.status().ToString();
  EXPECT_EQ(la->token, 1);
  EXPECT_EQ(b->AcquireLease("m-1", "pgshiftd-b", kShortTtl).status().code(),
            Code::kFailedPrecondition);
  auto ma = a->Get("m-1");
  ASSERT_TRUE(ma.ok());
  ASSERT_EQ(ma->lease.token, 1);
  ma->phase = "validate";
  ASSERT_TRUE(a->Update(*ma).ok());

  // a stops renewing; past the expiry (the server's clock) b takes over.
  std::this_thread::sleep_for(std::chrono::milliseconds(kShortTtl + 200));
  auto lb = b->AcquireLease("m-1", "pgshiftd-b", 60000);
  ASSERT_TRUE(lb.ok()) << lb.status().ToString();
  EXPECT_EQ(lb->token, 2);

  ma->phase = "ready";
  EXPECT_TRUE(IsLeaseLost(a->Update(*ma)));
  EXPECT_TRUE(IsLeaseLost(a->UpdateWithEvents(*ma, {{0, 1, "ready", "info", "late"}}, {})));
  EXPECT_TRUE(IsLeaseLost(a->AppendEvent("m-1", {0, 1, "ready", "info", "late"}, la->token)));
  EXPECT_TRUE(IsLeaseLost(a->RenewLease("m-1", *la, 60000).status()));
  EXPECT_EQ(a->AcquireLease("m-1", "pgshiftd-a", 60000).status().code(), Code::kFailedPrecondition);
  auto mb = b->Get("m-1");
  ASSERT_TRUE(mb.ok());
  EXPECT_EQ(mb->phase, "validate") << "nothing of a's late writes landed";
  EXPECT_EQ(mb->lease.owner, "pgshiftd-b");
  EXPECT_TRUE(b->Events("m-1")->empty());
  mb->phase = "ready";
  EXPECT_TRUE(b->Update(*mb).ok());
  EXPECT_TRUE(b->AppendEvent("m-1", {0, 2, "ready", "info", "mine", "pgshiftd-b"}, lb->token).ok());
  EXPECT_TRUE(a->AppendEvent("m-1", {0, 3, "ready", "info", "cutover requested"}, kNoFence).ok());

  // Released: a may take it back at once, with the next token.
  ASSERT_TRUE(b->ReleaseLease("m-1", *lb).ok());
  auto back = a->AcquireLease("m-1", "pgshiftd-a", 60000);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->token, 3);
}

TEST_F(PgStateStoreTest, TwoStoresShareFleetRunsLeasedAndFenced) {
  auto a = Open();
  auto b = Open();  // another pgshiftd's
  ASSERT_TRUE(a && b);
  testing::ExpectFleetRunStoreContract(*a, *b);
}

TEST_F(PgStateStoreTest, AStoreOfTheFirstVersionGainsFleetRunsAndStartKeys) {
  // Version 1 as an older pgshiftd left it: migrations, no fleet runs, links
  // without keys.
  ASSERT_TRUE(Open());
  ASSERT_TRUE(cluster_
                  ->Psql("drop table pgshift.fleet_runs; drop index "
                         "pgshift.migration_databases_by_key, "
                         "pgshift.migration_databases_by_database; alter table "
                         "pgshift.migration_databases drop column start_key; update "
                         "pgshift.schema_version set version = 1")
                  .ok());
  auto s = Open();
  ASSERT_TRUE(s);
  EXPECT_TRUE(s->InsertFleetRun({.id = "f-1", .created_at_ms = 1}).ok());
  EXPECT_TRUE(s->InsertLinked(Sample("m-1"), {.database = "app", .key = "f-1/app"}).ok());
  EXPECT_EQ(*cluster_->Psql("select version from pgshift.schema_version"), "3\n");
}

TEST_F(PgStateStoreTest, TwoStoresShareLinkedInserts) {
  auto a = Open();
  auto b = Open();  // another pgshiftd's
  ASSERT_TRUE(a && b);
  testing::ExpectLinkedInsertContract(*a, *b);
}

// Inserts racing from two pgshiftd: the check and the link are one commit
// under a lock per database, so exactly one start of a database wins,
// whether the racers share a key (a driver thought dead and its successor)
// or not (two operators).
TEST_F(PgStateStoreTest, RacingLinkedInsertsOfOneDatabaseLeaveOne) {
  auto a = Open();
  auto b = Open();
  ASSERT_TRUE(a && b);
  constexpr int kRacers = 8;
  for (const bool same_key : {true, false}) {
    const std::string db = same_key ? "app" : "billing";
    std::atomic<int> won{0}, refused{0};
    std::vector<std::thread> racers;
    for (int i = 0; i < kRacers; ++i) {
      racers.emplace_back([&, i] {
        Store& s = i % 2 ? static_cast<Store&>(*a) : *b;
        const std::string key = same_key ? "f-1/" + db : "k-" + std::to_string(i);
        Status st = s.InsertLinked(Sample(db + "-" + std::to_string(i)), {db, key});
        if (st.ok()) ++won;
        if (st.code() == Code::kAlreadyExists) ++refused;
      });
    }
    for (auto& t : racers) t.join();
    EXPECT_EQ(won, 1) << db;
    EXPECT_EQ(refused, kRacers - 1) << db;
    auto links = a->MigrationDatabases();
    ASSERT_TRUE(links.ok()) << links.status().ToString();
    int linked = 0;
    for (const auto& [id, linked_db] : *links) linked += linked_db == db;
    EXPECT_EQ(linked, 1) << db;
    EXPECT_EQ(a->List()->size(), same_key ? 1u : 2u) << "the refused inserts left nothing";
  }
}

TEST_F(PgStateStoreTest, AnUnreachableStoreIsUnavailableAfterTheRetries) {
  auto s = PgStateStore::Open(
      {.conninfo = "host=127.0.0.1 port=1 dbname=postgres connect_timeout=1", .retry_ms = 500});
  EXPECT_EQ(s.status().code(), Code::kUnavailable);
  EXPECT_NE(s.status().message().find("state store unreachable"), std::string::npos)
      << s.status().message();
}

}  // namespace
}  // namespace pgshift
