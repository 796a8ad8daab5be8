// The self-service API over real HTTP with authentication on: the
// authorization matrix of every mutating route (no identity → 401, wrong
// team → 403, owner → OK, operator → OK), refusals that change nothing,
// audit entries for each action, migrate by name, the databases views,
// masked secrets, /metrics access, and client certificates over HTTPS.
#include <gtest/gtest.h>
#include <httplib.h>

#include "api/api_test_util.h"
#include "api/http_server.h"
#include "auth/authenticator.h"
#include "common/dev_certs.h"
#include "common/os.h"
#include "inventory/inventory.h"
#include "store/state_store.h"

namespace pgshift::api {
namespace {

using nlohmann::json;

constexpr const char* kSecret = "pw-very-secret-42";
const std::map<std::string, std::string> kTokens = {{"alice", "alice-token-0123456789"},
                                                    {"bob", "bob-token-0123456789ab"},
                                                    {"carol", "carol-token-0123456789"},
                                                    {"dave", "dave-token-01234567890"}};

constexpr const char* kRegistry = R"(routers:
  - {name: edge, type: proxy, admin_url: "http://127.0.0.1:1"}
databases:
  app:
    team: payments
    source: {host: 127.0.0.1, port: 5432, credential: app-admin}
    placement: {data_root: /srv/pg, ports: 61000-61050}
    tags: [tier1]
  search:
    team: search
    source: {host: 127.0.0.1, port: 5433}
    placement: {data_root: /srv/pg, ports: 61000-61050}
)";

class ApiAuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string lines;
    for (const auto& [who, token] : kTokens) lines += token + " " + who + "\n";
    auto tokens = auth::TokenTable::Parse(lines, "tokens");
    auto access = auth::AccessPolicy::Parse(
        "operators: [alice]\nteams:\n  payments: [bob, app-client]\n  search: [carol]\n", "access");
    ASSERT_TRUE(tokens.ok() && access.ok());
    auth_ = std::make_unique<auth::Authenticator>(*tokens, true, *access);
    auto secrets = inventory::Secrets::Parse(std::string("app-admin: ") + kSecret + "\n", "s.yaml");
    ASSERT_TRUE(secrets.ok());
    auto reg = inventory::Registry::Parse(kRegistry, "/etc/reg.yaml", &*secrets);
    ASSERT_TRUE(reg.ok()) << reg.status().ToString();
    inventory_ = std::make_unique<inventory::Inventory>(*reg, *secrets, routes_);
    auto store = SqliteStateStore::Open(":memory:");
    ASSERT_TRUE(store.ok());
    store_ = std::move(*store);
    svc_.link_store = store_.get();
    StartServer({});
  }
  void StartServer(TlsOptions tls) {
    server_ = std::make_unique<ApiServer>(
        svc_, "127.0.0.1", 0,
        ApiOptions{
            .auth = auth_.get(), .inventory = inventory_.get(), .audit = store_.get(), .tls = tls});
    Status st = server_->Start();
    ASSERT_TRUE(st.ok()) << st.ToString();
  }
  httplib::Headers As(const std::string& who) {
    if (who.empty()) return {};
    return {{"Authorization", "Bearer " + kTokens.at(who)}};
  }
  // {status, body}; every body is checked for the secret.
  std::pair<int, json> Send(const std::string& who, const std::string& method,
                            const std::string& path, const std::string& body = "") {
    httplib::Client c("127.0.0.1", server_->port());
    auto r = method == "GET" ? c.Get(path.c_str(), As(who))
                             : c.Post(path.c_str(), As(who), body, "application/json");
    EXPECT_TRUE(r) << method << " " << path;
    if (!r) return {0, nullptr};
    EXPECT_EQ(r->body.find(kSecret), std::string::npos) << path << " leaked the secret";
    return {r->status, json::parse(r->body, nullptr, false)};
  }
  std::string MigrateApp(const std::string& who = "bob") {
    auto [st, body] = Send(who, "POST", "/v1/databases/app/migrations", "{}");
    EXPECT_EQ(st, 201) << body.dump();
    return body.value("id", "");
  }
  // A migration of `db` in `phase`/`state`, linked like a by-name one.
  std::string Seed(const std::string& db, const std::string& phase, const std::string& state) {
    std::string id = "m-" + db + "-" + std::to_string(++seeded_);
    json findings = json::array({{{"id", "unlogged_tables"},
                                  {"severity", "blocking"},
                                  {"subject", "public.cache"},
                                  {"message", "unlogged"}}});
    svc_.Put({{"id", id},
              {"name", db},
              {"phase", phase},
              {"state", state},
              {"findings", findings},
              {"progress", json::object()},
              {"result", json::object()},
              {"spec", {{"source", {{"conninfo", std::string("host=h password=") + kSecret}}}}},
              {"error", ""},
              {"pending_action", ""}});
    EXPECT_TRUE(store_->LinkDatabase(id, db).ok());
    return id;
  }
  size_t AuditRows() { return store_->ListAudit(1000)->size(); }

  ActingFakeService svc_;
  OneRouteSource routes_;
  std::unique_ptr<auth::Authenticator> auth_;
  std::unique_ptr<inventory::Inventory> inventory_;
  std::unique_ptr<SqliteStateStore> store_;
  std::unique_ptr<ApiServer> server_;
  int seeded_ = 0;
};

struct Mutation {
  std::string action;  // "" = migrate by name
  std::string phase, state, body;
  int ok_status;
};

TEST_F(ApiAuthTest, AuthorizationMatrixOnEveryMutatingRoute) {
  const std::vector<Mutation> mutations = {
      {"", "", "", "{}", 201},
      {"cutover", "ready", "waiting", "{}", 202},
      {"rollback", "sync", "running", "{}", 202},
      {"finalize", "verify", "waiting", "{}", 202},
      {"override", "ready", "blocked",
       R"({"finding":"unlogged_tables","subject":"public.cache","reason":"cache"})", 200},
      {"retry", "sync", "failed", "{}", 202},
      {"drop_slot", "sync", "running", R"({"slot":"old","reason":"unused"})", 202},
  };
  for (const auto& mu : mutations) {
    for (const std::string who : {"", "dave", "carol", "bob", "alice"}) {
      SCOPED_TRACE((mu.action.empty() ? std::string("by-name") : mu.action) + " as '" + who + "'");
      std::string path = "/v1/databases/app/migrations";
      if (!mu.action.empty())
        path = "/v1/migrations/" + Seed("app", mu.phase, mu.state) + "/" + mu.action;
      const size_t calls = svc_.calls().size(), audit = AuditRows();
      auto [st, body] = Send(who, "POST", path, mu.body);
      if (who.empty()) {
        EXPECT_EQ(st, 401);
        EXPECT_EQ(body["code"], "unauthenticated");
      } else if (who == "dave" || who == "carol") {
        EXPECT_EQ(st, 403);
        EXPECT_EQ(body["code"], "forbidden");
        EXPECT_FALSE(body.value("error", "").empty());
      } else {
        EXPECT_EQ(st, mu.ok_status) << body.dump();
        EXPECT_EQ(body["database"], "app");
        EXPECT_EQ(AuditRows(), audit + 1);
        auto last = store_->ListAudit(1)->back();
        EXPECT_EQ(last.identity, who);
        EXPECT_EQ(last.action, "migration." + (mu.action.empty() ? "create" : mu.action));
        EXPECT_EQ(last.database, "app");
        // The next by-name create needs the database free again.
        if (mu.action.empty())
          svc_.Put({{"id", body["id"]},
                    {"name", "x"},
                    {"phase", "rolled_back"},
                    {"state", "rolled_back"}});
        continue;
      }
      // A refusal changes nothing: the engine is not called for it, nothing is audited.
      for (size_t i = calls; i < svc_.calls().size(); ++i) {
        EXPECT_NE(svc_.calls()[i].method, "Act");
        EXPECT_NE(svc_.calls()[i].method, "Create");
      }
      EXPECT_EQ(AuditRows(), audit);
    }
  }
}

TEST_F(ApiAuthTest, ExpertFormIsForOperators) {
  const std::string spec = R"({"name":"expert"})";
  EXPECT_EQ(Send("", "POST", "/v1/migrations", spec).first, 401);
  auto [st, body] = Send("bob", "POST", "/v1/migrations", spec);
  EXPECT_EQ(st, 403);
  EXPECT_NE(body.value("error", "").find("/v1/databases/{name}/migrations"), std::string::npos);
  EXPECT_FALSE(svc_.LastCall("Create"));
  auto [ok, created] = Send("alice", "POST", "/v1/migrations", spec);
  EXPECT_EQ(ok, 201);
  EXPECT_TRUE(created["database"].is_null());
  // A team may not act on a migration no database of theirs owns.
  EXPECT_EQ(
      Send("bob", "POST", "/v1/migrations/" + created["id"].get<std::string>() + "/rollback").first,
      403);
}

TEST_F(ApiAuthTest, ReadsAreScopedToTheTeam) {
  const std::string app = Seed("app", "sync", "running");
  const std::string search = Seed("search", "sync", "running");
  auto [st, list] = Send("carol", "GET", "/v1/migrations");
  ASSERT_EQ(st, 200);
  ASSERT_EQ(list["migrations"].size(), 1u);
  EXPECT_EQ(list["migrations"][0]["id"], search);
  EXPECT_EQ(Send("carol", "GET", "/v1/migrations/" + app).first, 403);
  EXPECT_EQ(Send("carol", "GET", "/v1/migrations/" + app + "/events").first, 403);
  auto [ok, m] = Send("bob", "GET", "/v1/migrations/" + app);
  ASSERT_EQ(ok, 200);
  EXPECT_EQ(m["database"], "app");
  EXPECT_EQ(m["actions"], json({"cutover", "rollback", "override"}));
  EXPECT_EQ(m["spec"]["source"]["conninfo"], "host='h' password='********'");
  EXPECT_EQ(Send("alice", "GET", "/v1/migrations").second["migrations"].size(), 2u);
  EXPECT_EQ(Send("dave", "GET", "/v1/migrations").first, 403);
}

TEST_F(ApiAuthTest, DatabasesViewsAndWhoAmI) {
  Seed("app", "sync", "running");
  auto [st, body] = Send("carol", "GET", "/v1/databases");
  ASSERT_EQ(st, 200) << body.dump();
  ASSERT_EQ(body["databases"].size(), 2u);
  const json& app = body["databases"][0];
  EXPECT_EQ(app["name"], "app");
  EXPECT_EQ(app["team"], "payments");
  EXPECT_EQ(app["can_act"], false);
  EXPECT_EQ(app["router"]["type"], "proxy");
  EXPECT_EQ(app["router"]["route"], "app");
  EXPECT_EQ(app["tags"], json({"tier1"}));
  EXPECT_TRUE(app["window"].is_null());
  EXPECT_EQ(app["source"]["dbname"], "app");
  EXPECT_EQ(app["migrations"].size(), 1u);
  EXPECT_EQ(body["databases"][1]["can_act"], true);
  auto [one, search] = Send("bob", "GET", "/v1/databases/search");
  EXPECT_EQ(one, 200);
  EXPECT_EQ(search["can_act"], false);
  auto [nf, missing] = Send("bob", "GET", "/v1/databases/nope");
  EXPECT_EQ(nf, 404);
  EXPECT_NE(missing.value("error", "").find("known databases: app, search"), std::string::npos);
  auto [m404, body404] = Send("bob", "POST", "/v1/databases/nope/migrations", "{}");
  EXPECT_EQ(m404, 404);
  EXPECT_NE(body404.value("error", "").find("app, search"), std::string::npos);
  EXPECT_EQ(
      Send("bob", "GET", "/v1/whoami").second,
      json({{"identity", "bob"}, {"team", "payments"}, {"operator", false}, {"dev_mode", false}}));
  EXPECT_EQ(Send("dave", "GET", "/v1/whoami").second["team"], nullptr);
  EXPECT_EQ(Send("", "GET", "/v1/whoami").first, 401);
  EXPECT_EQ(Send("", "GET", "/healthz").first, 200);
}

TEST_F(ApiAuthTest, MigrateByNameFillsTheSpecAndRefusesASecondOne) {
  auto [st, m] =
      Send("bob", "POST", "/v1/databases/app/migrations", R"({"options":{"auto_cutover":true}})");
  ASSERT_EQ(st, 201) << m.dump();
  EXPECT_EQ(m["actions"], json({"cutover", "rollback"}));
  const json spec = svc_.LastCall("Create")->body;
  EXPECT_NE(spec["source"]["conninfo"].get<std::string>().find(kSecret), std::string::npos)
      << "the engine gets the password";
  EXPECT_EQ(spec["router"]["route"], "app");
  EXPECT_EQ(spec["options"]["auto_cutover"], true);
  EXPECT_EQ(m["spec"]["source"]["conninfo"].get<std::string>().find(kSecret), std::string::npos);
  auto [again, conflict] = Send("alice", "POST", "/v1/databases/app/migrations", "{}");
  EXPECT_EQ(again, 409);
  EXPECT_NE(
      conflict.value("error", "").find("already being migrated by " + m["id"].get<std::string>()),
      std::string::npos);
  EXPECT_EQ(Send("bob", "POST", "/v1/databases/app/migrations", R"({"source":{}})").first, 400);
  EXPECT_EQ(Send("bob", "POST", "/v1/databases/app/migrations", R"({"options":[]})").first, 400);
}

TEST_F(ApiAuthTest, AuditShowsActionsAndPhaseChangesToTheRightCallers) {
  const std::string id = MigrateApp();
  svc_.SetEvents(id, json::array({{{"at", "t1"},
                                   {"at_ms", 1},
                                   {"phase", "preflight"},
                                   {"kind", "info"},
                                   {"message", "created"}},
                                  {{"at", "t2"},
                                   {"at_ms", 2},
                                   {"phase", "provision"},
                                   {"kind", "info"},
                                   {"message", "preflight passed"}}}));
  auto [st, body] = Send("bob", "GET", "/v1/audit");
  ASSERT_EQ(st, 200) << body.dump();
  std::vector<std::string> actions;
  for (const auto& e : body["entries"]) {
    actions.push_back(e["action"]);
    for (const char* k : {"at", "identity", "action", "database", "migration", "detail"}) {
      EXPECT_TRUE(e.contains(k)) << e.dump();
    }
  }
  EXPECT_EQ(actions, (std::vector<std::string>{"phase.provision", "migration.create"}));
  EXPECT_EQ(body["entries"][1]["identity"], "bob");
  EXPECT_TRUE(Send("carol", "GET", "/v1/audit").second["entries"].empty());
  EXPECT_EQ(Send("alice", "GET", "/v1/audit").second["entries"].size(), 2u);
  EXPECT_EQ(Send("alice", "GET", "/v1/audit?limit=0").first, 400);
}

TEST_F(ApiAuthTest, WrongStateSaysWhatIsPossibleNow) {
  const std::string id = Seed("app", "sync", "running");
  const size_t audit = AuditRows();
  auto [st, body] = Send("bob", "POST", "/v1/migrations/" + id + "/finalize");
  EXPECT_EQ(st, 409);
  EXPECT_EQ(body["code"], "failed_precondition");
  EXPECT_NE(body.value("error", "").find("finalize needs phase verify"), std::string::npos);
  EXPECT_NE(body.value("error", "")
                .find("[phase sync, state running: cutover, rollback, override "
                      "possible now]"),
            std::string::npos)
      << body.dump();
  EXPECT_EQ(AuditRows(), audit) << "a refused action is not audited";
  EXPECT_EQ(svc_.Get(id)->value("phase", ""), "sync");
}

TEST_F(ApiAuthTest, MetricsNeedAnOperator) {
  Seed("app", "sync", "running");
  EXPECT_EQ(Send("", "GET", "/metrics").first, 401);
  EXPECT_EQ(Send("bob", "GET", "/metrics").first, 403);
  httplib::Client c("127.0.0.1", server_->port());
  auto r = c.Get("/metrics", As("alice"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_NE(r->body.find("pgshift_migrations{phase=\"sync\",state=\"running\"} 1"),
            std::string::npos)
      << r->body;
}

TEST_F(ApiAuthTest, ClientCertificatesOverHttps) {
  auto dir = MakeTempDir("pgshift-api-tls");
  ASSERT_TRUE(dir.ok());
  ASSERT_TRUE(MakeDevCerts(*dir).ok());
  server_->Stop();
  StartServer(
      {.cert = *dir + "/server.crt", .key = *dir + "/server.key", .client_ca = *dir + "/ca.crt"});
  auto client = [&](const std::string& name) {
    auto c = name.empty() ? std::make_unique<httplib::SSLClient>("127.0.0.1", server_->port())
                          : std::make_unique<httplib::SSLClient>("127.0.0.1", server_->port(),
                                                                 *dir + "/" + name + ".crt",
                                                                 *dir + "/" + name + ".key");
    c->set_ca_cert_path((*dir + "/ca.crt").c_str());
    c->enable_server_certificate_verification(true);
    return c;
  };
  auto r = client("app-client")->Get("/v1/whoami");
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(json::parse(r->body)["identity"], "app-client");
  EXPECT_EQ(json::parse(r->body)["team"], "payments");
  auto none = client("")->Get("/v1/whoami");
  ASSERT_TRUE(none);
  EXPECT_EQ(none->status, 401);
  auto token = client("")->Get("/v1/whoami", As("alice"));
  ASSERT_TRUE(token);
  EXPECT_EQ(json::parse(token->body)["identity"], "alice");
  auto other =
      client("other-client")->Post("/v1/databases/app/migrations", "{}", "application/json");
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, 403);
  EXPECT_FALSE(client("evil-client")->Get("/v1/whoami")) << "another CA's certificate is refused";
  (void)RemoveTree(*dir);
}

}  // namespace
}  // namespace pgshift::api
