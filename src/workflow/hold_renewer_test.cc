// The hold lease's bookkeeping (LeaseState, on times the test gives) and the
// renewer's thread against a router that counts renewals.
#include "workflow/hold_renewer.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "common/clock.h"

namespace pgshift {
namespace {

constexpr HoldLease kLease{.epoch = 42, .lease_ms = 9000};

TEST(LeaseState, RenewsEveryThirdOfTheLeaseAndRetriesSoonerAfterAFailure) {
  LeaseState s(kLease, 1000);
  EXPECT_EQ(s.NextRenewalAt(), 1000 + 3000);
  s.Renewed(4000, Status::OK());
  EXPECT_EQ(s.NextRenewalAt(), 4000 + 3000);
  // Unreachable: tried again after a tenth of the lease, not a third.
  s.Renewed(7000, Unavailable("connection refused"));
  EXPECT_EQ(s.NextRenewalAt(), 7000 + 900);
  s.Renewed(7900, Status::OK());
  EXPECT_EQ(s.NextRenewalAt(), 7900 + 3000) << "a success resets the schedule";
  // A late answer to an older renewal does not move the last success back.
  s.Renewed(5000, Status::OK());
  EXPECT_EQ(s.NextRenewalAt(), 7900 + 3000);
}

TEST(LeaseState, OursUntilAWholeLeaseWithoutASuccessOrUntilTheRouterSaysItIsGone) {
  LeaseState s(kLease, 1000);
  EXPECT_TRUE(s.Ours(1000).ok());
  EXPECT_FALSE(s.Stale(1000 + 4499));
  EXPECT_TRUE(s.Stale(1000 + 4500)) << "half a lease old";
  s.Renewed(4000, Unavailable("connection refused"));
  EXPECT_TRUE(s.Ours(1000 + 8999).ok()) << "an unreachable router alone proves nothing yet";
  Status lapsed = s.Ours(1000 + 9000);
  EXPECT_EQ(lapsed.code(), Code::kFailedPrecondition);
  EXPECT_NE(lapsed.message().find("hold 42 has lapsed"), std::string::npos) << lapsed.message();
  EXPECT_NE(lapsed.message().find("connection refused"), std::string::npos) << lapsed.message();

  LeaseState gone(kLease, 1000);
  gone.Renewed(2000, FailedPrecondition("it lapsed 5 ms ago"));
  EXPECT_TRUE(gone.lost());
  Status st = gone.Ours(2001);
  EXPECT_EQ(st.code(), Code::kFailedPrecondition);
  EXPECT_NE(st.message().find("hold 42 is gone: it lapsed 5 ms ago"), std::string::npos);
  gone.Renewed(2100, Status::OK());
  EXPECT_FALSE(gone.Ours(2101).ok()) << "once gone, a hold does not come back";
}

// Counts renewals; answers `answer` to each.
class CountingRouter : public Router {
 public:
  std::string Kind() const override { return "counting"; }
  Status Hold(int64_t) override { return Status::OK(); }
  Status Release() override { return Status::OK(); }
  Status Repoint(const Endpoint&) override { return Status::OK(); }
  Result<Endpoint> Current() override { return Endpoint{}; }
  Result<RouteStats> Stats() override { return RouteStats{}; }
  Status RenewHold(const HoldLease& hold) override {
    EXPECT_EQ(hold.epoch, 7u);
    renewals++;
    return gone ? FailedPrecondition("the proxy does not know it") : Status::OK();
  }
  std::atomic<int> renewals{0};
  std::atomic<bool> gone{false};
};

// Bounds are generous: a safety net on a loaded machine, not a timing claim.
constexpr int64_t kShortLeaseMs = 300;
constexpr int64_t kBoundMs = 10000;

TEST(HoldRenewer, RenewsOnItsThreadUntilDestroyedAndReportsAHoldTheRouterLost) {
  CountingRouter router;
  {
    HoldRenewer renewer(router, {.epoch = 7, .lease_ms = kShortLeaseMs});
    const int64_t deadline = MonotonicMs() + kBoundMs;
    while (router.renewals < 3 && MonotonicMs() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    EXPECT_GE(router.renewals.load(), 3);
    EXPECT_TRUE(renewer.Check().ok());
    EXPECT_GE(renewer.renewals(), 3);

    router.gone = true;
    Status st;
    while ((st = renewer.Check()).ok() && MonotonicMs() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    EXPECT_EQ(st.code(), Code::kFailedPrecondition);
    EXPECT_NE(st.message().find("the proxy does not know it"), std::string::npos) << st.message();
    const int after_loss = router.renewals;
    std::this_thread::sleep_for(std::chrono::milliseconds(2 * kShortLeaseMs));
    EXPECT_EQ(router.renewals.load(), after_loss) << "nothing more to renew once it is gone";
  }
  router.gone = false;
  { HoldRenewer renewer(router, {.epoch = 7, .lease_ms = kShortLeaseMs}); }
  const int after_stop = router.renewals;
  std::this_thread::sleep_for(std::chrono::milliseconds(2 * kShortLeaseMs));
  EXPECT_EQ(router.renewals.load(), after_stop) << "the renewer stops with its owner";
}

TEST(HoldRenewer, CheckDoesNotCallTheRouterWhileTheLastRenewalIsFresh) {
  CountingRouter router;
  // A lease so long that the thread's first renewal is far off.
  HoldRenewer renewer(router, {.epoch = 7, .lease_ms = 600000});
  EXPECT_TRUE(renewer.Check().ok());
  EXPECT_EQ(router.renewals.load(), 0) << "no round trip inside the hold while fresh";
}

}  // namespace
}  // namespace pgshift
