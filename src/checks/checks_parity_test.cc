// Integration tests: data parity between a source and its promoted replica,
// reading the target at an exported snapshot while new writes land on it.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "checks/checks.h"
#include "common/os.h"
#include "common/process.h"
#include "pg/conn.h"
#include "testing/pg_harness.h"
#include "testing/test_replica.h"

namespace pgshift::checks {
namespace {

using pgshift::testing::TestCluster;
using testing::TestReplica;

const Finding* Find(const std::vector<Finding>& fs, const std::string& subject) {
  for (const Finding& f : fs) {
    if (f.id == "data_parity" && f.subject == subject) return &f;
  }
  return nullptr;
}

struct Pair {
  std::unique_ptr<TestCluster> src;
  std::unique_ptr<TestReplica> replica;
};

// A source with a few tables (one without a key) and a caught-up replica.
void MakePair(const std::string& name, const std::string& extra_sql, Pair* p) {
  auto src = TestCluster::Create({.name = name});
  ASSERT_TRUE(src.ok()) << src.status().ToString();
  p->src = std::move(*src);
  ASSERT_TRUE(
      p->src
          ->Psql("create table accounts (id int primary key, balance numeric, note text, at "
                 "timestamptz); "
                 "insert into accounts select g, g * 1.5, md5(g::text), now() from "
                 "generate_series(1, 5000) g; "
                 "create table events (payload jsonb, f float8); "
                 "insert into events select jsonb_build_object('n', g), g / 3.0 from "
                 "generate_series(1, 2000) g; "
                 "create schema other; create table other.\"Mixed Case\" (k text primary key); "
                 "insert into other.\"Mixed Case\" values ('a'), ('b')" +
                 extra_sql)
          .ok());
  auto replica = TestReplica::Create(*p->src, {});
  ASSERT_TRUE(replica.ok()) << replica.status().ToString();
  p->replica = std::move(*replica);
  ASSERT_TRUE(p->replica->WaitCaughtUp(p->src->Conninfo()).ok());
}

// A snapshot of the promoted replica, exported by `holder`'s open
// transaction (it lives as long as that transaction).
struct PromotionSnapshot {
  std::unique_ptr<PgConn> holder;
  std::string id;
};

// Promotes the replica and exports a snapshot on it at once, as the cutover
// does before traffic reaches the target.
void PromoteAndExportSnapshot(const Pair& p, PromotionSnapshot* out) {
  ASSERT_TRUE(p.replica->cluster().Promote().ok());
  auto holder = PgConn::Connect(p.replica->Conninfo());
  ASSERT_TRUE(holder.ok()) << holder.status().ToString();
  out->holder = std::move(*holder);
  ASSERT_TRUE(out->holder->Exec("begin isolation level repeatable read").ok());
  auto snap = out->holder->Query("select pg_export_snapshot() as id");
  ASSERT_TRUE(snap.ok()) << snap.status().ToString();
  out->id = snap->Str(0, "id");
}

TEST(DataParity, SnapshotAtPromotionMatchesWhileNewWritesLandOnTarget) {
  Pair p;
  MakePair("parity", "", &p);
  PromotionSnapshot snap;
  ASSERT_NO_FATAL_FAILURE(PromoteAndExportSnapshot(p, &snap));
  const std::string& snapshot_id = snap.id;

  // Traffic released onto the target after the snapshot.
  ASSERT_TRUE(p.replica->cluster()
                  .Psql("insert into accounts values (100001, 1, 'new', now()); "
                        "update events set f = f + 1 where (payload->>'n')::int < 10")
                  .ok());

  std::vector<ParityProgress> seen;
  std::atomic<bool> cancel{false};
  auto findings = RunDataParity(
      p.src->Conninfo(), p.replica->Conninfo(), snapshot_id,
      [&](const ParityProgress& pr) { seen.push_back(pr); }, &cancel);
  ASSERT_TRUE(findings.ok()) << findings.status().ToString();
  EXPECT_FALSE(AnyBlocking(*findings)) << RenderFindingsTable(*findings);
  const Finding* ok = Find(*findings, "");
  ASSERT_NE(ok, nullptr);
  EXPECT_EQ(ok->severity, Severity::kOk);
  EXPECT_EQ(ok->value["tables_matched"], 3);
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.back().tables_total, 3);
  EXPECT_EQ(seen.back().tables_done, 3);
  EXPECT_EQ(seen.back().current, "");

  // Read in ranges of two pages with pauses: the same verdict and the same
  // checksums as one scan per table (sums add across ranges).
  const ParityOptions ranged{.load_pct = 50, .chunk_pages = 2};
  auto chunked = RunDataParity(p.src->Conninfo(), p.replica->Conninfo(), snapshot_id, nullptr,
                               &cancel, ranged);
  ASSERT_TRUE(chunked.ok()) << chunked.status().ToString();
  EXPECT_FALSE(AnyBlocking(*chunked)) << RenderFindingsTable(*chunked);
  auto whole = RunDataParity(p.src->Conninfo(), p.src->Conninfo(), "", nullptr, nullptr,
                             ParityOptions{.chunk_pages = 1000000});
  ASSERT_TRUE(whole.ok()) << whole.status().ToString();
  EXPECT_FALSE(AnyBlocking(*whole)) << RenderFindingsTable(*whole);

  // Without the snapshot the new writes show: the check does detect differences,
  // by count (accounts) and by contents with equal counts (events).
  auto plain = RunDataParity(p.src->Conninfo(), p.replica->Conninfo(), "", nullptr, nullptr);
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  const Finding* acc = Find(*plain, "public.accounts");
  ASSERT_NE(acc, nullptr) << RenderFindingsTable(*plain);
  EXPECT_EQ(acc->severity, Severity::kBlocking);
  EXPECT_EQ(acc->value["source_rows"], 5000);
  EXPECT_EQ(acc->value["target_rows"], 5001);
  const Finding* ev = Find(*plain, "public.events");
  ASSERT_NE(ev, nullptr) << RenderFindingsTable(*plain);
  EXPECT_EQ(ev->value["source_rows"], ev->value["target_rows"]);
  EXPECT_EQ(Find(*plain, "other.Mixed Case"), nullptr);
  EXPECT_TRUE(AnyBlocking(*plain));
  // A difference is found in any range, also the open one past the size seen.
  auto plain_ranged =
      RunDataParity(p.src->Conninfo(), p.replica->Conninfo(), "", nullptr, nullptr, ranged);
  ASSERT_TRUE(plain_ranged.ok()) << plain_ranged.status().ToString();
  const Finding* acc_r = Find(*plain_ranged, "public.accounts");
  ASSERT_NE(acc_r, nullptr) << RenderFindingsTable(*plain_ranged);
  EXPECT_EQ(acc_r->value["source_rows"], 5000);
  EXPECT_EQ(acc_r->value["target_rows"], 5001);
  const Finding* ev_r = Find(*plain_ranged, "public.events");
  ASSERT_NE(ev_r, nullptr) << RenderFindingsTable(*plain_ranged);
  EXPECT_NE(ev_r->value["source"]["checksum"], ev_r->value["target"]["checksum"]);
}

TEST(DataParity, UnloggedTableIsNamedAsDifferentBeforeAndAfterPromotion) {
  Pair p;
  MakePair("parity-unlogged",
           "; create unlogged table scratch (id int primary key); "
           "insert into scratch select generate_series(1, 300)",
           &p);
  // Pre-promotion quick variant: the standby cannot read the unlogged table.
  auto before = RunDataParity(p.src->Conninfo(), p.replica->Conninfo(), "", nullptr, nullptr,
                              ParityOptions{.time_budget_ms = 60000});
  ASSERT_TRUE(before.ok()) << before.status().ToString();
  const Finding* pre = Find(*before, "public.scratch");
  ASSERT_NE(pre, nullptr) << RenderFindingsTable(*before);
  EXPECT_EQ(pre->severity, Severity::kBlocking);
  EXPECT_NE(pre->message.find("UNLOGGED"), std::string::npos) << pre->message;
  EXPECT_EQ(Find(*before, "public.accounts"), nullptr) << RenderFindingsTable(*before);

  ASSERT_TRUE(p.replica->cluster().Promote().ok());
  auto after = RunDataParity(p.src->Conninfo(), p.replica->Conninfo(), "", nullptr, nullptr);
  ASSERT_TRUE(after.ok()) << after.status().ToString();
  const Finding* f = Find(*after, "public.scratch");
  ASSERT_NE(f, nullptr) << RenderFindingsTable(*after);
  EXPECT_EQ(f->severity, Severity::kBlocking);
  EXPECT_EQ(f->value["source_rows"], 300);
  EXPECT_EQ(f->value["target_rows"], 0);
  int blocking = 0;
  for (const Finding& x : *after) blocking += x.Blocks();
  EXPECT_EQ(blocking, 1) << RenderFindingsTable(*after);
}

// After the promotion snapshot the application drops one table and rewrites
// another on the target (as PostgreSQL's regression suite does when it runs
// across a migration): their contents at promotion are gone, so they are
// named as not compared (a warning), not as differences; the rest match.
TEST(DataParity, TablesDroppedOrRewrittenOnTargetAfterSnapshotAreNotCompared) {
  Pair p;
  MakePair("parity-ddl", "", &p);
  PromotionSnapshot snap;
  ASSERT_NO_FATAL_FAILURE(PromoteAndExportSnapshot(p, &snap));
  ASSERT_TRUE(p.replica->cluster().Psql("drop table events; truncate accounts").ok());

  auto r = RunDataParity(p.src->Conninfo(), p.replica->Conninfo(), snap.id, nullptr, nullptr);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_FALSE(AnyBlocking(*r)) << RenderFindingsTable(*r);
  for (const char* table : {"public.events", "public.accounts"}) {
    const Finding* f = Find(*r, table);
    ASSERT_NE(f, nullptr) << table << "\n" << RenderFindingsTable(*r);
    EXPECT_EQ(f->severity, Severity::kWarning);
    EXPECT_NE(f->message.find("not compared"), std::string::npos) << f->message;
  }
  const Finding* ok = Find(*r, "");
  ASSERT_NE(ok, nullptr) << RenderFindingsTable(*r);
  EXPECT_EQ(ok->value["tables_matched"], 1);
  EXPECT_EQ(ok->value["tables_rewritten"], 2);

  // Without the snapshot nothing excuses them: both differ.
  auto plain = RunDataParity(p.src->Conninfo(), p.replica->Conninfo(), "", nullptr, nullptr);
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  EXPECT_EQ(Find(*plain, "public.accounts")->severity, Severity::kBlocking);
  EXPECT_EQ(Find(*plain, "public.events")->severity, Severity::kBlocking);
}

TEST(DataParity, TableOnOneSideOnlyCancelBudgetAndBadSnapshot) {
  Pair p;
  MakePair("parity-misc", "", &p);
  ASSERT_TRUE(p.replica->cluster().Promote().ok());
  ASSERT_TRUE(p.replica->cluster().Psql("create table only_target (x int)").ok());
  auto r = RunDataParity(p.src->Conninfo(), p.replica->Conninfo(), "", nullptr, nullptr);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const Finding* only = Find(*r, "public.only_target");
  ASSERT_NE(only, nullptr) << RenderFindingsTable(*r);
  EXPECT_EQ(only->value["source"]["exists"], false);

  std::atomic<bool> cancel{true};
  auto cancelled = RunDataParity(p.src->Conninfo(), p.replica->Conninfo(), "", nullptr, &cancel);
  EXPECT_EQ(cancelled.status().code(), Code::kAborted);

  // A budget that runs out after the first table: the rest are reported as skipped.
  auto budget = RunDataParity(
      p.src->Conninfo(), p.replica->Conninfo(), "",
      [](const ParityProgress&) { std::this_thread::sleep_for(std::chrono::milliseconds(20)); },
      nullptr, ParityOptions{.time_budget_ms = 10});
  ASSERT_TRUE(budget.ok()) << budget.status().ToString();
  bool skipped = false;
  for (const Finding& f : *budget) {
    skipped |= f.severity == Severity::kWarning && f.value.contains("tables_skipped") &&
               f.value["tables_skipped"].get<int>() > 0;
  }
  EXPECT_TRUE(skipped) << RenderFindingsTable(*budget);

  auto bad = RunDataParity(p.src->Conninfo(), p.replica->Conninfo(), "00000003-00000002-1", nullptr,
                           nullptr);
  EXPECT_EQ(bad.status().code(), Code::kFailedPrecondition);
  EXPECT_NE(bad.status().message().find("snapshot"), std::string::npos);
}

}  // namespace
}  // namespace pgshift::checks
