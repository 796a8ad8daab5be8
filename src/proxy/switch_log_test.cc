// Switch reports (SwitchLog) and the hold under uncarriable: wait, on
// Route's bookkeeping alone (no sessions, no servers); the route option's
// parsing; and SwitchReport's sums and summary (router.h).
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "proxy/route.h"
#include "router/router.h"

namespace pgshift::proxy {
namespace {

const UpstreamConfig kA{.host = "a", .port = 1};
const UpstreamConfig kB{.host = "b", .port = 2};

TEST(SwitchLog, CountsMovesCarriedStateAndEndsOfTheSwitchTheyFollow) {
  SwitchLog log;
  EXPECT_TRUE(log.LastJson().is_null()) << "no switch yet";
  for (int i = 0; i < 4; i++) log.Joined(0);
  log.EndedInHold(EndReason::kTemporaryTables);  // a hold's wait ran out for one
  log.WaitedInHold();                            // another let go in time
  log.Began(1, 77, kA, kB);
  log.Moved(0, 1, {.prewarmed = true, .settings = 2, .prepared_statements = 1});
  log.Moved(0, 2, {.listen_channels = 1, .advisory_locks = 3});  // after a pinned release
  log.Ended(1, EndReason::kHoldableCursors);
  log.Left(0);                       // the ended one closes
  log.Moved(1, 1, {.settings = 5});  // a reconnect after a lost server: no switch's
  nlohmann::json j = log.LastJson();
  EXPECT_EQ(j["generation"], 1);
  EXPECT_EQ(j["hold_epoch"], 77);
  EXPECT_EQ(j["from"]["host"], "a");
  EXPECT_EQ(j["to"]["host"], "b");
  EXPECT_EQ(j["sessions"], 4);
  EXPECT_EQ(j["moved"], 2);
  EXPECT_EQ(j["prewarmed"], 1);
  EXPECT_EQ(j["pending"], 1) << "one session has not moved yet";
  EXPECT_EQ(j["carried"]["settings"], 2);
  EXPECT_EQ(j["carried"]["prepared_statements"], 1);
  EXPECT_EQ(j["carried"]["listen_channels"], 1);
  EXPECT_EQ(j["carried"]["advisory_locks"], 3);
  EXPECT_EQ(j["ended"]["temporary_tables"], 1);
  EXPECT_EQ(j["ended"]["holdable_cursors"], 1);
  EXPECT_EQ(j["ended_total"], 2);
  EXPECT_EQ(j["waited_for"], 1);
  EXPECT_GT(j["at_ms"].get<int64_t>(), 0);

  // A hold released without a switch forgets what happened inside it.
  log.EndedInHold(EndReason::kCarryFailed);
  log.HoldEndedWithoutSwitch();
  log.Began(3, 0, kB, kA);
  j = log.LastJson();
  EXPECT_EQ(j["ended_total"], 0);
  EXPECT_EQ(j["sessions"], 3);
  EXPECT_EQ(j["pending"], 3);
}

class UncarriableHold : public ::testing::Test {
 protected:
  Route MakeRoute(UncarriableMode mode) {
    return Route(RouteConfig{.name = "app",
                             .database = "app",
                             .upstream = kA,
                             .hold_timeout_ms = 5000,
                             .uncarriable = mode});
  }
};

TEST_F(UncarriableHold, AHoldWaitsForSessionsThatLetGoInTime) {
  Route r = MakeRoute(UncarriableMode::kWait);
  uint64_t id = r.AddUncarriable([] { ADD_FAILURE() << "asked to end before the deadline"; });
  EXPECT_EQ(r.uncarriable_sessions.load(), 1);
  std::thread let_go([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    r.RemoveUncarriable(id);
  });
  const auto start = std::chrono::steady_clock::now();
  auto epoch = r.HoldLeased(10000, kDefaultHoldLeaseMs);
  const auto waited = std::chrono::steady_clock::now() - start;
  let_go.join();
  ASSERT_TRUE(epoch.ok()) << epoch.status().ToString();
  EXPECT_GE(waited, std::chrono::milliseconds(300)) << "it drained only once the session let go";
  EXPECT_EQ(r.uncarriable_sessions.load(), 0);
}

TEST_F(UncarriableHold, SessionsStillHoldingItNearTheDeadlineAreAskedToEnd) {
  Route r = MakeRoute(UncarriableMode::kWait);
  std::atomic<int> asked{0};
  uint64_t id = 0;
  id = r.AddUncarriable([&] {
    asked++;
    r.RemoveUncarriable(id);  // it ends (a session does so on its own thread)
  });
  const auto start = std::chrono::steady_clock::now();
  auto epoch = r.HoldLeased(1000, kDefaultHoldLeaseMs);
  const auto waited = std::chrono::steady_clock::now() - start;
  // Asked a fifth of the bound before its deadline, so the end lands inside
  // it: the hold drains instead of timing out.
  ASSERT_TRUE(epoch.ok()) << epoch.status().ToString();
  EXPECT_EQ(asked.load(), 1);
  EXPECT_GE(waited, std::chrono::milliseconds(800));
}

TEST_F(UncarriableHold, AHoldUnderEndDoesNotWaitForThem) {
  Route r = MakeRoute(UncarriableMode::kEnd);
  r.AddUncarriable([] { ADD_FAILURE() << "under end a hold asks nobody to end"; });
  auto epoch = r.HoldLeased(200, kDefaultHoldLeaseMs);
  EXPECT_TRUE(epoch.ok()) << epoch.status().ToString();
}

TEST_F(UncarriableHold, ATimedOutHoldSaysWhoItWaitedFor) {
  Route r = MakeRoute(UncarriableMode::kWait);
  r.AddUncarriable([] {});  // asked, but never ends
  auto epoch = r.HoldLeased(100, kDefaultHoldLeaseMs);
  ASSERT_EQ(epoch.status().code(), Code::kTimeout);
  EXPECT_NE(epoch.status().message().find("1 still holding temporary tables or WITH HOLD cursors"),
            std::string::npos)
      << epoch.status().message();
}

TEST_F(UncarriableHold, TheRouteReportsItsSwitches) {
  Route r = MakeRoute(UncarriableMode::kWait);
  EXPECT_EQ(r.ToJson()["uncarriable"], "wait");
  EXPECT_TRUE(r.ToJson()["last_switch"].is_null());
  auto epoch = r.HoldLeased(1000, kDefaultHoldLeaseMs);
  ASSERT_TRUE(epoch.ok());
  r.switches.EndedInHold(EndReason::kTemporaryTables);
  ASSERT_TRUE(r.RepointHeld(*epoch, kB).ok());
  ASSERT_TRUE(r.ReleaseHold(*epoch).ok());
  nlohmann::json j = r.ToJson()["last_switch"];
  EXPECT_EQ(j["hold_epoch"], *epoch);
  EXPECT_EQ(j["to"]["host"], "b");
  EXPECT_EQ(j["ended"]["temporary_tables"], 1);
}

TEST(UncarriableConfig, ParsesEndAndWaitAndNamesTheFieldOtherwise) {
  nlohmann::json cfg = {
      {"routes",
       {{{"name", "app"}, {"database", "app"}, {"upstream", {{"host", "h"}, {"port", 1}}}}}}};
  auto c = ParseProxyConfig(cfg);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->routes[0].uncarriable, UncarriableMode::kEnd) << "the default";
  cfg["routes"][0]["uncarriable"] = "wait";
  c = ParseProxyConfig(cfg);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->routes[0].uncarriable, UncarriableMode::kWait);
  EXPECT_EQ(ToJson(*c)["routes"][0]["uncarriable"], "wait");
  cfg["routes"][0]["uncarriable"] = "linger";
  c = ParseProxyConfig(cfg);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("routes[0].uncarriable must be \"end\" or \"wait\""),
            std::string::npos)
      << c.status().message();
}

TEST(SwitchReport, SumsInstancesAndSummarisesInOneLine) {
  SwitchReport a{.to = {"t", 5432}, .at_ms = 20, .sessions = 3, .moved = 2, .pending = 1};
  a.carried.settings = 2;
  a.ended.temporary_tables = 1;
  SwitchReport b{.to = {"t", 5432}, .at_ms = 10, .sessions = 2, .moved = 2, .prewarmed = 2};
  b.carried.advisory_locks = 1;
  a.Add(b);
  EXPECT_EQ(a.at_ms, 10);
  EXPECT_EQ(a.sessions, 5);
  EXPECT_EQ(a.moved, 4);
  EXPECT_EQ(a.ended.Total(), 1);
  EXPECT_EQ(a.Summary(),
            "switch to t:5432: 4 of 5 session(s) moved (2 on logins opened ahead), 1 not yet "
            "(each moves at its next transaction); carried: 2 SET value(s), 1 advisory lock(s); "
            "ended: 1 holding temporary tables");
}

}  // namespace
}  // namespace pgshift::proxy
