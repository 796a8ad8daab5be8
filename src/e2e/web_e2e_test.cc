// Browser end to end (`make e2e-web`): pgshiftd's web page in Debian's
// headless Chromium, driven by web/test/e2e.cjs through playwright-core,
// against a real pgshiftd whose inventory holds the sandbox's database "app"
// (a real source behind pgshift-proxy). A member of the owning team signs in
// with a bearer token, migrates "app" from the page, approves the cutover and
// the finalize, and sees `finalized`; a member of another team gets no button
// and is refused (403); no secret reaches the browser. Then, on a sandbox of
// its own, an operator's fleet run migrates "app" and the operator reads its
// report on the fleet pages (result, phase timings, cutover hold, no
// rollback). The script's screenshots stay in PGSHIFT_WEB_SCREENSHOTS; its
// last line is the summary `E2E web {...}` that `make e2e-web` prints last.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstring>
#include <iostream>
#include <thread>

#include "common/clock.h"
#include "common/os.h"
#include "common/process.h"
#include "demo/sandbox.h"

namespace pgshift {
namespace {

using json = nlohmann::json;

constexpr const char* kOwnerToken = "web-owner-token-0123456789";
constexpr const char* kOtherToken = "web-other-token-0123456789";
constexpr const char* kOperatorToken = "web-operator-token-0123456789";
constexpr const char* kResultPrefix = "E2E web ";
// Safety bounds, not performance assertions: the script's own deadline, and
// a later one at which the test kills it.
constexpr int64_t kScriptDeadlineMs = 360000;
constexpr int64_t kKillAfterMs = kScriptDeadlineMs + 60000;
// The flow takes a screenshot at sign-in, the rejected token, the databases,
// each confirmation, each phase and state, the audit log and the other team's views.
constexpr int kMinScreenshots = 12;
// The fleet flow's: the list of runs and the run's report.
constexpr int kMinFleetScreenshots = 2;
constexpr int64_t kPollMs = 500;

// The last "E2E web {...}" line of the script's output, parsed.
Result<json> Summary(const std::string& output) {
  auto at = output.rfind(kResultPrefix);
  if (at == std::string::npos) return NotFound("the browser test printed no summary line");
  std::string line = output.substr(at);
  line = line.substr(0, line.find('\n'));
  json j = json::parse(line.substr(std::strlen(kResultPrefix)), nullptr, false);
  if (j.is_discarded()) return InvalidArgument("unparsable summary: " + line);
  return j;
}

class WebE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = MakeTempDir("pgshift-web-e2e");
    ASSERT_TRUE(dir.ok()) << dir.status().ToString();
    files_ = *dir;
    const std::string tokens = files_ + "/tokens";
    ASSERT_TRUE(WriteFileAtomic(tokens, std::string(kOwnerToken) + " web-owner\n" + kOtherToken +
                                            " web-stranger\n" + kOperatorToken + " web-operator\n")
                    .ok());
    ASSERT_EQ(chmod(tokens.c_str(), 0600), 0);
    ASSERT_TRUE(
        WriteFileAtomic(files_ + "/access", std::string("operators: [web-operator]\nteams:\n  ") +
                                                demo::kSandboxTeam +
                                                ": [web-owner]\n  search: [web-stranger]\n")
            .ok());
    auto sb =
        demo::Sandbox::Start({.router = "proxy",
                              .pgshiftd_path = PGSHIFTD_PATH,
                              .proxy_path = PGSHIFT_PROXY_PATH,
                              .inventory = true,
                              .pgshiftd_args = {"--tokens", tokens, "--access", files_ + "/access"},
                              .api_token = ApiToken()});
    ASSERT_TRUE(sb.ok()) << sb.status().ToString();
    sb_ = std::move(sb).value();
  }
  void TearDown() override {
    if (HasFailure() && sb_) {
      auto log = ReadFile(sb_->PgshiftdLog());
      if (log.ok())
        std::cerr << "---- pgshiftd log ----\n"
                  << log->substr(log->size() > 6000 ? log->size() - 6000 : 0);
    }
    sb_.reset();
    if (!files_.empty()) (void)RemoveTree(files_);
  }

  // The token the sandbox's Api() sends.
  virtual const char* ApiToken() const { return kOwnerToken; }
  // Runs web/test/e2e.cjs with `env` added; its parsed summary line.
  Result<json> RunScript(std::vector<std::string> env) {
    env.insert(env.end(), {"NODE_PATH=" PGSHIFT_NODE_MODULES, "E2E_URL=" + sb_->ApiUrl(),
                           "E2E_DATABASE=app", "E2E_OUT=" PGSHIFT_WEB_SCREENSHOTS,
                           "E2E_TIMEOUT_MS=" + std::to_string(kScriptDeadlineMs)});
    ProcessSpec spec{
        .argv = {PGSHIFT_NODE, PGSHIFT_WEB_TEST_SCRIPT},
        .extra_env = std::move(env),
        .timeout_ms = kKillAfterMs,
        .on_output = [](const std::string& chunk) { std::cout << chunk << std::flush; },
    };
    auto run = DefaultRunner().Run(spec);
    if (!run.ok()) return run.status();
    EXPECT_FALSE(run->timed_out);
    EXPECT_EQ(run->exit_code, 0) << "the browser test reported problems (PROBLEM: lines above)";
    return Summary(run->output);
  }

  std::unique_ptr<demo::Sandbox> sb_;
  std::string files_;
};

class WebFleetE2E : public WebE2E {
 protected:
  const char* ApiToken() const override { return kOperatorToken; }
};

TEST_F(WebE2E, TeamMigratesFromThePageAndAnotherTeamCannot) {
  // What must never reach the browser: the source's admin password, the
  // application's password the proxy holds, and the other caller's token.
  const json secrets = {sb_->admin_secret(), sb_->app_password(), kOwnerToken, kOtherToken};
  auto summary =
      RunScript({std::string("E2E_TOKEN=") + kOwnerToken,
                 std::string("E2E_OTHER_TOKEN=") + kOtherToken, "E2E_SECRETS=" + secrets.dump()});
  ASSERT_TRUE(summary.ok()) << summary.status().ToString();
  EXPECT_EQ((*summary)["finalized"], true);
  EXPECT_GE((*summary)["screenshots"].get<int>(), kMinScreenshots);
  EXPECT_EQ((*summary)["unauthenticated_status"], 401);
  EXPECT_EQ((*summary)["wrong_team_status"], 403);
  EXPECT_EQ((*summary)["secrets_leaked"], 0);
  // The API agrees: "app" has a finalized migration.
  auto dbs = sb_->Api("GET", "/v1/databases");
  ASSERT_TRUE(dbs.ok()) << dbs.status().ToString();
  bool finalized = false;
  for (const auto& db : (*dbs)["body"].value("databases", json::array())) {
    if (db["name"] != "app") continue;
    for (const auto& m : db["migrations"]) finalized = finalized || m["phase"] == "finalized";
  }
  EXPECT_TRUE(finalized) << dbs->dump();
}

TEST_F(WebFleetE2E, AnOperatorReadsAFleetRunsReport) {
  const json request = {
      {"databases", {"app"}},
      {"approve_outside_window", true},
      {"options", {{"sustain_seconds", 1}, {"verify_seconds", 1}, {"poll_ms", 100}}}};
  auto created = sb_->Api("POST", "/v1/fleet/runs", request.dump());
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  ASSERT_EQ((*created)["status"], 201) << (*created)["body"].dump();
  const std::string id = (*created)["body"]["id"];
  json run;
  const int64_t deadline = MonotonicMs() + kScriptDeadlineMs;
  while (MonotonicMs() < deadline) {
    auto got = sb_->Api("GET", "/v1/fleet/runs/" + id);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    run = (*got)["body"];
    if (run.value("status", "") != "running") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(kPollMs));
  }
  ASSERT_EQ(run.value("status", ""), "completed") << run.dump();

  const json secrets = {sb_->admin_secret(), sb_->app_password(), kOperatorToken};
  auto summary = RunScript({"E2E_MODE=fleet", std::string("E2E_TOKEN=") + kOperatorToken,
                            "E2E_FLEET_RUN=" + id, "E2E_SECRETS=" + secrets.dump()});
  ASSERT_TRUE(summary.ok()) << summary.status().ToString();
  EXPECT_EQ((*summary)["fleet_status"], "succeeded");
  EXPECT_GE((*summary)["fleet_phases"].get<int>(), 8);
  EXPECT_EQ((*summary)["fleet_rolled_back"], "no");
  EXPECT_GE((*summary)["screenshots"].get<int>(), kMinFleetScreenshots);
  EXPECT_EQ((*summary)["secrets_leaked"], 0);
}

}  // namespace
}  // namespace pgshift
