// docs/openapi.yaml against the real server: the file lists exactly the
// routes the server serves (ServedRoutes), and the answers of a live
// in-process server (fake migration service, real inventory, audit store
// and authentication) carry a status the file lists and validate against
// its schemas (required fields, types, nullability, enums).
#include <gtest/gtest.h>
#include <httplib.h>

#include <set>

#include "api/api_test_util.h"
#include "api/http_server.h"
#include "auth/authenticator.h"
#include "auth/config_doc.h"
#include "fleet/runner.h"
#include "inventory/inventory.h"
#include "store/state_store.h"

namespace pgshift::api {
namespace {

using nlohmann::json;

constexpr const char* kOperatorToken = "operator-token-0123456789";
constexpr const char* kTeamToken = "team-token-0123456789abc";

// Resolves "#/components/..." references.
const json& Resolve(const json& doc, const json& node) {
  if (!node.is_object() || !node.contains("$ref")) return node;
  const std::string ref = node["$ref"];
  EXPECT_EQ(ref.rfind("#/", 0), 0u) << ref;
  return Resolve(doc, doc.at(json::json_pointer(ref.substr(1))));
}

bool TypeMatches(const std::string& type, const json& v) {
  if (type == "object") return v.is_object();
  if (type == "array") return v.is_array();
  if (type == "string") return v.is_string();
  if (type == "integer") return v.is_number_integer();
  if (type == "number") return v.is_number();
  if (type == "boolean") return v.is_boolean();
  return false;
}

void Validate(const json& doc, const json& schema_in, const json& v, const std::string& where,
              std::vector<std::string>* errors) {
  const json& schema = Resolve(doc, schema_in);
  if (v.is_null()) {
    if (!schema.value("nullable", false)) errors->push_back(where + ": null is not allowed");
    return;
  }
  if (schema.contains("type") && !TypeMatches(schema["type"], v)) {
    errors->push_back(where + ": expected " + schema["type"].get<std::string>() + ", got " +
                      v.dump());
    return;
  }
  if (schema.contains("enum") &&
      std::find(schema["enum"].begin(), schema["enum"].end(), v) == schema["enum"].end()) {
    errors->push_back(where + ": " + v.dump() + " is not in the enum");
  }
  if (v.is_object()) {
    for (const auto& r : schema.value("required", json::array())) {
      if (!v.contains(r.get<std::string>())) {
        errors->push_back(where + ": required field '" + r.get<std::string>() + "' is missing");
      }
    }
    const json properties = schema.value("properties", json::object());
    for (const auto& [k, sub] : properties.items()) {
      if (v.contains(k)) Validate(doc, sub, v[k], where + "." + k, errors);
    }
  }
  if (v.is_array() && schema.contains("items")) {
    for (size_t i = 0; i < v.size(); ++i) {
      Validate(doc, schema["items"], v[i], where + "[" + std::to_string(i) + "]", errors);
    }
  }
}

std::string Lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

class OpenApiContract : public ::testing::Test {
 protected:
  void SetUp() override {
    auto doc = auth::LoadConfigDoc(PGSHIFT_OPENAPI_PATH);
    ASSERT_TRUE(doc.ok()) << doc.status().ToString();
    doc_ = doc->root;
    auto tokens = auth::TokenTable::Parse(
        std::string(kOperatorToken) + " ops\n" + kTeamToken + " member\n", "tokens");
    auto access = auth::AccessPolicy::Parse("operators: [ops]\nteams: {search: [member]}\n", "a");
    ASSERT_TRUE(tokens.ok() && access.ok());
    auth_ = std::make_unique<auth::Authenticator>(*tokens, false, *access);
    auto reg = inventory::Registry::Parse(
        "routers: [{name: edge, type: proxy, admin_url: 'http://127.0.0.1:1'}]\n"
        "databases:\n  app:\n    team: payments\n    source: {host: 127.0.0.1, port: 5432}\n"
        "    placement: {data_root: /srv/pg, ports: 61100-61150}\n"
        "    window: {days: [sun], start: '01:00', end: '02:00'}\n",
        "reg.yaml", nullptr);
    ASSERT_TRUE(reg.ok()) << reg.status().ToString();
    inventory_ = std::make_unique<inventory::Inventory>(*reg, inventory::Secrets(), routes_);
    auto store = SqliteStateStore::Open(":memory:");
    ASSERT_TRUE(store.ok());
    store_ = std::move(*store);
    svc_.link_store = store_.get();
    starter_ = std::make_unique<fleet::ByNameStarter>(svc_, *inventory_, *store_);
    fleet_ =
        std::make_unique<fleet::FleetRunner>(svc_, *starter_, *store_, &inventory_->registry());
    server_ = std::make_unique<ApiServer>(svc_, "127.0.0.1", 0,
                                          ApiOptions{.auth = auth_.get(),
                                                     .inventory = inventory_.get(),
                                                     .audit = store_.get(),
                                                     .fleet = fleet_.get(),
                                                     .starter = starter_.get()});
    ASSERT_TRUE(server_->Start().ok());
  }

  // Sends the request and checks the answer against the operation of `pattern`.
  void Check(const std::string& method, const std::string& pattern, const std::string& path,
             const std::string& body, int want, const char* token = kOperatorToken) {
    SCOPED_TRACE(method + " " + path);
    httplib::Client c("127.0.0.1", server_->port());
    httplib::Headers h;
    if (token) h.emplace("Authorization", std::string("Bearer ") + token);
    auto r = method == "GET" ? c.Get(path.c_str(), h)
                             : c.Post(path.c_str(), h, body, "application/json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, want) << r->body;
    ASSERT_TRUE(doc_["paths"].contains(pattern)) << pattern;
    const json& op = doc_["paths"][pattern][Lower(method)];
    const std::string status = std::to_string(r->status);
    ASSERT_TRUE(op["responses"].contains(status)) << "status " << status << " not in the file";
    const json& response = Resolve(doc_, op["responses"][status]);
    const json& content = response.value("content", json::object());
    if (content.contains("application/json")) {
      EXPECT_EQ(r->get_header_value("Content-Type"), "application/json");
      std::vector<std::string> errors;
      Validate(doc_, content["application/json"]["schema"], json::parse(r->body), "body", &errors);
      for (const auto& e : errors) ADD_FAILURE() << e << "\n" << r->body;
    } else {
      EXPECT_TRUE(content.contains("text/plain")) << "no content type in the file";
    }
    if (r->status < 300) served_ok_.insert(method + " " + pattern);
  }

  json doc_;
  ActingFakeService svc_;
  OneRouteSource routes_;
  std::unique_ptr<auth::Authenticator> auth_;
  std::unique_ptr<inventory::Inventory> inventory_;
  std::unique_ptr<SqliteStateStore> store_;
  std::unique_ptr<fleet::ByNameStarter> starter_;
  std::unique_ptr<fleet::FleetRunner> fleet_;
  std::unique_ptr<ApiServer> server_;
  std::set<std::string> served_ok_;
};

TEST_F(OpenApiContract, FileListsExactlyTheServedRoutes) {
  std::set<std::string> served, documented;
  for (const auto& r : ServedRoutes()) served.insert(r.method + " " + r.pattern);
  for (const auto& [path, item] : doc_["paths"].items()) {
    for (const auto& [method, op] : item.items()) {
      if (method == "parameters") continue;
      std::string m = method;
      for (auto& ch : m) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
      documented.insert(m + " " + path);
    }
  }
  for (const auto& s : served) EXPECT_TRUE(documented.count(s)) << s << " is not in openapi.yaml";
  for (const auto& d : documented) EXPECT_TRUE(served.count(d)) << d << " is not served";
}

TEST_F(OpenApiContract, TheValidatorRefusesWhatTheSchemasForbid) {
  std::vector<std::string> errors;
  const json migration = {{"$ref", "#/components/schemas/Migration"}};
  Validate(doc_, migration, json{{"id", "m-1"}, {"state", "sleeping"}}, "m", &errors);
  EXPECT_GE(errors.size(), 10u);  // missing fields, and a state outside the enum
  errors.clear();
  Validate(doc_, {{"$ref", "#/components/schemas/WhoAmI"}},
           json{{"identity", "x"}, {"team", nullptr}, {"operator", "yes"}}, "w", &errors);
  ASSERT_EQ(errors.size(), 1u);  // team may be null, operator must be a boolean
  EXPECT_NE(errors[0].find("w.operator"), std::string::npos);
}

TEST_F(OpenApiContract, ADatabaseOnSeveralProxyInstancesValidates) {
  inventory::RouteInfo route{"pool", "proxy", "app", "app", "127.0.0.1", 5432};
  route.instances = {
      {.admin_url = "http://10.0.1.1:6433", .reachable = true, .host = "127.0.0.1", .port = 5432},
      {.admin_url = "http://10.0.1.2:6433", .error = "did not answer"}};
  json view =
      inventory::DatabaseView{.name = "app", .route = route, .router_name = "pool"}.ToJson();
  view["migrations"] = json::array();
  view["can_act"] = false;
  ASSERT_EQ(view["router"]["instances"].size(), 2u);
  std::vector<std::string> errors;
  Validate(doc_, {{"$ref", "#/components/schemas/Database"}}, view, "db", &errors);
  for (const auto& e : errors) ADD_FAILURE() << e << "\n" << view.dump();
  view["router"]["instances"][1].erase("reachable");
  Validate(doc_, {{"$ref", "#/components/schemas/Database"}}, view, "db", &errors);
  EXPECT_EQ(errors.size(), 1u);  // the schema requires it
}

TEST_F(OpenApiContract, LiveAnswersValidateAgainstTheSchemas) {
  Check("GET", "/healthz", "/healthz", "", 200, nullptr);
  Check("GET", "/v1/phases", "/v1/phases", "", 200, nullptr);
  Check("GET", "/metrics", "/metrics", "", 401, nullptr);
  Check("GET", "/v1/whoami", "/v1/whoami", "", 200);
  Check("GET", "/v1/whoami", "/v1/whoami", "", 401, nullptr);
  Check("POST", "/v1/databases/{name}/migrations", "/v1/databases/app/migrations", "{}", 201);
  Check("POST", "/v1/databases/{name}/migrations", "/v1/databases/app/migrations", "{}", 409);
  Check("POST", "/v1/databases/{name}/migrations", "/v1/databases/app/migrations", "{}", 403,
        kTeamToken);
  Check("POST", "/v1/databases/{name}/migrations", "/v1/databases/zz/migrations", "{}", 404);
  Check("POST", "/v1/databases/{name}/migrations", "/v1/databases/app/migrations", "[]", 400);
  Check("GET", "/v1/databases", "/v1/databases", "", 200);
  Check("GET", "/v1/databases/{name}", "/v1/databases/app", "", 200);
  Check("GET", "/v1/databases/{name}", "/v1/databases/zz", "", 404);
  Check("POST", "/v1/migrations", "/v1/migrations", R"({"name":"expert"})", 201);
  Check("POST", "/v1/migrations", "/v1/migrations", R"({"name":"expert"})", 409);
  Check("POST", "/v1/migrations", "/v1/migrations", R"({"name":"x"})", 403, kTeamToken);
  Check("GET", "/v1/migrations", "/v1/migrations", "", 200);
  Check("GET", "/v1/migrations/{id}", "/v1/migrations/m-1", "", 200);
  Check("GET", "/v1/migrations/{id}", "/v1/migrations/m-9", "", 404);
  svc_.SetEvents("m-1", json::array({{{"at", "2024-05-01T10:00:00Z"},
                                      {"at_ms", 1},
                                      {"phase", "preflight"},
                                      {"kind", "info"},
                                      {"message", "created"}},
                                     {{"at", "2024-05-01T10:00:01Z"},
                                      {"at_ms", 2},
                                      {"phase", "provision"},
                                      {"kind", "info"},
                                      {"message", "provisioning"}}}));
  Check("GET", "/v1/migrations/{id}/events", "/v1/migrations/m-1/events", "", 200);
  Check("POST", "/v1/migrations/{id}/cutover", "/v1/migrations/m-1/cutover", "", 409);
  json ready = svc_.Get("m-1").value();
  ready["phase"] = "ready";
  ready["state"] = "blocked";
  ready["findings"] = json::array({{{"id", "unlogged_tables"},
                                    {"severity", "blocking"},
                                    {"subject", "public.t"},
                                    {"message", "unlogged"}}});
  svc_.Put(ready);
  Check("POST", "/v1/migrations/{id}/override", "/v1/migrations/m-1/override",
        R"({"finding":"unlogged_tables","reason":"cache"})", 200);
  ready["state"] = "waiting";
  svc_.Put(ready);
  Check("POST", "/v1/migrations/{id}/cutover", "/v1/migrations/m-1/cutover", "", 202);
  ready["phase"] = "verify";
  svc_.Put(ready);
  Check("POST", "/v1/migrations/{id}/finalize", "/v1/migrations/m-1/finalize", "", 202);
  Check("POST", "/v1/migrations/{id}/rollback", "/v1/migrations/m-2/rollback", "{}", 202);
  Check("POST", "/v1/migrations/{id}/retry", "/v1/migrations/m-2/retry", "", 202);
  Check("POST", "/v1/migrations/{id}/drop_slot", "/v1/migrations/m-2/drop_slot",
        R"({"slot":"s","reason":"r"})", 202);
  Check("POST", "/v1/migrations/{id}/rollback", "/v1/migrations/m-2/rollback", "true", 400);
  Check("POST", "/v1/migrations/{id}/retry", "/v1/migrations/m-2/retry", "", 401, nullptr);
  Check("GET", "/v1/audit", "/v1/audit", "", 200);
  Check("GET", "/v1/audit", "/v1/audit?limit=5000", "", 400);
  Check("GET", "/metrics", "/metrics", "", 200);
  Check("GET", "/metrics", "/metrics", "", 403, kTeamToken);
  Check("POST", "/v1/fleet/plan", "/v1/fleet/plan", R"({"by":"team"})", 200);
  Check("POST", "/v1/fleet/plan", "/v1/fleet/plan", R"({"by":"colour"})", 400);
  Check("POST", "/v1/fleet/plan", "/v1/fleet/plan", "{}", 403, kTeamToken);
  Check("POST", "/v1/fleet/runs", "/v1/fleet/runs", R"({"by":"team","databases":["app"]})", 201);
  Check("POST", "/v1/fleet/runs", "/v1/fleet/runs", R"({"databases":["zz"]})", 404);
  const std::string run = fleet_->List()->at(0).at("id");
  Check("POST", "/v1/fleet/runs/{id}/pause", "/v1/fleet/runs/" + run + "/pause", "", 200);
  Check("POST", "/v1/fleet/runs/{id}/pause", "/v1/fleet/runs/" + run + "/pause", "", 409);
  Check("POST", "/v1/fleet/runs/{id}/resume", "/v1/fleet/runs/" + run + "/resume", "", 200);
  fleet_->Tick();  // app has a live migration already: the start fails, the run stops
  Check("GET", "/v1/fleet/runs", "/v1/fleet/runs", "", 200);
  Check("GET", "/v1/fleet/runs/{id}", "/v1/fleet/runs/" + run, "", 200);
  Check("GET", "/v1/fleet/runs/{id}", "/v1/fleet/runs/f-nope", "", 404);
  Check("GET", "/v1/fleet/runs/{id}", "/v1/fleet/runs/" + run, "", 403, kTeamToken);
  for (const auto& r : ServedRoutes()) {
    const std::string key = r.method + " " + r.pattern;
    EXPECT_TRUE(served_ok_.count(key)) << key << " has no successful answer checked here";
  }
}

}  // namespace
}  // namespace pgshift::api
