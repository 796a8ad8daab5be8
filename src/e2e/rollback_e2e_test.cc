// End-to-end rollback after writes reached the target (DESIGN.md §2): a real
// pgshiftd cuts the sandbox over with reverse replication while ledger
// writers, pgbench and a CDC consumer (pg_recvlogical) run through
// pgshift-proxy; writes go on on the target; the rollback holds traffic,
// lets the fenced source apply them, syncs sequences and moves the CDC slot,
// and routes back. Every acknowledged ledger row, from before and after the
// cutover, must be on the source exactly once, no transaction may fail, the
// consumer must see every row exactly once, and sequences must be ahead of
// every used value. Also: a table without a primary key (reverse replication
// off: the rollback asks for confirmation), a rollback after finalize
// (refused), and kill -9 of pgshiftd inside the rollback (resumed; a second
// rollback is harmless).
//
// The binary prints, last, the totals of its tests (`make e2e-rollback`):
//   E2E rollback {"rows_written_on_target":N,"lost":N,"duplicated":N,
//                 "failed_txns":N,"cdc_lost":N,"cdc_duplicated":N,
//                 "auto_rollback_triggered":B,"rollback_hold_ms":X}
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>

#include <chrono>
#include <iostream>
#include <thread>

#include "common/clock.h"
#include "e2e/e2e_fixture.h"
#include "load/cdc_consumer.h"
#include "load/ledger.h"
#include "load/pgbench_load.h"
#include "pg/conn.h"

namespace pgshift {
namespace {

using e2e::kMigrationBoundMs;
using e2e::Terminal;
using json = nlohmann::json;

constexpr char kFaultsEnv[] = "PGSHIFT_FAULTS";
constexpr char kSlot[] = "ledger_cdc";
constexpr int64_t kDeliverTimeoutMs = 60000;
constexpr int64_t kApplyTimeoutMs = 30000;
constexpr int64_t kRollbackBoundMs = 60000;
constexpr int64_t kCrashPollMs = 10;
constexpr auto kWritesOnTarget = std::chrono::seconds(3);
constexpr auto kWritesOnSource = std::chrono::seconds(1);
constexpr int kPgbenchClients = 2;
constexpr int kPgbenchRate = 50;  // tps: load, not a benchmark

struct RollbackTotals {
  int64_t rows_written_on_target = 0;
  int64_t lost = 0;
  int64_t duplicated = 0;
  int64_t failed_txns = 0;
  int64_t cdc_lost = 0;
  int64_t cdc_duplicated = 0;
  bool auto_rollback_triggered = false;  // the automatic trigger is not part of this test yet
  int64_t rollback_hold_ms = 0;          // the lossless rollback's, without a crash
};

RollbackTotals& Totals() {
  static RollbackTotals totals;
  return totals;
}

class PrintTotals : public ::testing::Environment {
 public:
  void TearDown() override {
    const RollbackTotals& t = Totals();
    nlohmann::ordered_json line;
    line["rows_written_on_target"] = t.rows_written_on_target;
    line["lost"] = t.lost;
    line["duplicated"] = t.duplicated;
    line["failed_txns"] = t.failed_txns;
    line["cdc_lost"] = t.cdc_lost;
    line["cdc_duplicated"] = t.cdc_duplicated;
    line["auto_rollback_triggered"] = t.auto_rollback_triggered;
    line["rollback_hold_ms"] = t.rollback_hold_ms;
    std::cout << "E2E rollback " << line.dump() << std::endl;
  }
};
const ::testing::Environment* const kPrintTotals =
    ::testing::AddGlobalTestEnvironment(new PrintTotals);

Result<int64_t> Count(const std::string& conninfo, const std::string& sql) {
  PGSHIFT_ASSIGN_OR_RETURN(auto conn, PgConn::Connect(conninfo));
  PGSHIFT_ASSIGN_OR_RETURN(Rows rows, conn->Query(sql));
  if (rows.empty()) return NotFound("no row from: " + sql);
  return rows.Int(0, "n");
}

Status WaitAtLeast(const std::string& conninfo, const std::string& sql, int64_t want,
                   int64_t timeout_ms) {
  const int64_t deadline = MonotonicMs() + timeout_ms;
  std::string last;
  while (true) {
    auto n = Count(conninfo, sql);
    if (n.ok() && *n >= want) return Status::OK();
    last = n.ok() ? std::to_string(*n) : n.status().ToString();
    if (MonotonicMs() > deadline) {
      return Timeout("wanted at least " + std::to_string(want) + " from `" + sql + "`, last " +
                     last);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

constexpr char kLedgerCount[] = "select count(*) as n from pgshift_ledger";

// The end of a requested rollback: done, or stopped for an operator.
bool RolledBackOrFailed(const json& m) {
  return m["phase"] == "rolled_back" || m["phase"] == "finalized" || m["state"] == "failed";
}

class RollbackE2E : public e2e::SandboxTest {
 protected:
  void TearDown() override {
    if (HasFailure() && consumer_) {
      std::cerr << "---- pg_recvlogical ----\n";
      for (const auto& line : consumer_->Log().last_lines) std::cerr << line << "\n";
    }
    if (pgbench_) pgbench_->Stop();
    pgbench_.reset();
    consumer_.reset();
    SandboxTest::TearDown();
  }

  std::string Admin(const std::string& db = "app") const {
    return sb_->SourceConninfo(db, "postgres");
  }

  // Load through the router: the ledger writers, pgbench and the consumer.
  Status StartLoad(bool cdc) {
    if (cdc) {
      PGSHIFT_RETURN_IF_ERROR(sb_->CreateCdcSlot(kSlot, load::CdcPlugin::kTestDecoding));
      consumer_ = sb_->CdcConsumerFor(kSlot, load::CdcPlugin::kTestDecoding);
      PGSHIFT_RETURN_IF_ERROR(consumer_->Start());
    }
    StartWriters();
    pgbench_ = std::make_unique<load::PgbenchLoad>(
        load::PgbenchOptions{.conninfo = sb_->AppConninfo(),
                             .clients = kPgbenchClients,
                             .threads = 1,
                             .rate = kPgbenchRate,
                             .log_dir = sb_->dir() + "/pgbench-logs"});
    pgbench_->Start();
    return Status::OK();
  }

  json Options() const {
    return {{"auto_cutover", true},
            {"auto_finalize", false},
            {"sustain_seconds", 1},
            {"verify_seconds", 1},
            {"poll_ms", 100}};
  }

  // Waits until the migration is verified and waits for finalize (or rolled
  // back, or stuck).
  Result<json> WaitVerified(const std::string& id) {
    return sb_->WaitFor(
        id,
        [](const json& m) {
          return (m["phase"] == "verify" && m["state"] == "waiting") || Terminal(m);
        },
        kMigrationBoundMs);
  }

  Result<json> Post(const std::string& id, const std::string& action, const json& body) {
    return sb_->Api("POST", "/v1/migrations/" + id + "/" + action, body.dump());
  }

  // Stops the load and adds what it measured to Totals(): every
  // acknowledged ledger row on the source exactly once, no failure, and the
  // consumer's output holding every row exactly once.
  void StopAndProveOnSource() {
    StopWriters();
    if (pgbench_) pgbench_->Stop();
    ExpectWritersClean(sb_->SourceConninfo());
    for (auto& w : writers_) {
      const auto st = w->Stats();
      Totals().failed_txns += st.failed + st.uncertain;
      auto check = load::CheckLedger(sb_->SourceConninfo(), w->writer_id(), w->Acknowledged());
      if (check.ok()) {
        Totals().lost += check->lost;
        Totals().duplicated += check->duplicated;
      }
      if (!consumer_) continue;
      const auto acked = w->Acknowledged();
      Status delivered = consumer_->WaitDelivered(w->writer_id(), acked, kDeliverTimeoutMs);
      EXPECT_TRUE(delivered.ok()) << delivered.ToString();
      auto got = consumer_->Changes();
      ASSERT_TRUE(got.ok()) << got.status().ToString();
      const load::CdcCheck c = load::CheckCdc(*got, w->writer_id(), acked);
      EXPECT_EQ(c.lost, 0);
      EXPECT_EQ(c.duplicated, 0) << c.replayed << " of them replayed";
      Totals().cdc_lost += c.lost;
      Totals().cdc_duplicated += c.duplicated;
    }
    if (pgbench_) {
      const auto pb = pgbench_->Stats();
      EXPECT_EQ(pb.failed, 0) << (pb.errors.empty() ? "" : pb.errors.front());
      EXPECT_GT(pb.transactions, 0);
      Totals().failed_txns += pb.failed;
    }
    // Sequences: ahead of every value the target used, so new rows on the
    // source never collide.
    auto ahead = Count(Admin(),
                       "select ((select last_value from pgshift_ledger_id_seq) >= "
                       "(select max(id) from pgshift_ledger))::int as n");
    ASSERT_TRUE(ahead.ok()) << ahead.status().ToString();
    EXPECT_EQ(*ahead, 1) << "the ledger's sequence on the source is behind its rows";
  }

  // Rows the target took between the switch and the rollback's hold.
  int64_t RowsWrittenOnTarget(const json& result) {
    auto n = Count(Admin(),
                   "select count(*) as n from pgshift_ledger where at >= "
                   "to_timestamp(" +
                       std::to_string(result.value("switched_at_ms", int64_t{0})) +
                       " / 1000.0) and at < to_timestamp(" +
                       std::to_string(result.value("rollback_hold_started_ms", int64_t{0})) +
                       " / 1000.0)");
    EXPECT_TRUE(n.ok()) << n.status().ToString();
    return n.ok() ? *n : 0;
  }

  Status RestartPgshiftd(const std::string& faults) {
    PGSHIFT_RETURN_IF_ERROR(sb_->KillPgshiftd(SIGTERM));
    if (!faults.empty()) setenv(kFaultsEnv, faults.c_str(), 1);
    Status st = sb_->StartPgshiftd();
    unsetenv(kFaultsEnv);
    return st;
  }

  std::unique_ptr<load::CdcConsumer> consumer_;
  std::unique_ptr<load::PgbenchLoad> pgbench_;
};

// The product's promise: nothing written on the target is lost by rolling back.
TEST_F(RollbackE2E, WritesOnTheTargetReachTheSourceExactlyOnce) {
  // pgbench_history has no primary key: with a replica identity the target
  // can publish its rows.
  ASSERT_TRUE(sb_->source().Psql("alter table pgbench_history replica identity full", "app").ok());
  Status st = StartLoad(/*cdc=*/true);
  ASSERT_TRUE(st.ok()) << st.ToString();
  const std::string id = Create(Options());
  auto m = WaitVerified(id);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ASSERT_EQ((*m)["phase"], "verify") << m->dump(2);
  ASSERT_EQ((*m)["state"], "waiting") << "parity passed, the source read at the promotion point: "
                                      << m->dump(2);
  EXPECT_EQ((*m)["result"]["reverse_replication_on"], true) << (*m)["result"].dump();
  EXPECT_EQ((*m)["rollback_path"], "reverse_replication");

  // The fence still refuses every other writer, while the subscription
  // writes what the target commits.
  auto intruder = PgConn::Connect(sb_->SourceConninfo("app", "app"));
  EXPECT_FALSE(intruder.ok()) << "the fenced source let role app in";
  std::this_thread::sleep_for(kWritesOnTarget);
  auto on_target = Count(sb_->TargetConninfo("app", "postgres"), kLedgerCount);
  ASSERT_TRUE(on_target.ok()) << on_target.status().ToString();
  st = WaitAtLeast(Admin(), kLedgerCount, *on_target, kApplyTimeoutMs);
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
