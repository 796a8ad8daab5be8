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
// Every scenario: ledger writers through the proxy all along, every
// acknowledged row on the new primary exactly once. The stalls are measured
// and reported (faults_report.h); their bounds are safety nets.
#include <gtest/gtest.h>
#include <httplib.h>

#include <cctype>
#include <chrono>
#include <thread>

#include "common/clock.h"
#include "e2e/e2e_fixture.h"
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
constexpr int64_t kPollMs = 20;
constexpr int64_t kDeathBoundMs = 120000;

class FaultsHoldE2E : public SandboxTest {
 protected:
  void SetUp() override {
    SetFaults("");
    started_ms_ = MonotonicMs();
    SandboxTest::SetUp();
  }
  void TearDown() override {
    SandboxTest::TearDown();
    SetFaults("");
  }

  json Options(bool auto_cutover) const {
    return {{"auto_cutover", auto_cutover},
            {"auto_finalize", true},
            {"sustain_seconds", 1},
            {"verify_seconds", 1},
            {"poll_ms", 100},
            {"hold_lease_ms", kLeaseMs},
            {"hold_timeout_ms", kHoldTimeoutMs}};
  }

  // GET on the proxy's admin API; null when it does not answer.
  json ProxyGet(const std::string& path) const {
    httplib::Client cli(sb_->RouterConfig().value("admin_url", ""));
    cli.set_connection_timeout(std::chrono::seconds(2));
    auto res = cli.Get(path.c_str());
    if (!res || res->status != 200) return nullptr;
    return json::parse(res->body, nullptr, false);
  }
  bool RouteHeld() const {
    json r = ProxyGet("/routes/app");
    return r.is_object() && r.value("held", false);
  }

  // Polls `pred` every kPollMs up to bound_ms; the ms it took, or -1.
  static int64_t MsUntil(const std::function<bool()>& pred, int64_t bound_ms) {
    const int64_t start = MonotonicMs();
    while (!pred()) {
      if (MonotonicMs() - start > bound_ms) return -1;
      std::this_thread::sleep_for(std::chrono::milliseconds(kPollMs));
    }
    return MonotonicMs() - start;
  }
  int64_t Sum(int64_t load::LedgerStats::*field) const {
    int64_t n = 0;
    for (const auto& w : writers_) n += w->Stats().*field;
    return n;
  }
  int64_t MaxGapMs() const {
    int64_t gap = 0;
    for (const auto& w : writers_) gap = std::max(gap, w->Stats().max_gap_us / 1000);
    return gap;
  }

  // Writers run; pgshiftd is restarted armed with `fault` and the migration
  // created; returns its id once pgshiftd died there (the route held).
  std::string CreateAndDieAt(const std::string& fault) {
    StartWriters();
    std::this_thread::sleep_for(std::chrono::seconds(1));
    EXPECT_TRUE(sb_->KillPgshiftd(SIGTERM).ok());
    StartPgshiftd(*sb_, "crash:" + fault);
    const std::string id = Create(Options(true));
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
    auto events = sb_->Api("GET", "/v1/migrations/" + id + "/events");
    if (!events.ok()) return false;
    for (const auto& e : (*events)["body"]["events"])
      if (e.value("message", "").find(needle) != std::string::npos) return true;
    return false;
  }

  // Stops the writers; every acknowledged row is on `conninfo` exactly once.
  // Refused writes (a fenced source, a proxy that is down) are allowed only
  // when `errors_expected`; each is a clear error, never a silent loss.
  void StopWritersAndCheck(const std::string& conninfo, bool errors_expected) {
    std::this_thread::sleep_for(std::chrono::seconds(1));  // writes go on, on `conninfo`
    StopWriters();
    for (auto& w : writers_) {
      auto st = w->Stats();
      if (!errors_expected) {
        EXPECT_EQ(st.failed, 0) << (st.errors.empty() ? "" : st.errors.front());
        EXPECT_EQ(st.uncertain, 0) << (st.errors.empty() ? "" : st.errors.front());
      }
      if (first_error_.empty() && !st.errors.empty()) {
        first_error_ = st.errors.front();
        while (!first_error_.empty() &&
               std::isspace(static_cast<unsigned char>(first_error_.back())))
          first_error_.pop_back();  // libpq's messages end in a newline
      }
      EXPECT_GT(st.committed, kMinCommittedPerWriter);
      auto check = load::CheckLedger(conninfo, w->writer_id(), w->Acknowledged());
      ASSERT_TRUE(check.ok()) << check.status().ToString();
      EXPECT_EQ(check->lost, 0);
      EXPECT_EQ(check->duplicated, 0);
      EXPECT_EQ(check->found, check->acknowledged);
      lost_rows_ += check->lost;
      duplicated_rows_ += check->duplicated;
    }
  }

  void Report(const std::string& scenario, const std::string& measured) {
    FaultsTotals& t = TheFaultsTotals();
    t.AddScenario(scenario, !HasFailure());
    t.lost_rows += lost_rows_;
    t.duplicated_rows += duplicated_rows_;
    char took[64];
    std::snprintf(took, sizeof took, "; %.0f s", (MonotonicMs() - started_ms_) / 1000.0);
    t.lines.push_back(
        "  " + measured + took +
        (first_error_.empty() ? "" : "; clients saw: " + first_error_.substr(0, 120)));
    t.Write();
  }

  int64_t started_ms_ = 0;
  int64_t lost_rows_ = 0;
  int64_t duplicated_rows_ = 0;
  std::string first_error_;
};

TEST_F(FaultsHoldE2E, PgshiftdKilledInTheHoldBeforeTheFenceClientsServedAfterTheLease) {
  const std::string id = CreateAndDieAt("quiesce_held");
  ASSERT_FALSE(HasFatalFailure());
  const int64_t died = MonotonicMs();
  // The proxy releases on its own once the lease runs out; the source, not
  // fenced yet, serves the clients again.
  const int64_t released = MsUntil([&] { return !RouteHeld(); }, kLeaseMs + kSlackMs);
  EXPECT_GE(released, 0) << "the hold outlived its lease";
  const int64_t committed = Sum(&load::LedgerStats::committed);
  const int64_t served =
      MsUntil([&] { return Sum(&load::LedgerStats::committed) > committed; }, kSlackMs);
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
  StopWritersAndCheck(sb_->TargetConninfo(), /*errors_expected=*/false);
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
  auto refused = [&] {
    return Sum(&load::LedgerStats::failed) + Sum(&load::LedgerStats::uncertain);
  };
  const int64_t errors_before = refused();
  const int64_t answered = MsUntil([&] { return refused() > errors_before; }, kSlackMs);
  EXPECT_GE(answered, 0) << "held clients got no answer after the release";

  json m = RestartAndFinish(id);
  EXPECT_EQ(m["phase"], "finalized") << m.dump(2);
  EXPECT_TRUE(HasEvent(id, "no longer this cutover's")) << "the lapse was noticed";
  EXPECT_TRUE(HasEvent(id, "cutover aborted, traffic released to the source"));
  EXPECT_EQ(m["result"]["cutover_attempts"], 2);
  StopWritersAndCheck(sb_->TargetConninfo(), /*errors_expected=*/true);
  Report(
      "pgshiftd kill -9 in the hold after the fence -> lease lapsed, aborted, retried, "
      "finalized",
      "hold released " + std::to_string(released) + " ms after pgshiftd died (lease " +
          std::to_string(kLeaseMs) + " ms), held clients answered (fence error) " +
          std::to_string(released + answered) + " ms after");
}

TEST_F(FaultsHoldE2E, ProxyRestartedWhileHeldComesBackOnTheSourceAndTheMigrationRecovers) {
  const std::string id = CreateAndDieAt("before_drain");
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_TRUE(RouteHeld());
  ASSERT_TRUE(sb_->KillProxy(SIGKILL).ok());
  ASSERT_TRUE(sb_->RestartProxy().ok());
  json route = ProxyGet("/routes/app");
  ASSERT_TRUE(route.is_object());
  EXPECT_FALSE(route["held"].get<bool>()) << "a hold does not survive the proxy";
  EXPECT_EQ(route["upstream"]["port"], sb_->source().spec().port) << "never switched";
  auto refused = [&] {
    return Sum(&load::LedgerStats::failed) + Sum(&load::LedgerStats::uncertain);
  };
  const int64_t errors_before = refused();
  const int64_t answered = MsUntil([&] { return refused() > errors_before; }, kSlackMs);
  EXPECT_GE(answered, 0) << "clients got no answer from the restarted proxy";

  json m = RestartAndFinish(id);
  EXPECT_EQ(m["phase"], "finalized") << m.dump(2);
  EXPECT_TRUE(HasEvent(id, "does not know it")) << "the proxy's restart was noticed";
  EXPECT_EQ(m["result"]["cutover_attempts"], 2);
  StopWritersAndCheck(sb_->TargetConninfo(), /*errors_expected=*/true);
  Report("pgshift-proxy kill -9 + restart while held -> aborted, retried, finalized",
         "after the restart the route was unheld on the source; clients answered " +
             std::to_string(answered) + " ms later");
}

TEST_F(FaultsHoldE2E, HoldDeadlineAbortsTheCutoverAndALaterOneFinishes) {
  StartWriters();
  const std::string id = Create(Options(false));
  ASSERT_FALSE(id.empty());
  auto ready = sb_->WaitFor(
      id, [](const json& m) { return m["state"] == "waiting" || Terminal(m); }, kMigrationBoundMs);
  ASSERT_TRUE(ready.ok()) << ready.status().ToString();
  ASSERT_EQ((*ready)["phase"], "ready");
  // A transaction through the proxy that does not finish.
  auto open = PgConn::Connect(sb_->AppConninfo());
  ASSERT_TRUE(open.ok()) << open.status().ToString();
  ASSERT_TRUE((*open)->Exec("begin").ok());
  ASSERT_TRUE((*open)->Query("select txid_current()").ok());

  auto r = sb_->Api("POST", "/v1/migrations/" + id + "/cutover", "{}");
  ASSERT_TRUE(r.ok() && (*r)["status"] == 202) << (r.ok() ? (*r)["body"].dump() : "");
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
  const int64_t committed = Sum(&load::LedgerStats::committed);
  EXPECT_GE(MsUntil([&] { return Sum(&load::LedgerStats::committed) > committed; }, kSlackMs), 0);
  EXPECT_TRUE(PgConn::Connect(sb_->SourceConninfo()).ok()) << "the source is not fenced";
  const int64_t stall = MaxGapMs();
  EXPECT_LT(stall, kHoldTimeoutMs + kSlackMs);

  ASSERT_TRUE((*open)->Exec("commit").ok()) << "the long transaction outlived the attempt";
  open->reset();
  r = sb_->Api("POST", "/v1/migrations/" + id + "/cutover", "{}");
  ASSERT_TRUE(r.ok() && (*r)["status"] == 202) << (r.ok() ? (*r)["body"].dump() : "");
  auto m = sb_->WaitFor(id, Terminal, kMigrationBoundMs);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ((*m)["phase"], "finalized") << m->dump(2);
  StopWritersAndCheck(sb_->TargetConninfo(), /*errors_expected=*/false);
  Report(
      "hold deadline (a transaction that never finishes) -> aborted on the source, later "
      "cutover finalized",
      "longest client stall " + std::to_string(stall) + " ms (hold deadline " +
          std::to_string(kHoldTimeoutMs) + " ms)");
}

}  // namespace
}  // namespace pgshift::e2e
