// The self-service commands end to end through RunCli against a real
// ApiServer with authentication, an inventory and an audit store (the fake
// migration service underneath): credentials from flags, the environment
// and the config file; databases list/show, migrate NAME, whoami, audit;
// and clear refusals.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <set>
#include <sstream>

#include "api/api_test_util.h"
#include "api/http_server.h"
#include "auth/authenticator.h"
#include "cli/commands.h"
#include "cli/self_service.h"
#include "common/os.h"
#include "store/state_store.h"

namespace pgshift::cli {
namespace {

using nlohmann::json;

constexpr const char* kBobToken = "bob-token-0123456789ab";
constexpr const char* kCarolToken = "carol-token-0123456789";

struct CliRun {
  int code = -1;
  std::string out, err;
};

#define EXPECT_HAS(text, part) \
  EXPECT_NE((text).find(part), std::string::npos) << "missing: " << (part) << "\nin:\n" << (text)

constexpr const char* kRegistry =
    "routers: [{name: edge, type: proxy, admin_url: 'http://127.0.0.1:1'}]\n"
    "databases:\n  app:\n    team: payments\n    source: {host: 127.0.0.1, port: 5432}\n"
    "    placement: {data_root: /srv/pg, ports: 61200-61250}\n    tags: [tier1]\n";

class SelfServiceCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = MakeTempDir("pgshift-cli-ss");
    ASSERT_TRUE(dir.ok());
    dir_ = *dir;
    setenv("PGSHIFT_CONFIG", (dir_ + "/config.json").c_str(), 1);
    unsetenv("PGSHIFT_TOKEN");
    auto tokens = auth::TokenTable::Parse(
        std::string(kBobToken) + " bob\n" + kCarolToken + " carol\n", "tokens");
    auto access = auth::AccessPolicy::Parse("teams: {payments: [bob], search: [carol]}\n", "a");
    ASSERT_TRUE(tokens.ok() && access.ok());
    auth_ = std::make_unique<auth::Authenticator>(*tokens, false, *access);
    auto reg = inventory::Registry::Parse(registry_, "reg.yaml", nullptr);
    ASSERT_TRUE(reg.ok()) << reg.status().ToString();
    inventory_ = std::make_unique<inventory::Inventory>(*reg, inventory::Secrets(), *routes_);
    auto store = SqliteStateStore::Open(":memory:");
    ASSERT_TRUE(store.ok());
    store_ = std::move(*store);
    svc_.link_store = store_.get();
    server_ = std::make_unique<api::ApiServer>(
        svc_, "127.0.0.1", 0,
        api::ApiOptions{.auth = auth_.get(), .inventory = inventory_.get(), .audit = store_.get()});
    ASSERT_TRUE(server_->Start().ok());
    url_ = "http://127.0.0.1:" + std::to_string(server_->port());
  }
  void TearDown() override {
    unsetenv("PGSHIFT_CONFIG");
    unsetenv("PGSHIFT_TOKEN");
    (void)RemoveTree(dir_);
  }
  CliRun Cli(std::vector<std::string> args, bool with_server = true) {
    std::ostringstream out, err;
    CliIo io;
    io.out = &out;
    io.err = &err;
    if (with_server) args.insert(args.begin(), {"--server", url_});
    CliRun r;
    r.code = RunCli(args, io, {AddMigrationCommands, AddSelfServiceCommands});
    r.out = out.str();
    r.err = err.str();
    return r;
  }

  std::string dir_;
  std::string registry_ = kRegistry;
  api::ActingFakeService svc_;
  api::OneRouteSource one_route_;
  inventory::RouteSource* routes_ = &one_route_;
  std::unique_ptr<auth::Authenticator> auth_;
  std::unique_ptr<inventory::Inventory> inventory_;
  std::unique_ptr<SqliteStateStore> store_;
  std::unique_ptr<api::ApiServer> server_;
  std::string url_;
};

TEST_F(SelfServiceCliTest, NoCredentialsSaysWhereTheyComeFrom) {
  auto r = Cli({"databases", "list"});
  EXPECT_EQ(r.code, kExitFailed);
  EXPECT_HAS(r.err, "no credentials");
  EXPECT_HAS(r.err, "PGSHIFT_TOKEN");
}

TEST_F(SelfServiceCliTest, TokenFromFlagEnvOrConfigFile) {
  auto flag = Cli({"--token", kBobToken, "whoami"});
  EXPECT_EQ(flag.code, kExitOk) << flag.err;
  EXPECT_EQ(flag.out, "bob: team payments\n");
  setenv("PGSHIFT_TOKEN", kCarolToken, 1);
  auto env = Cli({"whoami"});
  EXPECT_EQ(env.out, "carol: team search\n");
  unsetenv("PGSHIFT_TOKEN");
  const std::string config = dir_ + "/config.json";
  ASSERT_TRUE(WriteFileAtomic(config, json{{"server", url_}, {"token", kBobToken}}.dump()).ok());
  chmod(config.c_str(), 0600);
  auto file = Cli({"whoami", "--json"}, /*with_server=*/false);
  EXPECT_EQ(file.code, kExitOk) << file.err;
  EXPECT_EQ(json::parse(file.out)["identity"], "bob");
  EXPECT_TRUE(file.err.empty()) << file.err;
  chmod(config.c_str(), 0644);
  auto loose = Cli({"whoami"}, false);
  EXPECT_HAS(loose.err, "warning: the pgshift config file");
  auto override_flag = Cli({"--token", kCarolToken, "whoami"}, false);
  EXPECT_EQ(override_flag.out, "carol: team search\n");
  ASSERT_TRUE(WriteFileAtomic(config, "{\"sever\": 1}").ok());
  auto bad = Cli({"whoami"}, false);
  EXPECT_EQ(bad.code, kExitUsage);
  EXPECT_HAS(bad.err, "config.json:1: field sever: unknown field");
}

TEST_F(SelfServiceCliTest, DatabasesListShowAndMigrate) {
  auto list = Cli({"--token", kCarolToken, "databases", "list"});
  EXPECT_EQ(list.code, kExitOk) << list.err;
  EXPECT_HAS(list.out, "NAME");
  EXPECT_HAS(list.out, "app   payments  proxy edge/app  127.0.0.1:5432/app  -");
  EXPECT_HAS(list.out, "read only");
  auto denied = Cli({"--token", kCarolToken, "migrate", "app"});
  EXPECT_EQ(denied.code, kExitFailed);
  EXPECT_HAS(denied.err, "belongs to team 'payments'");
  auto migrate = Cli({"--token", kBobToken, "migrate", "app", "--option", "sustain_seconds=5",
                      "--option", "parity=false", "--auto-cutover"});
  EXPECT_EQ(migrate.code, kExitOk) << migrate.err;
  EXPECT_HAS(migrate.out, "Migrating app: migration m-1, phase preflight.");
  EXPECT_HAS(migrate.out, "pgshift migration status m-1 --watch");
  const json options = svc_.LastCall("Create")->body["options"];
  EXPECT_EQ(options, json({{"sustain_seconds", 5}, {"parity", false}, {"auto_cutover", true}}));
  auto show = Cli({"--token", kBobToken, "databases", "show", "app"});
  EXPECT_EQ(show.code, kExitOk) << show.err;
  EXPECT_HAS(show.out, "Database app\n");
  EXPECT_HAS(show.out, "tier1");
  EXPECT_HAS(show.out, "m-1  preflight/running");
  auto missing = Cli({"--token", kBobToken, "migrate", "nope"});
  EXPECT_EQ(missing.code, kExitFailed);
  EXPECT_HAS(missing.err, "known databases: app");
  auto bad = Cli({"--token", kBobToken, "migrate", "app", "--option", "oops"});
  EXPECT_EQ(bad.code, kExitUsage);
  auto audit = Cli({"--token", kBobToken, "audit"});
  EXPECT_EQ(audit.code, kExitOk) << audit.err;
  EXPECT_HAS(audit.out, "bob");
  EXPECT_HAS(audit.out, "migration.create");
  EXPECT_HAS(audit.out, "by name, options");
}

// Route app on every instance of a router, but those in `down` (read before
// any listing starts, so concurrent reads need no lock).
class InstanceRoutes : public inventory::RouteSource {
 public:
  Result<std::vector<inventory::RouteInfo>> Routes(const inventory::RouterDef& r) override {
    const std::string url = r.admin_urls.empty() ? "" : r.admin_urls.front();
    if (down.count(url)) return Unavailable("router '" + r.name + "' (proxy at " + url + ") down");
    return std::vector<inventory::RouteInfo>{{r.name, r.type, "app", "app", "127.0.0.1", 5432}};
  }
  std::set<std::string> down;
};

constexpr const char* kPoolUrlA = "http://10.0.1.1:6433";
constexpr const char* kPoolUrlB = "http://10.0.1.2:6433";

// The registry's router is one pgshift-proxy deployment of two instances.
class PoolSelfServiceCliTest : public SelfServiceCliTest {
 protected:
  PoolSelfServiceCliTest() {
    registry_ = std::string("routers:\n  - name: pool\n    type: proxy\n    instances:\n") +
                "      - admin_url: " + kPoolUrlA + "\n      - admin_url: " + kPoolUrlB + "\n" +
                "databases:\n  app:\n    team: payments\n"
                "    source: {host: 127.0.0.1, port: 5432}\n"
                "    placement: {data_root: /srv/pg, ports: 61200-61250}\n";
    routes_ = &instance_routes_;
  }
  InstanceRoutes instance_routes_;
};

TEST_F(PoolSelfServiceCliTest, MigrateByNameHoldsEveryInstance) {
  instance_routes_.down = {kPoolUrlB};
  auto show = Cli({"--token", kBobToken, "databases", "show", "app", "--json"});
  ASSERT_EQ(show.code, kExitOk) << show.err;
  const json view = json::parse(show.out);
  EXPECT_EQ(view["router"]["name"], "pool");
  EXPECT_EQ(view["router"]["instances"][0]["reachable"], true);
  EXPECT_EQ(view["router"]["instances"][1]["admin_url"], kPoolUrlB);
  EXPECT_EQ(view["router"]["instances"][1]["reachable"], false);
  ASSERT_EQ(view["warnings"].size(), 1u);
  EXPECT_HAS(view["warnings"][0].get<std::string>(), kPoolUrlB);
  auto list = Cli({"--token", kBobToken, "databases", "list"});
  EXPECT_HAS(list.out, "proxy pool/app (1/2 unreachable)");
  EXPECT_HAS(list.out, std::string("warning: router 'pool' (proxy at ") + kPoolUrlB);
  auto human = Cli({"--token", kBobToken, "databases", "show", "app"});
  EXPECT_HAS(human.out, std::string("unreachable: router 'pool' (proxy at ") + kPoolUrlB);
  EXPECT_HAS(human.out, std::string("    ") + kPoolUrlA + "  127.0.0.1:5432\n");

  auto migrate = Cli({"--token", kBobToken, "migrate", "app"});
  ASSERT_EQ(migrate.code, kExitOk) << migrate.err;
  const json spec = svc_.LastCall("Create")->body;
  EXPECT_EQ(spec["router"],
            json({{"type", "proxy"},
                  {"route", "app"},
                  {"instances", {{{"admin_url", kPoolUrlA}}, {{"admin_url", kPoolUrlB}}}}}));
  EXPECT_EQ(spec["name"], "app");
}

TEST(ParseOptionPairsTest, Types) {
  auto o = ParseOptionPairs({"a=1", "b=2.5", "c=true", "d=text", "e=", "f=x=y"});
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(*o, json({{"a", 1}, {"b", 2.5}, {"c", true}, {"d", "text"}, {"e", ""}, {"f", "x=y"}}));
  EXPECT_FALSE(ParseOptionPairs({"=1"}).ok());
}

}  // namespace
}  // namespace pgshift::cli
