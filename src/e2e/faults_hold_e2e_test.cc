// Faults around a held route (issue 17): pgshift-proxy's hold lease.
//
//   pgshiftd killed inside the hold, before the fence: the proxy releases
//     the hold when its lease runs out and clients are served by the
//     (authoritative, unfenced) source again; restarted, pgshiftd takes a
//     new hold and the migration finalizes.
//   pgshiftd killed inside the hold, after the fence: past the lease the
//     held clients get the fence's error instead of waiting; restarted,
//     pgshiftd finds its hold lapsed, aborts the attempt (unfences the
//     source) and the retried cutover finalizes.
//   pgshift-proxy killed and restarted while the route is held: it comes
//     back unheld on the source (its saved route), clients get an error
//     from the fenced source; pgshiftd finds the proxy does not know its
//     hold, aborts and retries; the migration finalizes.
//   hold deadline: a transaction through the proxy that never finishes keeps
//     the hold from draining; the cutover aborts and traffic is back on the
//     unfenced source within the deadline; once the transaction ends, the
//     next cutover finalizes.
// Every scenario: ledger writers and pgbench through the proxy all along,
// every acknowledged row on the new primary exactly once and (but across
// the proxy's restart) in a CDC consumer's stream exactly once. The stalls
// are measured and reported (faults_report.h); their bounds are safety nets.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "common/clock.h"
#include "e2e/faults_fixture.h"
#include "e2e/faults_report.h"
#include "pg/conn.h"

namespace pgshift::e2e {
namespace {

// Short, so that each scenario stays well under a minute.
constexpr int64_t kLeaseMs = 3000;
constexpr int64_t kHoldTimeoutMs = 1500;
// How much later than the lease (or the hold deadline) clients may be
// answered on a loaded machine: a safety net, not a performance claim.
constexpr int64_t kSlackMs = 8000;
constexpr int64_t kDeathBoundMs = 120000;

class FaultsHoldE2E : public FaultsTest {
 protected:
  // Options() with the short hold lease and deadline.
  static json HoldOptions(bool auto_cutover) {
    return Options(auto_cutover,
                   {{"hold_lease_ms", kLeaseMs}, {"hold_timeout_ms", kHoldTimeoutMs}});
  }

  bool RouteHeld() const {
    json r = ProxyGet("/routes/app");
    return r.is_object() && r.value("held", false);
  }

  int64_t MaxGapMs() const {
    int64_t gap = 0;
    for (const auto& w : writers_) gap = std::max(gap, w->Stats().max_gap_us / 1000);
    return gap;
  }

  // The load runs (StartFullLoad, with `cdc`); pgshiftd is restarted armed
  // with `fault` and the migration created; returns its id once pgshiftd
  // died there (the route held).
  std::string CreateAndDieAt(const std::string& fault, bool cdc = true) {
    StartFullLoad(cdc);
    std::this_thread::sleep_for(std::chrono::seconds(1));
    EXPECT_TRUE(sb_->KillPgshiftd(SIGTERM).ok());
    StartPgshiftd(*sb_, "crash:" + fault);
    const std::string id = Create(HoldOptions(true));
    EXPECT_FALSE(id.empty());
    EXPECT_TRUE(WaitForPgshiftdToDie(*sb_, kDeathBoundMs)) << "pgshiftd did not die at " << fault;
    return id;
  }

  // Restarts pgshiftd without faults and waits for the migration to end.
  json RestartAndFinish(const std::string& id) {
    StartPgshiftd(*sb_, "");
    auto m = sb_->WaitFor(id, Terminal, kMigrationBoundMs);
    EXPECT_TRUE(m.ok()) << m.status().ToString();
    return m.ok() ? *m : json::object();
  }

  bool HasEvent(const std::string& id, const std::string& needle) const {
    return !EventSaying(id, needle).empty();
  }

  void Report(const std::string& scenario, const std::string& measured) {
    FaultsTotals& t = TheFaultsTotals();
    t.AddScenario(scenario, !HasFailure());
    AddLosses(t);
    char took[64];
    std::snprintf(took, sizeof took, "; %.0f s", Seconds());
    t.lines.push_back(
        "  " + measured + took +
        (first_error_.empty() ? "" : "; clients saw: " + first_error_.substr(0, 120)));
    t.Write();
  }
};

TEST_F(FaultsHoldE2E, PgshiftdKilledInTheHoldBeforeTheFenceClientsServedAfterTheLease) {
  const std::string id = CreateAndDieAt("quiesce_held");
  ASSERT_FALSE(HasFatalFailure());
  // The proxy releases on its own once the lease runs out; the source, not
  // fenced yet, serves the clients again.
  const int64_t released = MsUntil([&] { return !RouteHeld(); }, kLeaseMs + kSlackMs);
  EXPECT_GE(released, 0) << "the hold outlived its lease";
  const int64_t served = MsUntilMore([&] { return Committed(); }, kSlackMs);
  EXPECT_GE(served, 0) << "clients not served after the release";
  const int64_t stall = MaxGapMs();
  EXPECT_LT(stall, kLeaseMs + kSlackMs);
  json route = ProxyGet("/routes/app");
  ASSERT_TRUE(route.is_object());
  ASSERT_FALSE(route["ended_holds"].empty());
  EXPECT_EQ(route["ended_holds"].back()["how"], "lapsed");
  EXPECT_EQ(route["stats"]["hold_lapses"], 1);

  json m = RestartAndFinish(id);
  EXPECT_EQ(m["phase"], "finalized") << m.dump(2);
  StopWritersAndCheck(sb_->TargetConninfo());
  Report("pgshiftd kill -9 in the hold before the fence -> lease lapsed, finalized",
         "hold released " + std::to_string(released) + " ms after pgshiftd died (lease " +
             std::to_string(kLeaseMs) + " ms), clients served again " +
             std::to_string(released + served) + " ms after; longest client stall " +
             std::to_string(stall) + " ms");
}

TEST_F(FaultsHoldE2E, PgshiftdKilledInTheHoldAfterTheFenceAbortsThenRetriesAndFinishes) {
  const std::string id = CreateAndDieAt("before_drain");
  ASSERT_FALSE(HasFatalFailure());
  const int64_t released = MsUntil([&] { return !RouteHeld(); }, kLeaseMs + kSlackMs);
  EXPECT_GE(released, 0) << "the hold outlived its lease";
  // The fenced source refuses the sessions' new logins: an error, not a wait.
  const int64_t answered = MsUntilMore([&] { return Refused(); }, kSlackMs);
  EXPECT_GE(answered, 0) << "held clients got no answer after the release";

  json m = RestartAndFinish(id);
  EXPECT_EQ(m["phase"], "finalized") << m.dump(2);
  EXPECT_TRUE(HasEvent(id, "no longer this cutover's")) << "the lapse was noticed";
  EXPECT_TRUE(HasEvent(id, "cutover aborted, traffic released to the source"));
  EXPECT_EQ(m["result"]["cutover_attempts"], 2);
  StopWritersAndCheck(sb_->TargetConninfo(), {.allow_errors = true});
  Report(
      "pgshiftd kill -9 in the hold after the fence -> lease lapsed, aborted, retried, "
      "finalized",
      "hold released " + std::to_string(released) + " ms after pgshiftd died (lease " +
          std::to_string(kLeaseMs) + " ms), held clients answered (fence error) " +
          std::to_string(released + answered) + " ms after");
}

// No CDC consumer here: its stream through the killed proxy is cut, and
// pg_recvlogical then gets again what it had not confirmed yet (at least
// once, by its own contract: load/cdc_consumer.h), whatever pgshift does.
TEST_F(FaultsHoldE2E, ProxyRestartedWhileHeldComesBackOnTheSourceAndTheMigrationRecovers) {
  const std::string id = CreateAndDieAt("before_drain", /*cdc=*/false);
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_TRUE(RouteHeld());
  ASSERT_TRUE(sb_->KillProxy(SIGKILL).ok());
  ASSERT_TRUE(sb_->RestartProxy().ok());
  json route = ProxyGet("/routes/app");
  ASSERT_TRUE(route.is_object());
  EXPECT_FALSE(route["held"].get<bool>()) << "a hold does not survive the proxy";
  EXPECT_EQ(route["upstream"]["port"], sb_->source().spec().port) << "never switched";
  const int64_t answered = MsUntilMore([&] { return Refused(); }, kSlackMs);
  EXPECT_GE(answered, 0) << "clients got no answer from the restarted proxy";

  json m = RestartAndFinish(id);
  EXPECT_EQ(m["phase"], "finalized") << m.dump(2);
  EXPECT_TRUE(HasEvent(id, "does not know it")) << "the proxy's restart was noticed";
  EXPECT_EQ(m["result"]["cutover_attempts"], 2);
  StopWritersAndCheck(sb_->TargetConninfo(), {.allow_errors = true});
  Report("pgshift-proxy kill -9 + restart while held -> aborted, retried, finalized",
         "after the restart the route was unheld on the source; clients answered " +
             std::to_string(answered) + " ms later");
}

TEST_F(FaultsHoldE2E, HoldDeadlineAbortsTheCutoverAndALaterOneFinishes) {
  StartFullLoad();
  const std::string id = CreateInReady(HoldOptions(false));
  ASSERT_FALSE(id.empty());
  // A transaction through the proxy that does not finish.
  auto open = PgConn::Connect(sb_->AppConninfo());
  ASSERT_TRUE(open.ok()) << open.status().ToString();
  ASSERT_TRUE((*open)->Exec("begin").ok());
  ASSERT_TRUE((*open)->Query("select txid_current()").ok());

  ASSERT_TRUE(PostAction(id, "cutover"));
  auto aborted = sb_->WaitFor(
      id,
      [](const json& m) {
        const bool error =
            m.contains("error") && m["error"].is_string() && !m["error"].get<std::string>().empty();
        return (m["phase"] == "ready" && m["state"] == "waiting" && error) || Terminal(m);
      },
      kMigrationBoundMs);
  ASSERT_TRUE(aborted.ok()) << aborted.status().ToString();
  const std::string error = (*aborted)["error"].get<std::string>();
  EXPECT_NE(error.find("still in a transaction"), std::string::npos) << error;
  EXPECT_FALSE(RouteHeld());
  // Traffic is back on the source, which was never fenced.
  EXPECT_GE(MsUntilMore([&] { return Committed(); }, kSlackMs), 0);
  EXPECT_TRUE(PgConn::Connect(sb_->SourceConninfo()).ok()) << "the source is not fenced";
  const int64_t stall = MaxGapMs();
  EXPECT_LT(stall, kHoldTimeoutMs + kSlackMs);

  ASSERT_TRUE((*open)->Exec("commit").ok()) << "the long transaction outlived the attempt";
  open->reset();
  ASSERT_TRUE(PostAction(id, "cutover"));
  auto m = sb_->WaitFor(id, Terminal, kMigrationBoundMs);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ((*m)["phase"], "finalized") << m->dump(2);
  StopWritersAndCheck(sb_->TargetConninfo());
  Report(
      "hold deadline (a transaction that never finishes) -> aborted on the source, later "
      "cutover finalized",
      "longest client stall " + std::to_string(stall) + " ms (hold deadline " +
          std::to_string(kHoldTimeoutMs) + " ms)");
}

}  // namespace
}  // namespace pgshift::e2e
