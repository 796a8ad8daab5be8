// End-to-end: the post-cutover health window with real servers. Ledger
// writers and pgbench run through pgshift-proxy (mutual TLS, so the proxy
// forwards and times every transaction in user space); pgshiftd records the
// baseline before the cutover; after the switch the target is made slow for
// the writers' tables (a trigger with pg_sleep), far over the latency
// tolerance; the anomaly must roll the migration back on its own, with the
// reason recorded, and traffic must go on against the source. Holds for the
// rollback path of today (target writes discarded) and for the lossless one.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "e2e/e2e_fixture.h"
#include "load/ledger.h"
#include "load/pgbench_load.h"
#include "pg/conn.h"

namespace pgshift {
namespace {

using e2e::kLedgerWriters;
using e2e::kMigrationBoundMs;
using e2e::Terminal;
using json = nlohmann::json;

constexpr int kPgbenchClients = 4;

// Far over the default tolerance (3x the baseline p99, of at least 50 ms).
constexpr const char* kSlowTarget[] = {
    "create function pgshift_test_slow() returns trigger language plpgsql as "
    "$$ begin perform pg_sleep(0.4); return new; end $$",
    "create trigger pgshift_test_slow before insert on pgshift_ledger "
    "for each row execute function pgshift_test_slow()",
    "create trigger pgshift_test_slow before insert on pgbench_history "
    "for each row execute function pgshift_test_slow()"};

class HealthE2E : public e2e::SandboxTest {
 protected:
  void TearDown() override {
    pgbench_.reset();
    SandboxTest::TearDown();
  }
  std::unique_ptr<load::PgbenchLoad> pgbench_;
};

bool HasEventContaining(const json& events, const std::string& text) {
  for (const auto& e : events)
    if (e.value("message", "").find(text) != std::string::npos) return true;
  return false;
}

TEST_F(HealthE2E, LatencyFarOverToleranceRollsBackAutomatically) {
  StartWriters();
  pgbench_ = std::make_unique<load::PgbenchLoad>(
      load::PgbenchOptions{.conninfo = sb_->AppConninfo(),
                           .clients = kPgbenchClients,
                           .threads = 2,
                           .chunk_seconds = 3,
                           .log_dir = sb_->dir() + "/pgbench-logs"});
  pgbench_->Start();
  std::this_thread::sleep_for(std::chrono::seconds(1));
  const std::string id = Create({{"auto_cutover", true},
                                 {"auto_finalize", false},
                                 {"sustain_seconds", 3},
                                 {"verify_seconds", 120},
                                 {"poll_ms", 100},
                                 {"on_anomaly", "rollback"},
                                 {"health_min_samples", 20}});
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

  auto target = PgConn::Connect(sb_->TargetConninfo("app", "postgres"));
  ASSERT_TRUE(target.ok()) << target.status().ToString();
  for (const char* sql : kSlowTarget) {
    Status slow = (*target)->Exec(sql);
    ASSERT_TRUE(slow.ok()) << slow.ToString();
  }

  // Rolled back on its own, or (a failure) waiting in verify with the window over.
  m = sb_->WaitFor(
      id, [](const json& m) { return Terminal(m) || m["state"] == "waiting"; }, kMigrationBoundMs);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ((*m)["phase"], "rolled_back") << (*m)["result"].dump(2);
  const json& result = (*m)["result"];
  const std::string reason = result.value("verify_failure", "");
  EXPECT_NE(reason.find("p99 latency"), std::string::npos) << result.dump(2);
  const json health = result.value("health", json::object());
  EXPECT_EQ(health.value("action", ""), "rollback");
  EXPECT_EQ(health.value("anomaly", ""), reason);
  EXPECT_EQ(health.value("matched_baseline", true), false);
  auto events = sb_->Api("GET", "/v1/migrations/" + id + "/events");
  ASSERT_TRUE(events.ok());
  EXPECT_TRUE(HasEventContaining((*events)["body"]["events"], "rolling back automatically"));

  // Traffic goes on against the source, through the same router.
  load::LedgerWriter after(sb_->AppConninfo(), 50);
  after.Start();
  std::this_thread::sleep_for(std::chrono::seconds(2));
  after.Stop();
  StopWriters();
  pgbench_->Stop();
  auto st = after.Stats();
  EXPECT_EQ(st.failed, 0) << (st.errors.empty() ? "" : st.errors.front());
  EXPECT_GT(st.committed, 20);
  auto check = load::CheckLedger(sb_->SourceConninfo(), 50, after.Acknowledged());
  ASSERT_TRUE(check.ok()) << check.status().ToString();
  EXPECT_EQ(check->lost, 0) << "after the rollback the router must send writes to the source";
  for (auto& w : writers_) {
    auto ws = w->Stats();
    EXPECT_EQ(ws.failed, 0) << (ws.errors.empty() ? "" : ws.errors.front());
  }
  EXPECT_EQ(pgbench_->Stats().aborted_clients, 0);
}

}  // namespace
}  // namespace pgshift
