// Unit tests of the registry (errors name file, line and field), the
// secrets file and the inventory's join and migration specs.
#include "inventory/inventory.h"

#include <gtest/gtest.h>
#include <httplib.h>
#include <sys/stat.h>

#include <map>
#include <set>
#include <thread>

#include "common/os.h"
#include "inventory/registry.h"
#include "pg/conn.h"

namespace pgshift::inventory {
namespace {

using nlohmann::json;

constexpr const char* kRegistry = R"(routers:
  - name: edge
    type: proxy
    admin_url: http://127.0.0.1:1
databases:
  app:
    team: payments
    source:
      host: 127.0.0.1
      port: 5432
      credential: app-admin
    placement:
      data_root: /srv/pg
      ports: 1-3
    window: {days: [sat, sun], start: "02:00", end: "05:00"}
    tags: [tier1]
    options: {sustain_seconds: 3}
  search:
    team: search
    source: {host: 10.0.0.9, port: 5433}
)";

Secrets TestSecrets() {
  auto s = Secrets::Parse("app-admin: \"s3cr3t pw'x\"\n", "secrets.yaml");
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return *s;
}

class FakeRoutes : public RouteSource {
 public:
  Result<std::vector<RouteInfo>> Routes(const RouterDef& r) override {
    if (fail) return Unavailable("router '" + r.name + "' did not answer");
    return routes;
  }
  std::vector<RouteInfo> routes;
  bool fail = false;
};

Status ParseError(const std::string& text) {
  Secrets s = TestSecrets();
  auto r = Registry::Parse(text, "/etc/reg.yaml", &s);
  return r.ok() ? Status::OK() : r.status();
}

TEST(RegistryTest, ParsesEntries) {
  Secrets s = TestSecrets();
  auto r = Registry::Parse(kRegistry, "/etc/pgshift/reg.yaml", &s);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->databases.size(), 2u);
  const auto& app = r->databases.at("app");
  EXPECT_EQ(app.team, "payments");
  EXPECT_EQ(app.source.dbname, "app");
  EXPECT_EQ(app.source.user, "postgres");
  EXPECT_EQ(app.placement.port_min, 1);
  EXPECT_EQ(app.placement.port_max, 3);
  ASSERT_TRUE(app.window.has_value());
  EXPECT_EQ(app.window->days.size(), 2u);
  EXPECT_EQ(app.line, 6);
  EXPECT_EQ(r->databases.at("search").source.port, 5433);
  EXPECT_FALSE(r->databases.at("search").window.has_value());
}

TEST(RegistryTest, ErrorsNameFileLineAndField) {
  struct Case {
    std::string text;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"databases:\n  app:\n    team: t\n    source: {host: h, port: 99999}\n",
       "/etc/reg.yaml:4: field databases.app.source.port: must be a TCP port"},
      {"databases:\n  app:\n    source: {host: h}\n",
       "/etc/reg.yaml:2: field databases.app.team: is required"},
      {"databases:\n  app:\n    team: t\n    source: {host: h}\n    colour: blue\n",
       "/etc/reg.yaml:5: field databases.app.colour: unknown field"},
      {"databases:\n  app:\n    team: t\n    source: {host: h, credential: nope}\n",
       "/etc/reg.yaml:4: field databases.app.source.credential: names 'nope', which is not in"},
      {"databases:\n  app:\n    team: t\n    source: {host: h}\n    placement:\n"
       "      data_root: rel\n      ports: 1-2\n",
       "/etc/reg.yaml:6: field databases.app.placement.data_root: must be an absolute path"},
      {"databases:\n  app:\n    team: t\n    source: {host: h}\n    placement:\n"
       "      data_root: /x\n      ports: 9-2\n",
       "/etc/reg.yaml:7: field databases.app.placement.ports"},
      {"databases:\n  app:\n    team: t\n    source: {host: h}\n    router: ghost\n",
       "/etc/reg.yaml:5: field databases.app.router: names 'ghost'"},
      {"databases:\n  app:\n    team: t\n    source: {host: h}\n    window: {start: '25:00', "
       "end: '01:00'}\n",
       "/etc/reg.yaml:5: field databases.app.window.start: must be HH:MM"},
      {"routers:\n  - name: r\n    type: haproxy\ndatabases: {}\n",
       "/etc/reg.yaml:3: field routers[0].type: must be proxy or pgbouncer"},
      {"databases:\n  app: [1,\n", "/etc/reg.yaml:"},
      {"routers:\n  - name: r\n    type: proxy\ndatabases: {}\n",
       "/etc/reg.yaml:2: field routers[0].admin_url: is required (or instances"},
      {"routers:\n  - name: r\n    type: proxy\n    admin_url: 127.0.0.1:6433\ndatabases: {}\n",
       "/etc/reg.yaml:4: field routers[0].admin_url: must start with http://"},
      {"routers:\n  - name: r\n    type: proxy\n    admin_url: http://a:1\n"
       "    instances: [{admin_url: 'http://b:1'}]\ndatabases: {}\n",
       "/etc/reg.yaml:5: field routers[0].instances: and admin_url both given"},
      {"routers:\n  - name: r\n    type: proxy\n    instances: []\ndatabases: {}\n",
       "/etc/reg.yaml:4: field routers[0].instances: must be a non-empty list"},
      {"routers:\n  - name: r\n    type: proxy\n    instances:\n      - admin_url: http://a:1\n"
       "      - admin_url: http://a:1\ndatabases: {}\n",
       "/etc/reg.yaml:6: field routers[0].instances[1].admin_url: lists http://a:1 again"},
      {"routers:\n  - name: r\n    type: proxy\n    instances:\n      - admin_url: http://a:1\n"
       "      - {admin_url: 'http://b:1', token: x}\ndatabases: {}\n",
       "/etc/reg.yaml:6: field routers[0].instances[1].token: unknown field (allowed: admin_url)"},
      {"routers:\n  - name: r\n    type: proxy\n    instances:\n      - url: http://a:1\n"
       "databases: {}\n",
       "/etc/reg.yaml:5: field routers[0].instances[0].url: unknown field"},
      {"routers:\n  - name: r\n    type: proxy\n    instances:\n      - http://a:1\n"
       "databases: {}\n",
       "/etc/reg.yaml:5: field routers[0].instances[0]: must be a mapping"},
      {"routers:\n  - name: r\n    type: proxy\n    instances:\n      - admin_url: ftp://a\n"
       "databases: {}\n",
       "/etc/reg.yaml:5: field routers[0].instances[0].admin_url: must start with http://"},
      {"routers:\n  - name: r\n    type: pgbouncer\n    admin_conninfo: host=x\n"
       "    config_file: /etc/pgbouncer.ini\n    instances: [{admin_url: 'http://a:1'}]\n"
       "databases: {}\n",
       "/etc/reg.yaml:6: field routers[0].instances: is for proxy routers"},
  };
  for (const auto& c : cases) {
    Status st = ParseError(c.text);
    EXPECT_EQ(st.code(), Code::kInvalidArgument) << c.text;
    EXPECT_NE(st.message().find(c.expected), std::string::npos)
        << "got: " << st.message() << "\nwanted: " << c.expected;
  }
}

TEST(SecretsTest, ModeIsCheckedAndValuesNeverInErrors) {
  auto dir = MakeTempDir("pgshift-inventory-test");
  ASSERT_TRUE(dir.ok());
  const std::string path = *dir + "/secrets.yaml";
  ASSERT_TRUE(WriteFileAtomic(path, "a: hunter2-secret\n").ok());
  chmod(path.c_str(), 0640);
  auto open = Secrets::Load(path);
  ASSERT_FALSE(open.ok());
  EXPECT_NE(open.status().message().find("chmod 600"), std::string::npos);
  chmod(path.c_str(), 0600);
  auto ok = Secrets::Load(path);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->Get("a").value_or(""), "hunter2-secret");
  auto bad = Secrets::Parse("a: [hunter2-secret]\n", "s.yaml");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message().find("hunter2"), std::string::npos);
  (void)RemoveTree(*dir);
}

class InventoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Secrets s = TestSecrets();
    auto r = Registry::Parse(kRegistry, "/etc/pgshift/reg.yaml", &s);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    routes_.routes = {{"edge", "proxy", "app", "app", "127.0.0.1", 5432},
                      {"edge", "proxy", "billing", "billing", "127.0.0.1", 6000}};
    inv_ = std::make_unique<Inventory>(*r, s, routes_);
  }
  FakeRoutes routes_;
  std::unique_ptr<Inventory> inv_;
};

TEST_F(InventoryTest, JoinsRoutesAndRegistry) {
  std::vector<std::string> warnings;
  auto list = inv_->List(&warnings);
  EXPECT_TRUE(warnings.empty());
  ASSERT_EQ(list.size(), 3u);
  EXPECT_EQ(list[0].name, "app");
  EXPECT_EQ(list[0].team(), "payments");
  ASSERT_TRUE(list[0].route.has_value());
  json app = list[0].ToJson();
  EXPECT_EQ(app["router"]["type"], "proxy");
  EXPECT_EQ(app["router"]["route"], "app");
  EXPECT_EQ(app["source"], (json{{"host", "127.0.0.1"}, {"port", 5432}, {"dbname", "app"}}));
  EXPECT_EQ(app["window"]["start"], "02:00");
  EXPECT_EQ(list[1].name, "billing");  // served, not registered
  EXPECT_TRUE(list[1].ToJson()["team"].is_null());
  EXPECT_EQ(list[2].name, "search");  // registered, not served
  EXPECT_EQ(list[2].ToJson()["router"]["type"], "none");
  for (const auto& v : list) EXPECT_EQ(v.ToJson().dump().find("s3cr3t"), std::string::npos);
}

TEST_F(InventoryTest, UnreachableRouterIsAWarning) {
  routes_.fail = true;
  std::vector<std::string> warnings;
  auto list = inv_->List(&warnings);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("edge"), std::string::npos);
  EXPECT_EQ(list.size(), 2u);
}

TEST_F(InventoryTest, UnknownDatabaseListsKnownOnes) {
  auto r = inv_->Find("nope", nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kNotFound);
  EXPECT_NE(r.status().message().find("known databases: app, billing, search"), std::string::npos)
      << r.status().message();
}

TEST_F(InventoryTest, BuildsASpecWithSecretPlacementAndRouter) {
  auto db = inv_->Find("app", nullptr);
  ASSERT_TRUE(db.ok());
  auto spec = inv_->BuildSpec(*db, json{{"auto_cutover", true}}, {1});
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ((*spec)["name"], "app");
  auto kv = ParseConninfo((*spec)["source"]["conninfo"].get<std::string>());
  ASSERT_TRUE(kv.ok()) << kv.status().ToString();
  EXPECT_EQ((*kv)["password"], "s3cr3t pw'x");
  EXPECT_EQ((*kv)["host"], "127.0.0.1");
  EXPECT_EQ((*kv)["dbname"], "postgres");
  EXPECT_EQ((*spec)["router"],
            (json{{"type", "proxy"}, {"admin_url", "http://127.0.0.1:1"}, {"route", "app"}}));
  EXPECT_EQ((*spec)["target"]["port"], 2);  // 1 is in use
  EXPECT_EQ((*spec)["target"]["data_dir"].get<std::string>().rfind("/srv/pg/app-", 0), 0u);
  EXPECT_EQ((*spec)["options"]["sustain_seconds"], 3);
  EXPECT_EQ((*spec)["options"]["auto_cutover"], true);
}

TEST_F(InventoryTest, RefusesWhatCannotBeMigratedByName) {
  auto billing = inv_->Find("billing", nullptr);
  ASSERT_TRUE(billing.ok());
  auto s1 = inv_->BuildSpec(*billing, json::object(), {});
  EXPECT_EQ(s1.status().code(), Code::kFailedPrecondition);
  EXPECT_NE(s1.status().message().find("does not describe it"), std::string::npos);
  auto search = inv_->Find("search", nullptr);
  auto s2 = inv_->BuildSpec(*search, json::object(), {});
  EXPECT_EQ(s2.status().code(), Code::kFailedPrecondition);
  EXPECT_NE(s2.status().message().find("placement"), std::string::npos);
  auto app = inv_->Find("app", nullptr);
  EXPECT_EQ(inv_->BuildSpec(*app, json::object(), {1, 2, 3}).status().code(),
            Code::kFailedPrecondition);
  routes_.routes[0].port = 7777;  // the route moved: the registry is stale
  auto moved = inv_->Find("app", nullptr);
  auto s3 = inv_->BuildSpec(*moved, json::object(), {});
  EXPECT_EQ(s3.status().code(), Code::kFailedPrecondition);
  EXPECT_NE(s3.status().message().find("points at 127.0.0.1:7777"), std::string::npos);
}

constexpr const char* kUrlA = "http://10.0.1.1:6433";
constexpr const char* kUrlB = "http://10.0.1.2:6433";

constexpr const char* kPoolRegistry = R"(routers:
  - name: pool
    type: proxy
    instances:
      - admin_url: http://10.0.1.1:6433
      - admin_url: http://10.0.1.2:6433
databases:
  app:
    team: payments
    source: {host: 127.0.0.1, port: 5432}
    placement: {data_root: /srv/pg, ports: 1-3}
)";

// Answers per instance (the one admin URL of the def it is given).
class InstanceRoutes : public RouteSource {
 public:
  Result<std::vector<RouteInfo>> Routes(const RouterDef& r) override {
    EXPECT_EQ(r.admin_urls.size(), 1u);
    const std::string url = r.admin_urls.empty() ? "" : r.admin_urls.front();
    if (down.count(url)) return Unavailable("router '" + r.name + "' (proxy at " + url + ") down");
    auto it = by_url.find(url);
    return it == by_url.end() ? std::vector<RouteInfo>{} : it->second;
  }
  std::map<std::string, std::vector<RouteInfo>> by_url;
  std::set<std::string> down;
};

class PoolInventoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = Registry::Parse(kPoolRegistry, "/etc/pgshift/reg.yaml", nullptr);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_EQ(r->routers.size(), 1u);
    EXPECT_EQ(r->routers[0].admin_urls, (std::vector<std::string>{kUrlA, kUrlB}));
    for (const char* url : {kUrlA, kUrlB}) {
      routes_.by_url[url] = {{"pool", "proxy", "app", "app", "127.0.0.1", 5432},
                             {"pool", "proxy", "billing", "billing", "127.0.0.1", 6000}};
    }
    inv_ = std::make_unique<Inventory>(*r, Secrets(), routes_);
  }
  InstanceRoutes routes_;
  std::unique_ptr<Inventory> inv_;
};

TEST(RegistryTest, OneInstanceListIsOneAdminUrl) {
  auto r = Registry::Parse(
      "routers:\n  - {name: a, type: proxy, admin_url: 'http://x:1'}\n"
      "  - {name: b, type: proxy, instances: [{admin_url: 'https://y:2'}]}\ndatabases: {}\n",
      "reg.yaml", nullptr);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->routers[0].admin_urls, std::vector<std::string>{"http://x:1"});
  EXPECT_EQ(r->routers[1].admin_urls, std::vector<std::string>{"https://y:2"});
  EXPECT_EQ(r->routers[1].Instances().size(), 1u);
}

TEST_F(PoolInventoryTest, JoinsEveryInstancesView) {
  routes_.by_url[kUrlB][1].port = 6001;  // instances disagree on billing
  std::vector<std::string> warnings;
  auto list = inv_->List(&warnings);
  EXPECT_TRUE(warnings.empty()) << warnings[0];
  ASSERT_EQ(list.size(), 2u);
  json app = list[0].ToJson();
  EXPECT_EQ(app["team"], "payments");
  EXPECT_EQ(app["router"]["name"], "pool");
  EXPECT_EQ(app["router"]["route"], "app");
  const json up = {{"host", "127.0.0.1"}, {"port", 5432}};
  EXPECT_EQ(
      app["router"]["instances"],
      (json{{{"admin_url", kUrlA}, {"reachable", true}, {"upstream", up}, {"error", nullptr}},
            {{"admin_url", kUrlB}, {"reachable", true}, {"upstream", up}, {"error", nullptr}}}));
  json billing = list[1].ToJson();
  EXPECT_EQ(billing["router"]["instances"][1]["upstream"]["port"], 6001);
  EXPECT_EQ(billing["router"]["upstream"]["port"], 6000);  // the first instance's
}

TEST_F(PoolInventoryTest, OneInstanceDownIsNamedInTheView) {
  routes_.down.insert(kUrlA);
  std::vector<std::string> warnings;
  auto db = inv_->Find("app", &warnings);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find(kUrlA), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[0].find("listed from the other instances"), std::string::npos);
  ASSERT_TRUE(db->route.has_value());
  json router = db->ToJson()["router"];
  EXPECT_EQ(router["type"], "proxy");
  EXPECT_EQ(router["upstream"]["port"], 5432);
  EXPECT_EQ(router["instances"][0]["reachable"], false);
  EXPECT_TRUE(router["instances"][0]["upstream"].is_null());
  EXPECT_NE(router["instances"][0]["error"].get<std::string>().find("down"), std::string::npos);
  EXPECT_EQ(router["instances"][1]["reachable"], true);
  // A migration by name may start: the instance down is left to the router's rules.
  auto spec = inv_->BuildSpec(*db, json::object(), {});
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ((*spec)["router"]["instances"].size(), 2u);
}

TEST_F(PoolInventoryTest, EveryInstanceDownIsOneWarning) {
  routes_.down = {kUrlA, kUrlB};
  std::vector<std::string> warnings;
  auto list = inv_->List(&warnings);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("router 'pool': no instance answered"), std::string::npos);
  EXPECT_NE(warnings[0].find(kUrlB), std::string::npos);
  ASSERT_EQ(list.size(), 1u);
  EXPECT_FALSE(list[0].route.has_value());
}

TEST_F(PoolInventoryTest, SpecListsEveryInstance) {
  auto db = inv_->Find("app", nullptr);
  ASSERT_TRUE(db.ok());
  auto spec = inv_->BuildSpec(*db, json::object(), {});
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ((*spec)["router"],
            (json{{"type", "proxy"},
                  {"route", "app"},
                  {"instances", {{{"admin_url", kUrlA}}, {{"admin_url", kUrlB}}}}}));
}

TEST_F(PoolInventoryTest, RefusesAnInstanceLeftElsewhere) {
  routes_.by_url[kUrlB][0].port = 7777;
  auto db = inv_->Find("app", nullptr);
  ASSERT_TRUE(db.ok());
  auto spec = inv_->BuildSpec(*db, json::object(), {});
  EXPECT_EQ(spec.status().code(), Code::kFailedPrecondition);
  EXPECT_NE(spec.status().message().find("route 'app' on instance " + std::string(kUrlB) +
                                         " of router 'pool' points at 127.0.0.1:7777"),
            std::string::npos)
      << spec.status().message();
  routes_.by_url[kUrlB].erase(routes_.by_url[kUrlB].begin());  // no route app there
  db = inv_->Find("app", nullptr);
  spec = inv_->BuildSpec(*db, json::object(), {});
  EXPECT_EQ(spec.status().code(), Code::kFailedPrecondition);
  EXPECT_NE(spec.status().message().find("has no route 'app'"), std::string::npos)
      << spec.status().message();
}

// LiveRouteSource over HTTP: one instance answers GET /routes as
// pgshift-proxy's admin API does, the other's port refuses connections.
TEST(LiveRouteSourceTest, ReadsEveryInstanceAndNamesTheOneDown) {
  httplib::Server admin;
  admin.Get("/routes", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(
        R"([{"name":"app","database":"app","upstream":{"host":"127.0.0.1","port":5432}}])",
        "application/json");
  });
  const int up_port = admin.bind_to_any_port("127.0.0.1");
  ASSERT_GT(up_port, 0);
  std::thread serve([&] { admin.listen_after_bind(); });
  auto down_port = FreePort();
  ASSERT_TRUE(down_port.ok());
  const std::string up = "http://127.0.0.1:" + std::to_string(up_port);
  const std::string down = "http://127.0.0.1:" + std::to_string(*down_port);
  auto reg = Registry::Parse(
      "routers:\n  - name: pool\n    type: proxy\n    instances:\n"
      "      - admin_url: " +
          up + "\n      - admin_url: " + down + "\ndatabases: {}\n",
      "reg.yaml", nullptr);
  ASSERT_TRUE(reg.ok()) << reg.status().ToString();
  Secrets secrets;
  LiveRouteSource live(secrets);
  Inventory inv(*reg, secrets, live);
  std::vector<std::string> warnings;
  auto list = inv.List(&warnings);
  admin.stop();
  serve.join();
  ASSERT_EQ(list.size(), 1u);
  ASSERT_TRUE(list[0].route.has_value());
  EXPECT_EQ(list[0].route->port, 5432);
  ASSERT_EQ(list[0].route->instances.size(), 2u);
  EXPECT_TRUE(list[0].route->instances[0].reachable);
  EXPECT_FALSE(list[0].route->instances[1].reachable);
  EXPECT_NE(list[0].route->instances[1].error.find("proxy at " + down), std::string::npos)
      << list[0].route->instances[1].error;
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find(down), std::string::npos) << warnings[0];
}

}  // namespace
}  // namespace pgshift::inventory
