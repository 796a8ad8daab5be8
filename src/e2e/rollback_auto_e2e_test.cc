// End-to-end: the post-cutover health window rolls back on its own, with
// real servers (part of the rollback binary, rollback_e2e.h). Ledger
// writers, pgbench and a CDC consumer run through pgshift-proxy (mutual
// TLS, so the proxy forwards and times every transaction in user space);
// pgshiftd records the baseline before the cutover; after the switch an
// anomaly is injected on the target:
//   - latency far over the tolerance: a trigger with pg_sleep on the
//     writers' tables;
//   - the target rejects writes: a trigger refuses the rows of one more
//     writer (the victim), so the error rate through the router leaves the
//     baseline while the other writers and pgbench go on.
// The anomaly must roll the migration back by itself (no request), with the
// reason recorded, losslessly (reverse replication): every acknowledged row,
// the victim's too, on the source and in the consumer's output exactly once,
// and traffic must go on against the source. The victim's rejected writes
// are the injected fault, not counted as failed transactions.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "e2e/rollback_e2e.h"
#include "pg/conn.h"

namespace pgshift {
namespace {

using e2e::kLedgerWriters;
using e2e::kMigrationBoundMs;
using e2e::kPgbenchClients;
using e2e::RollbackE2E;
using e2e::Terminal;
using e2e::Totals;
using json = nlohmann::json;

// Far over the default tolerance (3x the baseline p99, of at least 50 ms).
constexpr const char* kSlowTarget[] = {
    "create function pgshift_test_slow() returns trigger language plpgsql as "
    "$$ begin perform pg_sleep(0.4); return new; end $$",
    "create trigger pgshift_test_slow before insert on pgshift_ledger "
    "for each row execute function pgshift_test_slow()",
    "create trigger pgshift_test_slow before insert on pgbench_history "
    "for each row execute function pgshift_test_slow()"};

// The victim writer, whose rows the target refuses, and the error it gets.
constexpr int kVictimWriter = 9;
constexpr char kRejected[] = "the target rejects this write";
const std::string kRejectingTarget[] = {
    "create function pgshift_test_reject() returns trigger language plpgsql as "
    "$$ begin if new.writer = " +
        std::to_string(kVictimWriter) + " then raise exception '" + kRejected +
        "'; end if; return new; end $$",
    "create trigger pgshift_test_reject before insert on pgshift_ledger "
    "for each row execute function pgshift_test_reject()"};

// Traffic on the source after the rollback, by one more writer.
constexpr int kAfterWriter = 50;
constexpr auto kAfterFor = std::chrono::seconds(2);
constexpr int64_t kAfterMinCommitted = 20;

bool HasEventContaining(const json& events, const std::string& text) {
  for (const auto& e : events)
    if (e.value("message", "").find(text) != std::string::npos) return true;
  return false;
}

class AutoRollbackE2E : public RollbackE2E {
 protected:
  // The load with the consumer (and `extra`, once the consumer's slot
  // exists); pgbench_history published back to the source (a replica
  // identity, as it has no key). A long health window: only the anomaly
  // ends it.
  std::string StartMigration(load::LedgerWriter* extra = nullptr) {
    EXPECT_TRUE(
        sb_->source().Psql("alter table pgbench_history replica identity full", "app").ok());
    Status st = StartLoad(/*cdc=*/true);
    EXPECT_TRUE(st.ok()) << st.ToString();
    if (extra) extra->Start();
    std::this_thread::sleep_for(std::chrono::seconds(1));
    return Create({{"auto_cutover", true},
                   {"auto_finalize", false},
                   {"sustain_seconds", 3},
                   {"verify_seconds", 120},
                   {"poll_ms", 100},
                   {"on_anomaly", "rollback"},
                   {"health_min_samples", 20}});
  }

  // Waits for verify, then injects `sql` on the target.
  Result<json> InVerifyInject(const std::string& id, const std::vector<std::string>& sql) {
    auto in_verify = [](const json& m) { return m["phase"] == "verify" || Terminal(m); };
    PGSHIFT_ASSIGN_OR_RETURN(json m, sb_->WaitFor(id, in_verify, kMigrationBoundMs));
    if (m["phase"] != "verify") return FailedPrecondition("never in verify: " + m.dump(2));
    PGSHIFT_ASSIGN_OR_RETURN(auto target, PgConn::Connect(sb_->TargetConninfo("app", "postgres")));
    for (const auto& s : sql) PGSHIFT_RETURN_IF_ERROR(target->Exec(s));
    return m;
  }

  // Rolled back on its own, or (a failure) waiting in verify with the
  // window over. Counts the scenario, and its rollback when the health
  // window started it for `reason` with nobody asking.
  json ExpectRolledBackByItself(const std::string& id, const std::string& reason) {
    ++Totals().auto_scenarios;
    auto m = sb_->WaitFor(
        id, [](const json& m) { return Terminal(m) || m["state"] == "waiting"; },
        kMigrationBoundMs);
    EXPECT_TRUE(m.ok()) << m.status().ToString();
    if (!m.ok()) return json::object();
    EXPECT_EQ((*m)["phase"], "rolled_back") << (*m)["result"].dump(2);
    const json& result = (*m)["result"];
    const std::string why = result.value("verify_failure", "");
    EXPECT_NE(why.find(reason), std::string::npos) << result.dump(2);
    const json health = result.value("health", json::object());
    EXPECT_EQ(health.value("action", ""), "rollback");
    EXPECT_EQ(health.value("anomaly", ""), why);
    EXPECT_EQ(health.value("matched_baseline", true), false);
    EXPECT_EQ(result.value("rollback_path", ""), "reverse_replication") << result.dump(2);
    auto events = sb_->Api("GET", "/v1/migrations/" + id + "/events");
    EXPECT_TRUE(events.ok());
    const bool by_itself = events.ok() && HasEventContaining((*events)["body"]["events"],
                                                             "rolling back automatically");
    EXPECT_TRUE(by_itself);
    if ((*m)["phase"] == "rolled_back" && by_itself && why.find(reason) != std::string::npos) {
      ++Totals().auto_rolled_back;
    }
    Totals().rows_written_on_target += RowsWrittenOnTarget(result);
    return *m;
  }

  // Traffic goes on against the source, through the same router.
  void ExpectTrafficOnTheSource() {
    load::LedgerWriter after(sb_->AppConninfo(), kAfterWriter);
    after.Start();
    std::this_thread::sleep_for(kAfterFor);
    after.Stop();
    auto st = after.Stats();
    EXPECT_EQ(st.failed, 0) << (st.errors.empty() ? "" : st.errors.front());
    EXPECT_GT(st.committed, kAfterMinCommitted);
    Totals().failed_txns += st.failed + st.uncertain;
    auto check = load::CheckLedger(sb_->SourceConninfo(), kAfterWriter, after.Acknowledged());
    ASSERT_TRUE(check.ok()) << check.status().ToString();
    EXPECT_EQ(check->lost, 0) << "after the rollback the router must send writes to the source";
  }
};

TEST_F(AutoRollbackE2E, LatencyFarOverToleranceRollsBackAutomatically) {
  const std::string id = StartMigration();
  auto in_verify = [](const json& m) { return m["phase"] == "verify" || Terminal(m); };
  auto m = sb_->WaitFor(id, in_verify, kMigrationBoundMs);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ASSERT_EQ((*m)["phase"], "verify") << m->dump(2);
  const json baseline = (*m)["progress"].value("baseline", json::object());
  ASSERT_GT(baseline.value("transactions", 0), 0) << (*m)["progress"].dump(2);
  EXPECT_EQ(baseline.value("router", ""), "proxy");
  EXPECT_TRUE(baseline.contains("p99_ms")) << baseline.dump();
  // Over TLS the proxy times every transaction (the two counters are read a
  // moment apart, so those of the sessions in between may differ).
  EXPECT_NEAR(baseline.value("timed_transactions", 0), baseline.value("transactions", 0),
              kLedgerWriters + kPgbenchClients)
      << baseline.dump();
  auto injected = InVerifyInject(id, {std::begin(kSlowTarget), std::end(kSlowTarget)});
  ASSERT_TRUE(injected.ok()) << injected.status().ToString();

  ExpectRolledBackByItself(id, "p99 latency");
  ExpectTrafficOnTheSource();
  StopAndProveOnSource();
  EXPECT_EQ(pgbench_->Stats().aborted_clients, 0);
}

TEST_F(AutoRollbackE2E, ATargetRejectingWritesRollsBackAutomatically) {
  load::LedgerWriter victim(sb_->AppConninfo(), kVictimWriter);
  const std::string id = StartMigration(&victim);
  auto injected = InVerifyInject(id, {std::begin(kRejectingTarget), std::end(kRejectingTarget)});
  ASSERT_TRUE(injected.ok()) << injected.status().ToString();

  ExpectRolledBackByItself(id, "error rate");
  ExpectTrafficOnTheSource();
  victim.Stop();
  const auto vs = victim.Stats();
  EXPECT_GT(vs.failed, 0) << "the target rejected none of the victim's writes";
  EXPECT_EQ(vs.uncertain, 0);
  for (const auto& e : vs.errors) {
    EXPECT_NE(e.find(kRejected), std::string::npos) << "not the injected rejection: " << e;
  }
  ProveOnSource(victim);
  StopAndProveOnSource();
}

}  // namespace
}  // namespace pgshift
