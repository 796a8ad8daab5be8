// MultiRouter over fake instances: one down, one lapsing, one slow, one
// unreachable but maybe alive; and the "instances" form of the proxy config.
#include "router/multi_router.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "common/os.h"

namespace pgshift {
namespace {

const Endpoint kSource{"127.0.0.1", 5432};
const Endpoint kTarget{"127.0.0.1", 5433};

// One instance of a route. Called from one MultiRouter thread at a time;
// the test reads it between calls.
class FakeInstance : public Router {
 public:
  // Reachability: up, down (nothing listens: known down), or cut off
  // (unreachable, not known down).
  enum class Reach { kUp, kDown, kCutOff };
  Reach reach = Reach::kUp;
  Endpoint upstream = kSource;
  uint64_t epoch = 0;  // the hold in place, 0: none
  uint64_t next_epoch = 100;
  int64_t hold_delay_ms = 0;   // draining takes this long
  bool drains = true;          // false: Timeout after the delay
  std::vector<int> held_pids;  // reported while held
  RouteStats stats;
  int releases = 0;

  std::string Kind() const override { return "proxy"; }
  Status Hold(int64_t t) override { return HoldLeased(t, 1000).status(); }
  Result<HoldLease> HoldLeased(int64_t, int64_t lease_ms) override {
    PGSHIFT_RETURN_IF_ERROR(Reachable());
    std::this_thread::sleep_for(std::chrono::milliseconds(hold_delay_ms));
    if (!drains) return Timeout("a transaction stayed open");
    if (epoch == 0) epoch = ++next_epoch;
    return HoldLease{.epoch = epoch, .lease_ms = lease_ms};
  }
  Status RenewHold(const HoldLease& h) override {
    PGSHIFT_RETURN_IF_ERROR(Reachable());
    if (epoch != h.epoch) return FailedPrecondition("hold " + std::to_string(h.epoch) + " lapsed");
    return Status::OK();
  }
  Status SwitchHeld(const Endpoint& to, const HoldLease& h) override {
    PGSHIFT_RETURN_IF_ERROR(Reachable());
    if (epoch != h.epoch) return FailedPrecondition("hold " + std::to_string(h.epoch) + " lapsed");
    return SwitchTo(to);
  }
  Status Release() override {
    PGSHIFT_RETURN_IF_ERROR(Reachable());
    epoch = 0;
    releases++;
    return Status::OK();
  }
  Status Repoint(const Endpoint& to) override {
    PGSHIFT_RETURN_IF_ERROR(Reachable());
    upstream = to;
    return Status::OK();
  }
  Result<Endpoint> Current() override {
    PGSHIFT_RETURN_IF_ERROR(Reachable());
    return upstream;
  }
  Result<RouteView> View() override {
    PGSHIFT_RETURN_IF_ERROR(Reachable());
    return RouteView{.upstream = upstream, .held = epoch != 0};
  }
  Result<RouteStats> Stats() override {
    PGSHIFT_RETURN_IF_ERROR(Reachable());
    return stats;
  }
  Result<HeldBackends> HeldBackendPids(const Endpoint& on) override {
    PGSHIFT_RETURN_IF_ERROR(Reachable());
    return HeldBackends{.server = on, .database = "app", .pids = held_pids};
  }
  // The proxy restarted (or its lease ran out): no hold any more.
  void Lapse() { epoch = 0; }

 private:
  Status Reachable() const {
    if (reach == Reach::kUp) return Status::OK();
    return Unavailable(reach == Reach::kDown ? "connection refused" : "connect timed out");
  }
};

class MultiRouterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::vector<RouterInstance> list;
    for (int i = 0; i < 3; i++) {
      auto f = std::make_unique<FakeInstance>();
      f->next_epoch = 100 * (i + 1);
      FakeInstance* raw = f.get();
      fakes_.push_back(raw);
      list.push_back({.name = "proxy-" + std::to_string(i),
                      .router = std::move(f),
                      .known_down = [raw] { return raw->reach == FakeInstance::Reach::kDown; }});
    }
    router_ = std::make_unique<MultiRouter>(std::move(list));
  }
  FakeInstance& a() { return *fakes_[0]; }
  FakeInstance& b() { return *fakes_[1]; }
  FakeInstance& c() { return *fakes_[2]; }

  std::vector<FakeInstance*> fakes_;
  std::unique_ptr<MultiRouter> router_;
};

TEST_F(MultiRouterTest, HoldsEveryInstanceAtOnceAndSwitchesThemAll) {
  // Slow to drain, each: in parallel the hold takes one delay, not three.
  constexpr int64_t kDelayMs = 1000;
  for (auto* f : fakes_) f->hold_delay_ms = kDelayMs;
  const auto start = std::chrono::steady_clock::now();
  auto lease = router_->HoldLeased(5000, 3000);
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - start)
                        .count();
  ASSERT_TRUE(lease.ok()) << lease.status().ToString();
  EXPECT_LT(took, 3 * kDelayMs) << "the instances were held one after the other";
  EXPECT_EQ(lease->instance_epochs, (std::vector<uint64_t>{101, 201, 301}));
  EXPECT_EQ(lease->epoch, CombinedEpoch({101, 201, 301}));
  EXPECT_NE(lease->epoch, CombinedEpoch({101, 201, 302}));
  EXPECT_EQ(lease->lease_ms, 3000);
  EXPECT_TRUE(router_->RenewHold(*lease).ok());

  a().held_pids = {11};
  c().held_pids = {31, 32};
  auto held = router_->HeldBackendPids(kSource);
  ASSERT_TRUE(held.ok());
  EXPECT_EQ(held->database, "app");
  EXPECT_EQ(held->pids, (std::vector<int>{11, 31, 32}));

  ASSERT_TRUE(router_->SwitchHeld(kTarget, *lease).ok());
  for (auto* f : fakes_) {
    EXPECT_EQ(f->upstream, kTarget);
    EXPECT_EQ(f->epoch, 0u) << "released";
  }
  auto cur = router_->Current();
  ASSERT_TRUE(cur.ok());
  EXPECT_EQ(*cur, kTarget);
}

TEST_F(MultiRouterTest, OneSlowInstanceThatDoesNotDrainFailsTheHoldAndReleasesTheOthers) {
  b().hold_delay_ms = 200;
  b().drains = false;
  auto lease = router_->HoldLeased(100, 3000);
  ASSERT_FALSE(lease.ok());
  EXPECT_EQ(lease.status().code(), Code::kTimeout);
  EXPECT_NE(lease.status().message().find("proxy-1"), std::string::npos)
      << lease.status().message();
  EXPECT_EQ(a().epoch, 0u);
  EXPECT_EQ(c().epoch, 0u);
  EXPECT_EQ(a().releases, 1);
  EXPECT_EQ(c().releases, 1);
}

TEST_F(MultiRouterTest, AnInstanceKnownDownIsLeftOutAndRepointedWhenItReturns) {
  b().reach = FakeInstance::Reach::kDown;
  auto lease = router_->HoldLeased(1000, 3000);
  ASSERT_TRUE(lease.ok()) << lease.status().ToString();
  EXPECT_EQ(lease->instance_epochs, (std::vector<uint64_t>{101, 0, 301}));
  EXPECT_TRUE(router_->RenewHold(*lease).ok()) << "a down instance carries no traffic";
  ASSERT_TRUE(router_->SwitchHeld(kTarget, *lease).ok());
  EXPECT_EQ(a().upstream, kTarget);
  EXPECT_EQ(c().upstream, kTarget);
  EXPECT_EQ(b().upstream, kSource) << "down: not switched";

  // Back with its old route.
  b().reach = FakeInstance::Reach::kUp;
  auto cur = router_->Current();
  ASSERT_FALSE(cur.ok());
  EXPECT_NE(cur.status().message().find("proxy-1 → 127.0.0.1:5432"), std::string::npos)
      << cur.status().message();
  auto report = router_->Reconcile(kTarget);
  ASSERT_TRUE(report.ok());
  ASSERT_EQ(report->repointed.size(), 1u);
  EXPECT_EQ(report->repointed[0].name, "proxy-1");
  EXPECT_EQ(report->repointed[0].from, kSource);
  ASSERT_EQ(report->instances.size(), 3u);
  for (const auto& v : report->instances) {
    EXPECT_TRUE(v.reachable) << v.name;
    EXPECT_EQ(v.view.upstream, kTarget) << v.name;
  }
  EXPECT_EQ(b().upstream, kTarget);
  report = router_->Reconcile(kTarget);
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->repointed.empty()) << "nothing left to repoint";
}

TEST_F(MultiRouterTest, AnInstanceKnownDownThatComesBackInsideTheHoldLosesIt) {
  b().reach = FakeInstance::Reach::kDown;
  auto lease = router_->HoldLeased(1000, 3000);
  ASSERT_TRUE(lease.ok());
  b().reach = FakeInstance::Reach::kUp;  // unheld, routing to the source
  Status st = router_->RenewHold(*lease);
  EXPECT_EQ(st.code(), Code::kFailedPrecondition) << st.ToString();
  EXPECT_NE(st.message().find("proxy-1"), std::string::npos);
}

TEST_F(MultiRouterTest, AnInstanceKilledInsideTheHoldKeepsItOursAndIsSkippedAtTheSwitch) {
  auto lease = router_->HoldLeased(1000, 3000);
  ASSERT_TRUE(lease.ok());
  c().reach = FakeInstance::Reach::kDown;
  c().Lapse();  // its hold died with it
  EXPECT_TRUE(router_->RenewHold(*lease).ok());
  ASSERT_TRUE(router_->SwitchHeld(kTarget, *lease).ok());
  EXPECT_EQ(a().upstream, kTarget);
  EXPECT_EQ(b().upstream, kTarget);
  // Restarted with its old route, after the switch: repointed.
  c().reach = FakeInstance::Reach::kUp;
  EXPECT_EQ(router_->RenewHold(*lease).code(), Code::kFailedPrecondition)
      << "it does not know the hold";
  auto report = router_->Reconcile(kTarget);
  ASSERT_TRUE(report.ok());
  ASSERT_EQ(report->repointed.size(), 1u);
  EXPECT_EQ(report->repointed[0].name, "proxy-2");
  EXPECT_EQ(c().upstream, kTarget);
}

TEST_F(MultiRouterTest, AnUnreachableInstanceNotKnownDownFailsTheHoldButNotTheSwitch) {
  b().reach = FakeInstance::Reach::kCutOff;
  auto lease = router_->HoldLeased(1000, 3000);
  ASSERT_FALSE(lease.ok());
  EXPECT_EQ(lease.status().code(), Code::kUnavailable);
  EXPECT_NE(lease.status().message().find("proxy-1"), std::string::npos);
  EXPECT_EQ(a().epoch, 0u) << "released again";
  EXPECT_EQ(c().epoch, 0u) << "released again";

  // Cut off inside the hold: transient for the renewal, skipped by the switch.
  b().reach = FakeInstance::Reach::kUp;
  lease = router_->HoldLeased(1000, 3000);
  ASSERT_TRUE(lease.ok());
  b().reach = FakeInstance::Reach::kCutOff;
  EXPECT_EQ(router_->RenewHold(*lease).code(), Code::kUnavailable);
  ASSERT_TRUE(router_->SwitchHeld(kTarget, *lease).ok());
  EXPECT_EQ(a().upstream, kTarget);
  EXPECT_EQ(c().upstream, kTarget);
  auto report = router_->Reconcile(kTarget);
  ASSERT_TRUE(report.ok());
  EXPECT_FALSE(report->instances[1].reachable);
  EXPECT_NE(report->instances[1].error.find("timed out"), std::string::npos);
  EXPECT_TRUE(report->repointed.empty());
}

TEST_F(MultiRouterTest, ALapsedInstanceLosesTheHoldAndIsSwitchedUnheldAfterTheOthers) {
  auto lease = router_->HoldLeased(1000, 3000);
  ASSERT_TRUE(lease.ok());
  a().Lapse();
  Status st = router_->RenewHold(*lease);
  EXPECT_EQ(st.code(), Code::kFailedPrecondition);
  EXPECT_NE(st.message().find("proxy-0"), std::string::npos) << st.message();
  // Switched while it lapsed: the held ones under their holds, it without one.
  ASSERT_TRUE(router_->SwitchHeld(kTarget, *lease).ok());
  for (auto* f : fakes_) EXPECT_EQ(f->upstream, kTarget);
}

TEST_F(MultiRouterTest, EveryHoldLapsedSwitchesNothing) {
  auto lease = router_->HoldLeased(1000, 3000);
  ASSERT_TRUE(lease.ok());
  for (auto* f : fakes_) f->Lapse();
  Status st = router_->SwitchHeld(kTarget, *lease);
  EXPECT_EQ(st.code(), Code::kFailedPrecondition) << st.ToString();
  for (auto* f : fakes_) EXPECT_EQ(f->upstream, kSource);
}

TEST_F(MultiRouterTest, EveryInstanceDownIsNoHold) {
  for (auto* f : fakes_) f->reach = FakeInstance::Reach::kDown;
  auto lease = router_->HoldLeased(1000, 3000);
  ASSERT_FALSE(lease.ok());
  EXPECT_EQ(lease.status().code(), Code::kUnavailable);
}

TEST_F(MultiRouterTest, AHoldOfAnotherInstanceListIsNotOurs) {
  HoldLease other{.epoch = 5, .lease_ms = 3000, .instance_epochs = {101, 201}};
  EXPECT_EQ(router_->RenewHold(other).code(), Code::kFailedPrecondition);
  EXPECT_EQ(router_->SwitchHeld(kTarget, other).code(), Code::kFailedPrecondition);
  for (auto* f : fakes_) EXPECT_EQ(f->upstream, kSource);
}

TEST_F(MultiRouterTest, ReconcileLeavesAHeldInstanceAlone) {
  b().epoch = 7;  // held by a cutover in progress
  auto report = router_->Reconcile(kTarget);
  ASSERT_TRUE(report.ok());
  ASSERT_EQ(report->repointed.size(), 2u);
  EXPECT_EQ(report->repointed[0].name, "proxy-0");
  EXPECT_EQ(report->repointed[1].name, "proxy-2");
  EXPECT_TRUE(report->instances[1].view.held);
  EXPECT_EQ(b().upstream, kSource);
}

TEST_F(MultiRouterTest, StatsAreSummedOverTheReachableInstances) {
  for (int i = 0; i < 3; i++) {
    RouteStats& s = fakes_[i]->stats;
    s.sessions = i + 1;
    s.transactions = 10 * (i + 1);
    s.failed_transactions = i;
    s.latency = LatencyHistogram::ProxyLayout();
    s.latency.counts[2] = i + 1;
    s.timed_transactions = i + 1;
  }
  c().reach = FakeInstance::Reach::kDown;
  auto st = router_->Stats();
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->sessions, 3);
  EXPECT_EQ(st->transactions, 30);
  EXPECT_EQ(st->failed_transactions, 1);
  EXPECT_EQ(st->timed_transactions, 3);
  EXPECT_EQ(st->latency.counts[2], 3);
  for (auto* f : fakes_) f->reach = FakeInstance::Reach::kDown;
  EXPECT_EQ(router_->Stats().status().code(), Code::kUnavailable);
}

TEST(MakeRouterInstances, BuildsOneProxyRouterPerInstance) {
  auto r = MakeRouter(
      {{"type", "proxy"},
       {"route", "app"},
       {"admin_timeout_ms", 2000},
       {"instances",
        {{{"admin_url", "http://127.0.0.1:1"}}, {{"admin_url", "http://127.0.0.1:2"}}}}});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)->Kind(), "proxy");
  auto* multi = dynamic_cast<MultiRouter*>(r->get());
  ASSERT_NE(multi, nullptr);
  EXPECT_EQ(multi->size(), 2u);
}

TEST(MakeRouterInstances, RejectsWhatItCannotUse) {
  auto err = [](const nlohmann::json& cfg) {
    auto r = MakeRouter(cfg);
    EXPECT_FALSE(r.ok()) << cfg.dump();
    return r.ok() ? std::string() : r.status().message();
  };
  const nlohmann::json one = {{"admin_url", "http://127.0.0.1:1"}};
  EXPECT_NE(err({{"type", "proxy"}, {"route", "app"}, {"instances", nlohmann::json::array()}})
                .find("non-empty list"),
            std::string::npos);
  EXPECT_NE(err({{"type", "proxy"}, {"route", "app"}, {"instances", {one, one}}}).find("again"),
            std::string::npos);
  EXPECT_NE(err({{"type", "proxy"},
                 {"route", "app"},
                 {"admin_url", "http://127.0.0.1:1"},
                 {"instances", {one}}})
                .find("both"),
            std::string::npos);
  EXPECT_NE(err({{"type", "proxy"}, {"route", "app"}, {"instances", {{{"url", "x"}}}}})
                .find("unknown field \"url\" in proxy router instances[0]"),
            std::string::npos);
  EXPECT_NE(err({{"type", "proxy"}, {"instances", {one}}}).find("\"route\""), std::string::npos);
  EXPECT_NE(err({{"type", "proxy"}, {"route", "app"}, {"instances", {{{"admin_url", "ftp://x"}}}}})
                .find("instances[0]: proxy router admin_url must start with http://"),
            std::string::npos);
}

TEST(ConnectionRefused, TellsNothingListeningFromAListener) {
  auto port = FreePort();
  ASSERT_TRUE(port.ok());
  EXPECT_TRUE(ConnectionRefused("127.0.0.1", *port, 1000));

  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(listen(fd, 1), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  EXPECT_FALSE(ConnectionRefused("127.0.0.1", ntohs(addr.sin_port), 1000));
  close(fd);
}

}  // namespace
}  // namespace pgshift
