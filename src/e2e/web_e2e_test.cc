// Browser end to end (`make e2e-web`): pgshiftd's web page in Debian's
// headless Chromium, driven by web/test/e2e.cjs through playwright-core,
// against a real pgshiftd whose inventory holds the sandbox's database "app"
// (a real source behind pgshift-proxy). A member of the owning team signs in
// with a bearer token, migrates "app" from the page, approves the cutover and
// the finalize, and sees `finalized`; a member of another team gets no button
// and is refused (403); no secret reaches the browser. The script's
// screenshots stay in PGSHIFT_WEB_SCREENSHOTS; its last line is the summary
// `E2E web {...}` that `make e2e-web` prints last.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstring>
#include <iostream>

#include "common/os.h"
#include "common/process.h"
#include "demo/sandbox.h"

namespace pgshift {
namespace {

using json = nlohmann::json;

constexpr const char* kOwnerToken = "web-owner-token-0123456789";
constexpr const char* kOtherToken = "web-other-token-0123456789";
constexpr const char* kResultPrefix = "E2E web ";
// Safety bounds, not performance assertions: the script's own deadline, and
// a later one at which the test kills it.
constexpr int64_t kScriptDeadlineMs = 360000;
constexpr int64_t kKillAfterMs = kScriptDeadlineMs + 60000;
// The flow takes a screenshot at sign-in, the rejected token, the databases,
// each confirmation, each phase and state, the audit log and the other team's views.
constexpr int kMinScreenshots = 12;

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
                                            " web-stranger\n")
                    .ok());
    ASSERT_EQ(chmod(tokens.c_str(), 0600), 0);
    ASSERT_TRUE(WriteFileAtomic(files_ + "/access", std::string("teams:\n  ") + demo::kSandboxTeam +
                                                        ": [web-owner]\n  search: [web-stranger]\n")
                    .ok());
    auto sb =
        demo::Sandbox::Start({.router = "proxy",
                              .pgshiftd_path = PGSHIFTD_PATH,
                              .proxy_path = PGSHIFT_PROXY_PATH,
                              .inventory = true,
                              .pgshiftd_args = {"--tokens", tokens, "--access", files_ + "/access"},
                              .api_token = kOwnerToken});
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

  std::unique_ptr<demo::Sandbox> sb_;
  std::string files_;
};

TEST_F(WebE2E, TeamMigratesFromThePageAndAnotherTeamCannot) {
  // What must never reach the browser: the source's admin password, the
  // application's password the proxy holds, and the other caller's token.
  const json secrets = {sb_->admin_secret(), sb_->app_password(), kOwnerToken, kOtherToken};
  ProcessSpec spec{
      .argv = {PGSHIFT_NODE, PGSHIFT_WEB_TEST_SCRIPT},
      .extra_env = {"NODE_PATH=" PGSHIFT_NODE_MODULES, "E2E_URL=" + sb_->ApiUrl(),
                    std::string("E2E_TOKEN=") + kOwnerToken,
                    std::string("E2E_OTHER_TOKEN=") + kOtherToken, "E2E_DATABASE=app",
                    "E2E_OUT=" PGSHIFT_WEB_SCREENSHOTS, "E2E_SECRETS=" + secrets.dump(),
                    "E2E_TIMEOUT_MS=" + std::to_string(kScriptDeadlineMs)},
      .timeout_ms = kKillAfterMs,
      .on_output = [](const std::string& chunk) { std::cout << chunk << std::flush; },
  };
  auto run = DefaultRunner().Run(spec);
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  EXPECT_FALSE(run->timed_out);
  EXPECT_EQ(run->exit_code, 0) << "the browser test reported problems (PROBLEM: lines above)";
  auto summary = Summary(run->output);
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

}  // namespace
}  // namespace pgshift
