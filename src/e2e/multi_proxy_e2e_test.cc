// Several pgshift-proxy instances serving one route (issue 16): three real
// proxies, a ledger writer through each, one migration whose router lists
// all three. One instance is killed inside the cutover's hold and started
// again after the switch with the config it had (the route on the source);
// pgshiftd repoints it. Every acknowledged row is on the target exactly
// once, the two instances that stayed up saw no error, and every instance
// ends on the target.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>

#include <chrono>
#include <thread>

#include "common/clock.h"
#include "common/process.h"
#include "e2e/e2e_fixture.h"

namespace pgshift::e2e {
namespace {

constexpr int kInstances = 3;
constexpr int kKilled = 1;  // the instance killed inside the hold
constexpr int64_t kHeldPollMs = 1;
constexpr int64_t kStartBoundMs = 15000;
constexpr int64_t kReconcileBoundMs = 60000;  // safety nets, not performance claims
constexpr int64_t kPollMs = 50;

class MultiProxyE2E : public SandboxTest {
 protected:
  void SetUp() override {
    SandboxTest::SetUp();
    if (HasFatalFailure()) return;
    // Instance 0 is the sandbox's proxy; the others run its config on ports of their own.
    auto text = ReadFile(sb_->dir() + "/proxy.json");
    ASSERT_TRUE(text.ok()) << text.status().ToString();
    const json base = json::parse(*text);
    ports_.push_back({sb_->proxy_port(), AdminPort(base)});
    for (int i = 1; i < kInstances; i++) {
      auto port = FreePort();
      auto admin = FreePort();
      ASSERT_TRUE(port.ok() && admin.ok());
      json cfg = base;
      cfg["listen"] = "127.0.0.1:" + std::to_string(*port);
      cfg["admin_listen"] = "127.0.0.1:" + std::to_string(*admin);
      const std::string path = sb_->dir() + "/proxy-" + std::to_string(i) + ".json";
      ASSERT_TRUE(WriteFileAtomic(path, cfg.dump(2)).ok());
      ports_.push_back({*port, *admin});
      pids_.push_back(-1);
      ASSERT_TRUE(StartInstance(i).ok());
    }
  }
  void TearDown() override {
    if (HasFailure()) {
      for (int i = 1; i < kInstances; i++)
        PrintTail("proxy " + std::to_string(i) + " log", Log(i), kRouterLogTail);
    }
    writers_.clear();
    for (pid_t& pid : pids_) {
      if (pid > 0) StopChild(pid, SIGTERM, 5000);
      pid = -1;
    }
    SandboxTest::TearDown();
  }

  static int AdminPort(const json& cfg) {
    const std::string a = cfg.value("admin_listen", "");
    return std::stoi(a.substr(a.rfind(':') + 1));
  }
  std::string Config(int i) const {
    return sb_->dir() + (i == 0 ? "/proxy.json" : "/proxy-" + std::to_string(i) + ".json");
  }
  std::string Log(int i) const { return sb_->dir() + "/proxy-" + std::to_string(i) + ".log"; }
  std::string AdminUrl(int i) const {
    return "http://127.0.0.1:" + std::to_string(ports_[i].admin);
  }

  // Starts instance i (not 0) from its config file as it left it.
  Status StartInstance(int i) {
    const std::string bin = PGSHIFT_PROXY_PATH;
    PGSHIFT_ASSIGN_OR_RETURN(
        pids_[i - 1],
        DefaultRunner().Spawn({.argv = {bin, "--config", Config(i)}, .output_file = Log(i)}));
    const int64_t deadline = MonotonicMs() + kStartBoundMs;
    while (!PortOpen("127.0.0.1", ports_[i].admin) || !PortOpen("127.0.0.1", ports_[i].client)) {
      if (ChildExited(pids_[i - 1])) return Unavailable("pgshift-proxy exited; see " + Log(i));
      if (MonotonicMs() > deadline) return Timeout("pgshift-proxy did not start");
      std::this_thread::sleep_for(std::chrono::milliseconds(kPollMs));
    }
    return Status::OK();
  }

  // GET /routes/app on instance i; null when it does not answer.
  json Route(int i) const {
    httplib::Client cli(AdminUrl(i));
    cli.set_connection_timeout(std::chrono::seconds(2));
    auto res = cli.Get("/routes/app");
    if (!res || res->status != 200) return nullptr;
    return json::parse(res->body, nullptr, false);
  }
  int UpstreamPort(int i) const {
    json r = Route(i);
    return r.is_object() ? r["upstream"].value("port", 0) : 0;
  }

  // The sandbox's client conninfo, through instance i.
  std::string ConninfoThrough(int i) const {
    std::string c = sb_->AppConninfo();
    const std::string from = "port=" + std::to_string(sb_->proxy_port());
    return c.replace(c.find(from), from.size(), "port=" + std::to_string(ports_[i].client));
  }

  bool HasEvent(const std::string& id, const std::string& needle) const {
    auto events = sb_->Api("GET", "/v1/migrations/" + id + "/events");
    if (!events.ok()) return false;
    for (const auto& e : (*events)["body"]["events"])
      if (e.value("message", "").find(needle) != std::string::npos) return true;
    return false;
  }

  struct Ports {
    int client = 0;
    int admin = 0;
  };
  std::vector<Ports> ports_;
  std::vector<pid_t> pids_;  // instances 1.. (0 is the sandbox's)
};

TEST_F(MultiProxyE2E, InstanceKilledInTheHoldIsRepointedAfterTheSwitchNothingLost) {
  const int64_t started = MonotonicMs();
  const int source_port = sb_->source().spec().port;
  for (int i = 0; i < kInstances; i++) {
    writers_.push_back(std::make_unique<load::LedgerWriter>(ConninfoThrough(i), i + 1));
    writers_.back()->Start();
  }
  json instances = json::array();
  for (int i = 0; i < kInstances; i++) instances.push_back({{"admin_url", AdminUrl(i)}});
  json spec = sb_->MigrationSpec({{"auto_cutover", true},
                                  {"auto_finalize", false},
                                  {"sustain_seconds", 1},
                                  {"verify_seconds", 1},
                                  {"poll_ms", 100},
                                  {"hold_lease_ms", 3000}});
  spec["router"] = {{"type", "proxy"}, {"route", "app"}, {"instances", instances}};
  auto created = sb_->Api("POST", "/v1/migrations", spec.dump());
  ASSERT_TRUE(created.ok());
  ASSERT_EQ((*created)["status"], 201) << (*created)["body"].dump();
  const std::string id = (*created)["body"].value("id", "");

  // Inside the hold: kill -9 one instance (it saved no switch, so it comes
  // back on the source).
  const int64_t hold_deadline = MonotonicMs() + kMigrationBoundMs;
  while (true) {
    json r = Route(kKilled);
    if (r.is_object() && r.value("held", false)) break;
    ASSERT_LT(MonotonicMs(), hold_deadline) << "the route was never held";
    std::this_thread::sleep_for(std::chrono::milliseconds(kHeldPollMs));
  }
  StopChild(pids_[kKilled - 1], SIGKILL, 5000);
  pids_[kKilled - 1] = -1;

  auto switched = sb_->WaitFor(
      id, [](const json& m) { return Terminal(m) || m["result"].contains("switched_at_ms"); },
      kMigrationBoundMs);
  ASSERT_TRUE(switched.ok()) << switched.status().ToString();
  ASSERT_EQ((*switched)["phase"], "verify") << switched->dump(2);
  for (int i = 0; i < kInstances; i++) {
    if (i != kKilled) {
      EXPECT_EQ(UpstreamPort(i), sb_->target_port()) << "instance " << i;
    }
  }
  // The status shows the dead instance as unreachable. It comes back once
  // the health window has closed, so that its clients' errors against the
  // fenced source (until it is repointed) are not judged as the target's.
  auto seen_down = sb_->WaitFor(
      id,
      [](const json& m) {
        const json& list = m["progress"].value("route_instances", json::array());
        return list.size() == kInstances && list[kKilled].value("reachable", true) == false &&
               m["result"].value("verified", false);
      },
      kReconcileBoundMs);
  ASSERT_TRUE(seen_down.ok()) << seen_down.status().ToString();

  // Back with the config it had: on the source, whose writes the fence refuses.
  ASSERT_TRUE(StartInstance(kKilled).ok());
  const int64_t restarted = MonotonicMs();
  // pgshiftd may repoint it before this thread looks, so where it came back
  // is read from the repoint's event below.
  while (UpstreamPort(kKilled) != sb_->target_port()) {
    ASSERT_LT(MonotonicMs() - restarted, kReconcileBoundMs) << "never repointed";
    std::this_thread::sleep_for(std::chrono::milliseconds(kPollMs));
  }
  const int64_t repointed_ms = MonotonicMs() - restarted;
  // Its writer commits again, now on the target.
  const int64_t before = writers_[kKilled]->Stats().committed;
  while (writers_[kKilled]->Stats().committed <= before) {
    ASSERT_LT(MonotonicMs() - restarted, kReconcileBoundMs) << "no writes through it";
    std::this_thread::sleep_for(std::chrono::milliseconds(kPollMs));
  }

  auto fin = sb_->Api("POST", "/v1/migrations/" + id + "/finalize", "{}");
  ASSERT_TRUE(fin.ok());
  auto m = sb_->WaitFor(id, Terminal, kMigrationBoundMs);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ((*m)["phase"], "finalized") << m->dump(2);
  EXPECT_GE((*m)["result"].value("route_repoints", 0), 1);
  EXPECT_TRUE(HasEvent(id, "router instance " + AdminUrl(kKilled) +
                               " routed to 127.0.0.1:" + std::to_string(source_port) + ", not "))
      << "it came back on the source, as it was killed before its switch";
  const json& list = (*m)["progress"]["route_instances"];
  ASSERT_EQ(list.size(), static_cast<size_t>(kInstances));
  const std::string target = "127.0.0.1:" + std::to_string(sb_->target_port());
  for (const auto& i : list) {
    EXPECT_TRUE(i.value("reachable", false)) << i.dump();
    EXPECT_EQ(i.value("upstream", ""), target) << i.dump();
  }

  std::this_thread::sleep_for(std::chrono::seconds(1));  // writes go on, on the target
  StopWriters();
  for (int i = 0; i < kInstances; i++) {
    EXPECT_EQ(UpstreamPort(i), sb_->target_port()) << "instance " << i << " ends on the target";
    auto st = writers_[i]->Stats();
    if (i != kKilled) {
      EXPECT_EQ(st.failed, 0) << (st.errors.empty() ? "" : st.errors.front());
      EXPECT_EQ(st.uncertain, 0) << (st.errors.empty() ? "" : st.errors.front());
    }
    EXPECT_GT(st.committed, kMinCommittedPerWriter);
    auto check = load::CheckLedger(sb_->TargetConninfo(), writers_[i]->writer_id(),
                                   writers_[i]->Acknowledged());
    ASSERT_TRUE(check.ok()) << check.status().ToString();
    EXPECT_EQ(check->lost, 0) << "instance " << i;
    EXPECT_EQ(check->duplicated, 0) << "instance " << i;
    EXPECT_EQ(check->found, check->acknowledged);
  }
  std::cerr << "E2E multi-proxy: repointed " << repointed_ms << " ms after the restart; "
            << (MonotonicMs() - started) / 1000 << " s in all\n";
}

}  // namespace
}  // namespace pgshift::e2e
