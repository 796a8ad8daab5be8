// The webhook notifier against a local HTTP receiver and the fake service:
// phase changes and new findings are posted, what existed at start is not,
// a slow receiver never holds the watcher, and Stop() is bounded.
#include "api/notifier.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <chrono>
#include <mutex>

#include "common/clock.h"
#include "testing/fake_migration_service.h"

namespace pgshift::api {
namespace {

using nlohmann::json;

class Receiver {
 public:
  explicit Receiver(int delay_ms = 0) {
    server_.Post("/hook", [this, delay_ms](const httplib::Request& req, httplib::Response& res) {
      if (delay_ms) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
      std::lock_guard lock(mu_);
      got_.push_back(json::parse(req.body));
      res.status = 204;
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~Receiver() {
    server_.stop();
    thread_.join();
  }
  std::string Url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/hook"; }
  std::vector<json> WaitFor(size_t n) {
    for (int i = 0; i < 500; ++i) {
      {
        std::lock_guard lock(mu_);
        if (got_.size() >= n) return got_;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    std::lock_guard lock(mu_);
    return got_;
  }

 private:
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
  std::mutex mu_;
  std::vector<json> got_;
};

json Migration(const std::string& phase, json findings = json::array()) {
  return {{"id", "m-1"},
          {"name", "app"},
          {"phase", phase},
          {"state", "running"},
          {"findings", findings}};
}

json Event(const std::string& phase, const std::string& message) {
  return {{"at", "t"}, {"phase", phase}, {"kind", "info"}, {"message", message}};
}

TEST(NotifierTest, PostsPhaseChangesAndNewFindingsOnly) {
  Receiver rx;
  FakeMigrationService svc;
  svc.Put(Migration("sync"));
  svc.SetEvents("m-1", json::array({Event("preflight", "created"), Event("sync", "syncing")}));
  auto n = Notifier::Make(svc, {.url = rx.Url(), .links = [] {
                                  return std::map<std::string, std::string>{{"m-1", "app"}};
                                }});
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  (*n)->Start();
  (*n)->PollOnce();  // what exists at start is not announced
  svc.Put(Migration(
      "ready",
      json::array(
          {{{"id", "wal_rate"}, {"severity", "warning"}, {"subject", ""}, {"message", "slow"}},
           {{"id", "ok_thing"}, {"severity", "ok"}}})));
  svc.SetEvents("m-1", json::array({Event("preflight", "created"), Event("sync", "syncing"),
                                    Event("validate", "validating"), Event("ready", "ready")}));
  (*n)->PollOnce();
  (*n)->PollOnce();  // nothing new
  auto got = rx.WaitFor(3);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0]["type"], "phase_changed");
  EXPECT_EQ(got[0]["from"], "sync");
  EXPECT_EQ(got[0]["to"], "validate");
  EXPECT_EQ(got[0]["database"], "app");
  EXPECT_EQ(got[1]["to"], "ready");
  EXPECT_EQ(got[2]["type"], "finding");
  EXPECT_EQ(got[2]["severity"], "warning");
  EXPECT_EQ(got[2]["finding"], "wal_rate");
  std::this_thread::sleep_for(std::chrono::milliseconds(700));  // a watcher poll or more
  EXPECT_EQ(rx.WaitFor(3).size(), 3u);
  EXPECT_EQ((*n)->sent(), 3);
}

TEST(NotifierTest, ASlowReceiverNeverHoldsTheWatcherAndStopIsBounded) {
  Receiver rx(/*delay_ms=*/3000);
  FakeMigrationService svc;
  auto n = Notifier::Make(svc, {.url = rx.Url(), .timeout_ms = 200});
  ASSERT_TRUE(n.ok());
  (*n)->Start();
  (*n)->PollOnce();
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(svc.Create({{"name", "db" + std::to_string(i)}}).ok());
  }
  const int64_t start = MonotonicMs();
  (*n)->PollOnce();
  EXPECT_LT(MonotonicMs() - start, 150) << "polling does not wait for the webhook";
  const int64_t stop_start = MonotonicMs();
  (*n)->Stop();
  EXPECT_LT(MonotonicMs() - stop_start, 1500);
}

TEST(NotifierTest, BadUrlIsRefused) {
  FakeMigrationService svc;
  EXPECT_EQ(Notifier::Make(svc, {.url = "ftp://x"}).status().code(), Code::kInvalidArgument);
  EXPECT_TRUE(Notifier::Make(svc, {.url = "http://127.0.0.1:9"}).ok());
}

}  // namespace
}  // namespace pgshift::api
