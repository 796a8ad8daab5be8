// The hold lease: Route's bookkeeping on a clock the test moves, and the
// admin API and ProxyRouter against an in-process proxy whose lease watcher
// releases a hold nobody renews.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "proxy/proxy.h"
#include "proxy/route.h"
#include "router/proxy_router.h"

namespace pgshift::proxy {
namespace {

class RouteLease : public ::testing::Test {
 protected:
  RouteConfig rc_{.name = "app", .database = "app", .upstream = {.host = "h", .port = 1}};
  int64_t now_ = 1000;
  Route r_{rc_, [this] { return now_; }};
};

TEST_F(RouteLease, ADrainedHoldLapsesALeaseAfterItsLastRenewalAndSaysSoAfterwards) {
  auto epoch = r_.HoldLeased(100, 500);
  ASSERT_TRUE(epoch.ok());
  EXPECT_EQ(r_.hold_epoch(), *epoch);
  now_ += 400;
  ASSERT_TRUE(r_.Renew(*epoch).ok());
  EXPECT_EQ(r_.hold_renewals.load(), 1);
  now_ += 499;
  EXPECT_FALSE(r_.ExpireLease()) << "renewed 499 ms ago";
  EXPECT_TRUE(r_.held());
  now_ += 1;
  auto lapsed = r_.ExpireLease();
  ASSERT_TRUE(lapsed.has_value());
  EXPECT_EQ(lapsed->epoch, *epoch);
  EXPECT_EQ(lapsed->lease_ms, 500);
  EXPECT_EQ(lapsed->released_to.host, "h");
  EXPECT_FALSE(r_.held());
  EXPECT_EQ(r_.hold_epoch(), 0u);
  EXPECT_EQ(r_.hold_lapses.load(), 1);
  EXPECT_FALSE(r_.ExpireLease()) << "once";

  now_ += 25;
  Status st = r_.Renew(*epoch);
  EXPECT_EQ(st.code(), Code::kFailedPrecondition);
  EXPECT_NE(st.message().find("it lapsed 25 ms ago: its lease of 500 ms was not renewed, so the "
                              "proxy released traffic to h:1; the route is not held"),
            std::string::npos)
      << st.message();
  auto j = r_.ToJson();
  EXPECT_TRUE(j["hold"].is_null());
  ASSERT_EQ(j["ended_holds"].size(), 1u);
  EXPECT_EQ(j["ended_holds"][0]["how"], "lapsed");
  EXPECT_EQ(j["ended_holds"][0]["epoch"], *epoch);
  EXPECT_EQ(j["stats"]["hold_lapses"], 1);
}

TEST_F(RouteLease, TheLeaseStartsOnceTheHoldDrained) {
  r_.in_transaction = 1;
  Result<uint64_t> epoch = Internal("not yet");
  std::thread holder([&] { epoch = r_.HoldLeased(10000, 10); });
  while (!r_.held()) std::this_thread::yield();
  now_ += 1000;
  EXPECT_FALSE(r_.ExpireLease()) << "still draining: the hold deadline bounds it";
  EXPECT_EQ(r_.ToJson()["hold"]["lease_left_ms"], 10);
  r_.in_transaction = 0;
  holder.join();
  ASSERT_TRUE(epoch.ok());
  EXPECT_FALSE(r_.ExpireLease());
  now_ += 10;
  EXPECT_TRUE(r_.ExpireLease());
}

TEST_F(RouteLease, HoldingAHeldRouteJoinsItsHoldAndRenewsIt) {
  auto first = r_.HoldLeased(100, 500);
  ASSERT_TRUE(first.ok());
  now_ += 400;
  auto second = r_.HoldLeased(100, 800);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(*second, *first);
  now_ += 799;
  EXPECT_FALSE(r_.ExpireLease());
  now_ += 1;
  EXPECT_TRUE(r_.ExpireLease());
  auto third = r_.HoldLeased(100, 500);
  ASSERT_TRUE(third.ok());
  EXPECT_GT(*third, *first) << "a new hold, a new epoch";
}

TEST_F(RouteLease, ReleaseAndSwitchActOnlyOnTheirOwnHold) {
  auto old_epoch = r_.HoldLeased(100, 500);
  ASSERT_TRUE(old_epoch.ok());
  ASSERT_TRUE(r_.ReleaseHold(*old_epoch).ok());
  EXPECT_TRUE(r_.ReleaseHold(*old_epoch).ok()) << "nothing held: idempotent";
  auto epoch = r_.HoldLeased(100, 500);
  ASSERT_TRUE(epoch.ok());
  Status st = r_.ReleaseHold(*old_epoch);
  EXPECT_EQ(st.code(), Code::kFailedPrecondition);
  EXPECT_NE(st.message().find("it was released 0 ms ago; the route is held by hold " +
                              std::to_string(*epoch)),
            std::string::npos)
      << st.message();
  EXPECT_TRUE(r_.held());

  const UpstreamConfig target{.host = "t", .port = 2};
  auto moved = r_.RepointHeld(*old_epoch, target);
  EXPECT_EQ(moved.status().code(), Code::kFailedPrecondition);
  EXPECT_EQ(r_.target().upstream.host, "h") << "nothing moved";
  EXPECT_EQ(r_.RepointHeld(12345, target).status().message().find("cannot switch under hold 12345"),
            0u);
  EXPECT_NE(r_.RepointHeld(12345, target).status().message().find("does not know it"),
            std::string::npos);
  moved = r_.RepointHeld(*epoch, target);
  ASSERT_TRUE(moved.ok());
  EXPECT_TRUE(*moved);
  EXPECT_EQ(r_.generation(), 1u);
  // A lease that lapses after the switch's repoint releases onto the target.
  now_ += 500;
  auto lapsed = r_.ExpireLease();
  ASSERT_TRUE(lapsed.has_value());
  EXPECT_EQ(lapsed->released_to.host, "t");
}

TEST_F(RouteLease, ALapseOfAPinnedHoldSendsEverySessionToLogInAgain) {
  ASSERT_TRUE(r_.HoldLeased(100, 500).ok());
  ASSERT_TRUE(r_.PinBackends());
  now_ += 500;
  ASSERT_TRUE(r_.ExpireLease());
  EXPECT_EQ(r_.generation(), 1u) << "the spared backends run no further client statement";
}

// The admin API and ProxyRouter, with the proxy's own lease watcher.
TEST(ProxyLease, AHoldNobodyRenewsIsReleasedAndItsHolderIsToldSo) {
  ProxyConfig pc;
  pc.listen_port = 0;
  pc.admin_port = 0;
  pc.kernel_splice = false;
  pc.routes = {RouteConfig{.name = "app",
                           .database = "app",
                           .upstream = {.host = "127.0.0.1", .port = 1},
                           .allow_plaintext = true}};
  Proxy proxy(pc);
  ASSERT_TRUE(proxy.Start().ok());
  ProxyRouter router(
      {.admin_url = "http://127.0.0.1:" + std::to_string(proxy.admin_port()), .route = "app"});
  constexpr int64_t kLeaseMs = 300;
  constexpr int64_t kBoundMs = 10000;  // a safety net on a loaded machine
  auto route = proxy.shared().routes.Find("app");

  // Renewed, it outlives its lease; then not renewed, it lapses.
  auto lease = router.HoldLeased(1000, kLeaseMs);
  ASSERT_TRUE(lease.ok()) << lease.status().ToString();
  EXPECT_TRUE(lease->leased());
  for (int i = 0; i < 6; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(kLeaseMs / 3));
    ASSERT_TRUE(router.RenewHold(*lease).ok());
  }
  EXPECT_TRUE(route->held()) << "renewed for twice its lease";
  const auto start = std::chrono::steady_clock::now();
  while (route->held() &&
         std::chrono::steady_clock::now() - start < std::chrono::milliseconds(kBoundMs))
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_FALSE(route->held());
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(kLeaseMs - 50));
  Status st = router.RenewHold(*lease);
  EXPECT_EQ(st.code(), Code::kFailedPrecondition);
  EXPECT_NE(st.message().find("lapsed"), std::string::npos) << st.message();
  st = router.SwitchHeld({"127.0.0.1", 2}, *lease);
  EXPECT_EQ(st.code(), Code::kFailedPrecondition);
  EXPECT_EQ(route->target().upstream.port, 1) << "a switch under a lapsed hold moves nothing";

  // A hold that is renewed is switched.
  lease = router.HoldLeased(1000, kLeaseMs);
  ASSERT_TRUE(lease.ok());
  ASSERT_TRUE(router.SwitchHeld({"127.0.0.1", 2}, *lease).ok());
  EXPECT_EQ(route->target().upstream.port, 2);
  EXPECT_FALSE(route->held());
  EXPECT_EQ(route->hold_lapses.load(), 1);
  proxy.Stop();
}

}  // namespace
}  // namespace pgshift::proxy
