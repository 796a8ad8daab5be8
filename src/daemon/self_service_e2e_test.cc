// Self-service end to end: a real pgshiftd with an inventory (registry +
// 0600 secrets), bearer tokens, an access file and a webhook, over a real
// source behind pgshift-proxy. A team member migrates "app" by name and cuts
// over, an operator finalizes; /metrics carries the lag series while the
// replica streams; the audit log names who did what; the webhook hears the
// phase changes; and the source's password appears in no API answer and no
// line of pgshiftd's log.
#include <gtest/gtest.h>
#include <httplib.h>
#include <sys/stat.h>

#include <mutex>
#include <regex>
#include <set>

#include "common/clock.h"
#include "common/os.h"
#include "demo/sandbox.h"

namespace pgshift {
namespace {

using json = nlohmann::json;

constexpr const char* kOwnerToken = "owner-token-0123456789abc";
constexpr const char* kOperatorToken = "operator-token-0123456789";
constexpr const char* kOtherToken = "other-team-token-01234567";
constexpr int64_t kBoundMs = 240000;  // safety bound, not a performance assertion

// Collects webhook notifications.
class Hook {
 public:
  Hook() {
    server_.Post("/hook", [this](const httplib::Request& req, httplib::Response& res) {
      std::lock_guard lock(mu_);
      got_.push_back(json::parse(req.body, nullptr, false));
      res.status = 204;
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
  }
  ~Hook() {
    server_.stop();
    thread_.join();
  }
  std::string Url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/hook"; }
  std::vector<json> Got() {
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

class SelfServiceE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = MakeTempDir("pgshift-selfservice");
    ASSERT_TRUE(dir.ok());
    files_ = *dir;
    ASSERT_TRUE(WriteFileAtomic(files_ + "/tokens", std::string(kOwnerToken) + " app-owner\n" +
                                                        kOperatorToken + " ops\n" + kOtherToken +
                                                        " stranger\n")
                    .ok());
    chmod((files_ + "/tokens").c_str(), 0600);
    ASSERT_TRUE(WriteFileAtomic(files_ + "/access", std::string("operators: [ops]\nteams:\n  ") +
                                                        demo::kSandboxTeam +
                                                        ": [app-owner]\n  other: [stranger]\n")
                    .ok());
    auto sb = demo::Sandbox::Start({.router = "proxy",
                                    .pgshiftd_path = PGSHIFTD_PATH,
                                    .proxy_path = PGSHIFT_PROXY_PATH,
                                    .inventory = true,
                                    .pgshiftd_args = {"--tokens", files_ + "/tokens", "--access",
                                                      files_ + "/access", "--webhook", hook_.Url()},
                                    .api_token = kOwnerToken});
    ASSERT_TRUE(sb.ok()) << sb.status().ToString();
    sb_ = std::move(*sb);
  }
  void TearDown() override {
    if (HasFailure() && sb_) {
      auto log = ReadFile(sb_->PgshiftdLog());
      if (log.ok())
        std::cerr << "---- pgshiftd log ----\n"
                  << log->substr(log->size() > 6000 ? log->size() - 6000 : 0);
    }
    sb_.reset();
    (void)RemoveTree(files_);
  }
  // {status, body} as `token`; every answer is kept for the leak check.
  std::pair<int, json> Call(const char* token, const std::string& method, const std::string& path,
                            const std::string& body = "") {
    httplib::Client c("127.0.0.1", std::stoi(sb_->ApiUrl().substr(sb_->ApiUrl().rfind(':') + 1)));
    c.set_read_timeout(30);
    httplib::Headers h;
    if (token) h.emplace("Authorization", std::string("Bearer ") + token);
    auto r = method == "GET" ? c.Get(path.c_str(), h)
                             : c.Post(path.c_str(), h, body, "application/json");
    EXPECT_TRUE(r) << method << " " << path;
    if (!r) return {0, nullptr};
    answers_ += r->body;
    return {r->status, json::parse(r->body, nullptr, false)};
  }
  json WaitFor(const std::string& id, const std::function<bool(const json&)>& pred) {
    auto m = sb_->WaitFor(id, pred, kBoundMs);
    EXPECT_TRUE(m.ok()) << m.status().ToString();
    if (m.ok()) answers_ += m->dump();
    return m.ok() ? *m : json::object();
  }

  Hook hook_;
  std::string files_;
  std::unique_ptr<demo::Sandbox> sb_;
  std::string answers_;
};

TEST_F(SelfServiceE2E, TeamMigratesByNameWithMetricsAuditWebhookAndNoLeak) {
  auto [st, dbs] = Call(kOwnerToken, "GET", "/v1/databases");
  ASSERT_EQ(st, 200) << dbs.dump();
  ASSERT_EQ(dbs["databases"].size(), 1u) << dbs.dump();
  EXPECT_EQ(dbs["databases"][0]["router"]["type"], "proxy");
  EXPECT_EQ(dbs["databases"][0]["can_act"], true);
  EXPECT_EQ(Call(nullptr, "POST", "/v1/databases/app/migrations", "{}").first, 401);
  EXPECT_EQ(Call(kOtherToken, "POST", "/v1/databases/app/migrations", "{}").first, 403);

  auto [created_st, created] =
      Call(kOwnerToken, "POST", "/v1/databases/app/migrations",
           R"({"options":{"sustain_seconds":2,"verify_seconds":1,"poll_ms":100}})");
  ASSERT_EQ(created_st, 201) << created.dump();
  const std::string id = created["id"];
  EXPECT_EQ(created["database"], "app");
  EXPECT_EQ(created["spec"]["target"]["port"], sb_->target_port());

  // While the replica streams, /metrics has its lag series.
  const std::regex lag("pgshift_replication_lag_bytes\\{migration=\"" + id +
                       "\",database=\"app\"\\} [0-9.e+]+");
  bool lag_seen = false;
  const int64_t deadline = MonotonicMs() + kBoundMs;
  while (!lag_seen && MonotonicMs() < deadline) {
    httplib::Client c("127.0.0.1", std::stoi(sb_->ApiUrl().substr(sb_->ApiUrl().rfind(':') + 1)));
    auto r = c.Get("/metrics", {{"Authorization", std::string("Bearer ") + kOperatorToken}});
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200);
    lag_seen = std::regex_search(r->body, lag);
    if (!lag_seen) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  EXPECT_TRUE(lag_seen);

  json ready = WaitFor(id, [](const json& m) {
    return m["phase"] == "ready" || m["state"] == "failed" || m["state"] == "blocked";
  });
  ASSERT_EQ(ready["phase"], "ready") << ready.dump();
  EXPECT_EQ(Call(kOtherToken, "POST", "/v1/migrations/" + id + "/cutover").first, 403);
  auto [cut_st, cut] = Call(kOwnerToken, "POST", "/v1/migrations/" + id + "/cutover");
  ASSERT_EQ(cut_st, 202) << cut.dump();
  json verify = WaitFor(id, [](const json& m) {
    return m["phase"] == "verify" || m["state"] == "failed" || m["phase"] == "rolled_back";
  });
  ASSERT_EQ(verify["phase"], "verify") << verify.dump();
  EXPECT_NE(std::find(verify["actions"].begin(), verify["actions"].end(), "finalize"),
            verify["actions"].end());
  auto [fin_st, fin] = Call(kOperatorToken, "POST", "/v1/migrations/" + id + "/finalize");
  ASSERT_EQ(fin_st, 202) << fin.dump();
  json done = WaitFor(
      id, [](const json& m) { return m["phase"] == "finalized" || m["state"] == "failed"; });
  EXPECT_EQ(done["phase"], "finalized");

  auto [audit_st, audit] = Call(kOperatorToken, "GET", "/v1/audit");
  ASSERT_EQ(audit_st, 200);
  std::vector<std::string> who_what;
  for (const auto& e : audit["entries"]) {
    if (e["action"].get<std::string>().rfind("migration.", 0) == 0) {
      who_what.push_back(e["identity"].get<std::string>() + " " + e["action"].get<std::string>());
    }
  }
  EXPECT_EQ(who_what,
            (std::vector<std::string>{"app-owner migration.create", "app-owner migration.cutover",
                                      "ops migration.finalize"}));
  EXPECT_GE(audit["entries"].size(), 10u) << "the phase changes are joined in";
  EXPECT_TRUE(Call(kOtherToken, "GET", "/v1/audit").second["entries"].empty());

  // The webhook heard the phase changes (best effort, but nothing here fails).
  std::set<std::string> phases;
  for (int i = 0; i < 50 && !phases.count("finalized"); ++i) {
    phases.clear();
    for (const auto& n : hook_.Got()) {
      if (n.value("type", "") == "phase_changed") phases.insert(n.value("to", ""));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  for (const char* p : {"provision", "sync", "ready", "switch", "verify", "finalized"}) {
    EXPECT_TRUE(phases.count(p)) << "no webhook for phase " << p;
  }

  // The source's password never left pgshiftd.
  const std::string secret = sb_->admin_secret();
  ASSERT_FALSE(secret.empty());
  answers_ += Call(kOperatorToken, "GET", "/v1/migrations").second.dump();
  answers_ += Call(kOperatorToken, "GET", "/v1/migrations/" + id + "/events").second.dump();
  EXPECT_EQ(answers_.find(secret), std::string::npos) << "an API answer carries the secret";
  auto log = ReadFile(sb_->PgshiftdLog());
  ASSERT_TRUE(log.ok());
  EXPECT_EQ(log->find(secret), std::string::npos) << "pgshiftd's log carries the secret";
  for (const auto& n : hook_.Got()) EXPECT_EQ(n.dump().find(secret), std::string::npos);
  struct stat state {};
  ASSERT_EQ(stat((sb_->dir() + "/state.db").c_str(), &state), 0);
  EXPECT_EQ(state.st_mode & 0777, 0600u);
}

}  // namespace
}  // namespace pgshift
