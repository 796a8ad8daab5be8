// The upstream pool's bookkeeping (upstream_pool.h) on socket pairs and a
// clock the test moves: keys, caps, the idle timeout, the route's hold and
// generation, dead backends, and the config that sets it up.
#include "proxy/upstream_pool.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <map>

namespace pgshift::proxy {
namespace {

class UpstreamPoolTest : public ::testing::Test {
 protected:
  // A backend whose other end the test keeps (peer_[pid]).
  std::unique_ptr<IdleBackend> Backend(uint32_t pid) {
    int sv[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    auto b = std::make_unique<IdleBackend>();
    b->fd = OwnedFd(sv[0]);
    b->protocol = asio::generic::stream_protocol(AF_UNIX, 0);
    b->backend_pid = pid;
    b->parameters = {{"application_name", "a"}};
    peer_[pid] = OwnedFd(sv[1]);
    return b;
  }
  // Whether the pool closed backend `pid`: its peer reads the Terminate, then EOF.
  bool Closed(uint32_t pid) {
    char buf[16];
    ssize_t n = ::recv(peer_[pid].get(), buf, sizeof(buf), MSG_DONTWAIT);
    if (n == 5 && buf[0] == 'X') n = ::recv(peer_[pid].get(), buf, sizeof(buf), MSG_DONTWAIT);
    return n == 0;
  }
  PoolKey Key(std::string app = "a", uint64_t generation = 0) {
    return PoolKey{
        .route = "app",
        .generation = generation,
        .upstream = rc_.upstream,
        .startup_params = {{"user", "u"}, {"database", "app"}, {"application_name", app}}};
  }
  std::unique_ptr<UpstreamPool> Pool(UpstreamPoolConfig cfg) {
    return std::make_unique<UpstreamPool>(
        cfg, [this](PoolEvent e, int64_t idle) { events_[e]++, idle_ = idle; },
        [this] { return now_; });
  }

  RouteConfig rc_{.name = "app", .database = "app", .upstream = {.host = "h", .port = 1}};
  Route route_{rc_};
  int64_t now_ = 1000;
  std::map<PoolEvent, int> events_;
  int64_t idle_ = 0;
  std::map<uint32_t, OwnedFd> peer_;
  UpstreamPoolConfig cfg_{.max_idle = 4, .max_idle_per_key = 2, .idle_timeout_ms = 1000};
};

TEST_F(UpstreamPoolTest, ATakeMatchesTheExactKeyAndGetsTheLatestParkedFirst) {
  auto pool = Pool(cfg_);
  EXPECT_EQ(pool->Take(Key()), nullptr);
  EXPECT_EQ(events_[PoolEvent::kMiss], 1);
  pool->Park(route_, Key(), Backend(1));
  pool->Park(route_, Key(), Backend(2));
  pool->Park(route_, Key("b"), Backend(3));
  EXPECT_EQ(idle_, 3);
  EXPECT_EQ(pool->Take(Key("c")), nullptr) << "another application_name";
  PoolKey other_user = Key();
  other_user.startup_params[0].second = "v";
  EXPECT_EQ(pool->Take(other_user), nullptr);
  PoolKey other_upstream = Key();
  other_upstream.upstream.port = 2;
  EXPECT_EQ(pool->Take(other_upstream), nullptr);
  auto b = pool->Take(Key());
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->backend_pid, 2u);
  EXPECT_EQ(b->parameters.front().second, "a");
  EXPECT_EQ(pool->Take(Key())->backend_pid, 1u);
  EXPECT_EQ(pool->Take(Key()), nullptr);
  EXPECT_EQ(pool->Take(Key("b"))->backend_pid, 3u);
  EXPECT_EQ(events_[PoolEvent::kHit], 3);
  EXPECT_EQ(events_[PoolEvent::kMiss], 5);
  EXPECT_EQ(events_[PoolEvent::kParked], 3);
  EXPECT_EQ(idle_, 0);
  EXPECT_FALSE(Closed(2)) << "a backend handed out stays open";
}

TEST_F(UpstreamPoolTest, CapsPerKeyAndInAllCloseWhatDoesNotFit) {
  auto pool = Pool(cfg_);
  pool->Park(route_, Key(), Backend(1));
  pool->Park(route_, Key(), Backend(2));
  pool->Park(route_, Key(), Backend(3));  // over the key's cap
  EXPECT_TRUE(Closed(3));
  EXPECT_FALSE(Closed(1));
  pool->Park(route_, Key("b"), Backend(4));
  pool->Park(route_, Key("c"), Backend(5));
  pool->Park(route_, Key("d"), Backend(6));  // over the total cap
  EXPECT_TRUE(Closed(6));
  EXPECT_EQ(events_[PoolEvent::kDroppedFull], 2);
  EXPECT_EQ(pool->idle(), 4);
  EXPECT_EQ(pool->Take(Key("d")), nullptr);
}

TEST_F(UpstreamPoolTest, IdleBackendsCloseAfterTheTimeout) {
  auto pool = Pool(cfg_);
  pool->Park(route_, Key(), Backend(1));
  now_ += 500;
  pool->Park(route_, Key("b"), Backend(2));
  now_ += 500;
  pool->Expire();
  EXPECT_TRUE(Closed(1));
  EXPECT_FALSE(Closed(2));
  EXPECT_EQ(events_[PoolEvent::kDroppedIdleTimeout], 1);
  now_ += 499;
  EXPECT_EQ(pool->Take(Key("b"))->backend_pid, 2u);
  pool->Park(route_, Key(), Backend(3));
  now_ += 1000;
  EXPECT_EQ(pool->Take(Key()), nullptr) << "expired on the way, before the sweep";
  EXPECT_TRUE(Closed(3));
  EXPECT_EQ(events_[PoolEvent::kDroppedIdleTimeout], 2);
  EXPECT_EQ(idle_, 0);
}

TEST_F(UpstreamPoolTest, AHoldOrASwitchFlushesTheRouteAndParksNothingForIt) {
  auto pool = Pool(cfg_);
  route_.SetParkedFlush([&] { pool->FlushRoute("app"); });
  PoolKey elsewhere = Key();
  elsewhere.route = "other";
  pool->Park(route_, Key(), Backend(1));
  pool->Park(route_, elsewhere, Backend(2));
  ASSERT_TRUE(route_.Hold(100).ok());
  EXPECT_TRUE(Closed(1)) << "the hold flushed it";
  EXPECT_FALSE(Closed(2)) << "another route's";
  pool->Park(route_, Key(), Backend(3));
  EXPECT_TRUE(Closed(3)) << "nothing parks while the route is held";
  route_.Release();
  pool->Park(route_, Key(), Backend(4));
  EXPECT_EQ(route_.generation(), 0u);
  ASSERT_TRUE(route_.Repoint({.host = "h2", .port = 1}));
  EXPECT_TRUE(Closed(4)) << "the switch flushed it";
  pool->Park(route_, Key(), Backend(5));
  EXPECT_TRUE(Closed(5)) << "a backend of the old generation is not parked";
  EXPECT_EQ(pool->Take(Key("a", 1)), nullptr);
  EXPECT_EQ(events_[PoolEvent::kDroppedRoute], 4);
  EXPECT_EQ(pool->idle(), 1);
}

TEST_F(UpstreamPoolTest, ADeadBackendIsSkippedForTheNextLiveOne) {
  auto pool = Pool(cfg_);
  pool->Park(route_, Key(), Backend(1));
  pool->Park(route_, Key(), Backend(2));
  peer_.erase(2);  // the server closed it
  auto b = pool->Take(Key());
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->backend_pid, 1u);
  pool->Park(route_, Key(), Backend(3));
  ASSERT_EQ(::send(peer_[3].get(), "E", 1, 0), 1);  // a FATAL on its way
  EXPECT_EQ(pool->Take(Key()), nullptr);
  EXPECT_EQ(events_[PoolEvent::kDroppedDead], 2);
}

TEST_F(UpstreamPoolTest, ConfigTurnsItOffAndParsesStrictly) {
  EXPECT_TRUE(UpstreamPoolConfig{}.enabled()) << "on by default";
  EXPECT_FALSE(Pool({.max_idle = 0})->enabled());
  nlohmann::json j = {{"upstream_pool", {{"max_idle", 0}, {"idle_timeout_ms", 5}}}};
  auto c = ParseProxyConfig(j);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_FALSE(c->upstream_pool.enabled());
  EXPECT_EQ(c->upstream_pool.idle_timeout_ms, 5);
  EXPECT_EQ(c->upstream_pool.max_idle_per_key, kDefaultPoolMaxIdlePerKey);
  auto back = ParseProxyConfig(ToJson(*c));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->upstream_pool.idle_timeout_ms, 5);
  EXPECT_FALSE(ParseProxyConfig({{"upstream_pool", {{"max_idel", 1}}}}).ok());
  EXPECT_FALSE(ParseProxyConfig({{"upstream_pool", {{"max_idle", -1}}}}).ok());
}

}  // namespace
}  // namespace pgshift::proxy
