// End-to-end rollback after writes reached the target (DESIGN.md §2): a real
// pgshiftd cuts the sandbox over with reverse replication while ledger
// writers, pgbench and a CDC consumer (pg_recvlogical) run through
// pgshift-proxy; writes go on on the target; the rollback holds traffic,
// lets the fenced source apply them, syncs sequences (ascending and
// descending) and moves the CDC slot, and routes back. Every acknowledged
// ledger row, from before and after the cutover, must be on the source
// exactly once, no transaction may fail, the consumer must see every row
// exactly once, and sequences must be ahead of every used value. Also: a
// table without a primary key (reverse replication off: the rollback asks
// for confirmation), a rollback after finalize (refused), and kill -9 of
// pgshiftd inside the rollback (resumed; a second rollback is harmless).
// The rollbacks the health window starts on its own are in
// rollback_auto_e2e_test.cc, in the same binary.
//
// The binary prints, last, the totals of its tests (`make e2e-rollback`,
// rollback_e2e.h): E2E rollback {"rows_written_on_target":N,...}
#include "e2e/rollback_e2e.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <thread>

#include "common/clock.h"
#include "pg/conn.h"

namespace pgshift {
namespace {

using e2e::Count;
using e2e::kApplyTimeoutMs;
using e2e::kLedgerCount;
using e2e::kMigrationBoundMs;
using e2e::kRollbackBoundMs;
using e2e::kWritesOnSource;
using e2e::RollbackE2E;
using e2e::RolledBackOrFailed;
using e2e::Terminal;
using e2e::Totals;
using json = nlohmann::json;

constexpr int64_t kCrashPollMs = 10;
constexpr auto kWritesOnTarget = std::chrono::seconds(3);
// A descending sequence: used once on the source, more on the target.
constexpr char kDescendingSeq[] = "pgshift_test_desc";
constexpr int kDescendingUsedOnTarget = 5;

const ::testing::Environment* const kPrintTotals = e2e::PrintAtExit("rollback", e2e::TotalsLine);

// The product's promise: nothing written on the target is lost by rolling back.
TEST_F(RollbackE2E, WritesOnTheTargetReachTheSourceExactlyOnce) {
  // pgbench_history has no primary key: with a replica identity the target
  // can publish its rows.
  ASSERT_TRUE(sb_->source().Psql("alter table pgbench_history replica identity full", "app").ok());
  ASSERT_TRUE(sb_->source()
                  .Psql(std::string("create sequence ") + kDescendingSeq +
                            " increment by -1; select nextval('" + kDescendingSeq + "')",
                        "app")
                  .ok());
  Status st = StartLoad(/*cdc=*/true);
  ASSERT_TRUE(st.ok()) << st.ToString();
  const std::string id = Create(Options());
  auto m = WaitVerified(id);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ASSERT_EQ((*m)["phase"], "verify") << m->dump(2);
  ASSERT_EQ((*m)["state"], "waiting")
      << "parity passed, the source read at the promotion point: " << m->dump(2);
  EXPECT_EQ((*m)["result"]["reverse_replication_on"], true) << (*m)["result"].dump();
  EXPECT_EQ((*m)["rollback_path"], "reverse_replication");

  // The fence still refuses every other writer, while the subscription
  // writes what the target commits.
  auto intruder = PgConn::Connect(sb_->SourceConninfo("app", "app"));
  EXPECT_FALSE(intruder.ok()) << "the fenced source let role app in";
  std::this_thread::sleep_for(kWritesOnTarget);
  auto used = Count(sb_->TargetConninfo("app", "postgres"),
                    std::string("select min(nextval('") + kDescendingSeq +
                        "')) as n from generate_series(1, " +
                        std::to_string(kDescendingUsedOnTarget) + ")");
  ASSERT_TRUE(used.ok()) << used.status().ToString();
  auto on_target = Count(sb_->TargetConninfo("app", "postgres"), kLedgerCount);
  ASSERT_TRUE(on_target.ok()) << on_target.status().ToString();
  st = e2e::WaitAtLeast(Admin(), kLedgerCount, *on_target, kApplyTimeoutMs);
  EXPECT_TRUE(st.ok()) << "the source must apply the target's writes: " << st.ToString();

  auto plan = Post(id, "rollback", {{"dry_run", true}});
  ASSERT_TRUE(plan.ok());
  ASSERT_EQ((*plan)["status"], 200) << plan->dump();
  EXPECT_EQ((*plan)["body"]["rollback"]["path"], "reverse_replication") << plan->dump(2);
  EXPECT_EQ((*plan)["body"]["rollback"]["needs_confirmation"], false);

  auto asked = Post(id, "rollback", json::object());
  ASSERT_TRUE(asked.ok());
  ASSERT_EQ((*asked)["status"], 202) << asked->dump();
  m = sb_->WaitFor(id, RolledBackOrFailed, kRollbackBoundMs);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ASSERT_EQ((*m)["phase"], "rolled_back") << m->dump(2);
  const json& r = (*m)["result"];
  EXPECT_EQ(r["rollback_path"], "reverse_replication");
  std::this_thread::sleep_for(kWritesOnSource);  // writes go on, on the source
  StopAndProveOnSource();
  const int64_t written = RowsWrittenOnTarget(r);
  EXPECT_GT(written, 0);
  Totals().rows_written_on_target += written;
  Totals().rollback_hold_ms = r.value("rollback_hold_ms", int64_t{-1});
  EXPECT_GE(Totals().rollback_hold_ms, 0) << r.dump();
  EXPECT_TRUE(sb_->source().Running());
  // The descending sequence on the source is at or below every value the
  // target handed out: its next value is new.
  auto desc = Count(Admin(), std::string("select last_value as n from ") + kDescendingSeq);
  ASSERT_TRUE(desc.ok()) << desc.status().ToString();
  EXPECT_LE(*desc, *used) << "the descending sequence on the source is behind the target's";
  auto subs = Count(Admin(), "select count(*) as n from pg_subscription");
  ASSERT_TRUE(subs.ok());
  EXPECT_EQ(*subs, 0) << "the reverse subscription is gone once the source serves again";
}

// A table without a primary key: named at preflight, reverse replication
// off, a rollback after writes asks for confirmation; a rollback after
// finalize is refused.
TEST_F(RollbackE2E, ATableWithoutAKeyAsksForConfirmationAndFinalizeEndsRollback) {
  StartWriters();
  const std::string id = Create(Options());
  auto m = WaitVerified(id);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ASSERT_EQ((*m)["phase"], "verify") << m->dump(2);
  bool named = false;
  for (const auto& f : (*m)["findings"]) {
    named = named || (f["id"] == "no_pk_tables" && f["subject"] == "app.public.pgbench_history");
  }
  EXPECT_TRUE(named) << "preflight names the table: " << (*m)["findings"].dump(1);
  EXPECT_EQ((*m)["result"]["reverse_replication_on"], false);
  EXPECT_EQ((*m)["rollback_path"], "discard_target_writes");
  auto refused = Post(id, "rollback", json::object());
  ASSERT_TRUE(refused.ok());
  EXPECT_EQ((*refused)["status"], 409) << refused->dump();
  const std::string why = (*refused)["body"].dump();
  EXPECT_NE(why.find("pgbench_history"), std::string::npos) << why;
  EXPECT_NE(why.find("discard_target_writes"), std::string::npos) << why;

  auto fin = Post(id, "finalize", json::object());
  ASSERT_TRUE(fin.ok());
  ASSERT_EQ((*fin)["status"], 202) << fin->dump();
  m = sb_->WaitFor(id, Terminal, kMigrationBoundMs);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ASSERT_EQ((*m)["phase"], "finalized") << m->dump(2);
  auto late = Post(id, "rollback", {{"discard_target_writes", true}});
  ASSERT_TRUE(late.ok());
  EXPECT_EQ((*late)["status"], 409) << late->dump();
  EXPECT_NE((*late)["body"].dump().find("source is retired"), std::string::npos) << late->dump();
  StopWriters();
  ExpectWritersClean(sb_->TargetConninfo());
}

// kill -9 of pgshiftd inside the rollback's hold, after the source applied
// the target's writes: the restarted pgshiftd finishes it, losing nothing;
// asking again is refused and changes nothing.
TEST_F(RollbackE2E, KilledInsideTheRollbackResumesAndTwiceIsHarmless) {
  ASSERT_TRUE(sb_->source().Psql("alter table pgbench_history replica identity full", "app").ok());
  StartWriters();
  const std::string id = Create(Options());
  auto m = WaitVerified(id);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ASSERT_EQ((*m)["phase"], "verify") << m->dump(2);
  Status st = RestartPgshiftd("crash:rollback_applied");
  ASSERT_TRUE(st.ok()) << st.ToString();
  std::this_thread::sleep_for(kWritesOnSource);
  auto asked = Post(id, "rollback", json::object());
  ASSERT_TRUE(asked.ok());
  ASSERT_EQ((*asked)["status"], 202) << asked->dump();
  const int64_t deadline = MonotonicMs() + kRollbackBoundMs;
  while (sb_->PgshiftdRunning()) {
    ASSERT_LT(MonotonicMs(), deadline) << "pgshiftd never reached rollback_applied";
    std::this_thread::sleep_for(std::chrono::milliseconds(kCrashPollMs));
  }
  st = sb_->StartPgshiftd();
  ASSERT_TRUE(st.ok()) << st.ToString();
  m = sb_->WaitFor(id, RolledBackOrFailed, kRollbackBoundMs);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ASSERT_EQ((*m)["phase"], "rolled_back") << m->dump(2);
  EXPECT_EQ((*m)["result"]["rollback_path"], "reverse_replication");
  auto again = Post(id, "rollback", json::object());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)["status"], 409) << again->dump();
  std::this_thread::sleep_for(kWritesOnSource);
  StopWriters();
  ExpectWritersClean(sb_->SourceConninfo());
  for (auto& w : writers_) {
    auto check = load::CheckLedger(sb_->SourceConninfo(), w->writer_id(), w->Acknowledged());
    if (!check.ok()) continue;
    Totals().lost += check->lost;
    Totals().duplicated += check->duplicated;
    Totals().failed_txns += w->Stats().failed + w->Stats().uncertain;
  }
}

}  // namespace
}  // namespace pgshift
