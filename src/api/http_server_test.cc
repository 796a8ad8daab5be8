// ApiServer over real HTTP (httplib::Client on a free port) against
// FakeMigrationService: every route, every Status→HTTP mapping, and the
// request problems the server detects itself.
#include "api/http_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <stdexcept>
#include <thread>

#include "model/phase.h"
#include <vector>

#include "testing/fake_migration_service.h"

namespace pgshift::api {
namespace {

using nlohmann::json;

json ReadyMigration(const std::string& id) {
  return {{"id", id},
          {"name", "app-" + id},
          {"phase", "ready"},
          {"state", "waiting"},
          {"pending_action", "cutover"},
          {"findings", json::array({{{"id", "unlogged_tables"},
                                     {"severity", "blocking"},
                                     {"subject", "public.cache"},
                                     {"message", "unlogged table"},
                                     {"remedy", "make it logged"}}})},
          {"progress", json::object()},
          {"error", ""}};
}

class ApiServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<ApiServer>(svc_, "127.0.0.1", 0);
    ASSERT_TRUE(server_->Start().ok());
    ASSERT_GT(server_->port(), 0);
    client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
    client_->set_read_timeout(10);
  }
  void TearDown() override { server_->Stop(); }

  // Checks the answer is JSON with the given status and returns its body.
  json Expect(const httplib::Result& r, int status) {
    EXPECT_TRUE(r) << "request failed: " << httplib::to_string(r.error());
    if (!r) return nullptr;
    EXPECT_EQ(r->status, status) << r->body;
    EXPECT_EQ(r->get_header_value("Content-Type"), "application/json");
    json body;
    try {
      body = json::parse(r->body);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "body is not JSON: " << r->body;
    }
    return body;
  }
  void ExpectError(const httplib::Result& r, int status, const std::string& code,
                   const std::string& message_part) {
    json body = Expect(r, status);
    EXPECT_EQ(body.value("code", ""), code) << body.dump();
    EXPECT_NE(body.value("error", "").find(message_part), std::string::npos) << body.dump();
  }
  httplib::Result PostJson(const std::string& path, const std::string& body) {
    return client_->Post(path.c_str(), body, "application/json");
  }

  FakeMigrationService svc_;
  std::unique_ptr<ApiServer> server_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(ApiServerTest, Healthz) {
  json body = Expect(client_->Get("/healthz"), 200);
  EXPECT_EQ(body, json({{"ok", true}}));
}

TEST_F(ApiServerTest, PhasesServesThePhaseTableInOrder) {
  json body = Expect(client_->Get("/v1/phases"), 200);
  ASSERT_TRUE(body.is_array()) << body.dump();
  ASSERT_EQ(body.size(), kPhaseCount);
  EXPECT_EQ(body[0], (json{{"name", "preflight"},
                           {"order", 0},
                           {"branch", "main"},
                           {"in_hold", false},
                           {"terminal", false}}));
  std::vector<std::string> held;
  for (size_t i = 0; i < body.size(); ++i) {
    EXPECT_EQ(body[i]["order"], i);
    if (body[i]["in_hold"] == true) held.push_back(body[i]["name"]);
  }
  EXPECT_EQ(held, (std::vector<std::string>{"quiesce", "drain", "promote", "snapshot",
                                            "cdc_recreate", "switch"}));
  EXPECT_EQ(body[14]["name"], "finalized");
  EXPECT_EQ(body[14]["terminal"], true);
  EXPECT_EQ(body[16]["name"], "rolled_back");
  EXPECT_EQ(body[16]["branch"], "rollback");
  ExpectError(PostJson("/v1/phases", "{}"), 405, "invalid_argument", "use GET");
}

TEST_F(ApiServerTest, CreateReturns201WithTheMigrationAndPassesTheSpec) {
  json spec = {{"name", "app"}, {"source", {{"conninfo", "host=127.0.0.1 port=5432"}}}};
  json body = Expect(PostJson("/v1/migrations", spec.dump()), 201);
  EXPECT_EQ(body["id"], "m-1");
  EXPECT_EQ(body["name"], "app");
  EXPECT_EQ(body["phase"], "preflight");
  auto call = svc_.LastCall("Create");
  ASSERT_TRUE(call);
  EXPECT_EQ(call->body, spec);
}

TEST_F(ApiServerTest, CreateMapsServiceErrors) {
  ExpectError(PostJson("/v1/migrations", R"({"source":{}})"), 400, "invalid_argument",
              "spec.name is required");
  Expect(PostJson("/v1/migrations", R"({"name":"app"})"), 201);
  ExpectError(PostJson("/v1/migrations", R"({"name":"app"})"), 409, "already_exists",
              "a migration named 'app' exists");
}

TEST_F(ApiServerTest, ListWrapsMigrations) {
  Expect(PostJson("/v1/migrations", R"({"name":"a"})"), 201);
  Expect(PostJson("/v1/migrations", R"({"name":"b"})"), 201);
  json body = Expect(client_->Get("/v1/migrations"), 200);
  ASSERT_TRUE(body["migrations"].is_array());
  ASSERT_EQ(body["migrations"].size(), 2u);
  EXPECT_EQ(body["migrations"][0]["name"], "a");
  EXPECT_EQ(body["migrations"][1]["name"], "b");
}

TEST_F(ApiServerTest, GetAndUnknownMigration) {
  svc_.Put(ReadyMigration("m-7"));
  json body = Expect(client_->Get("/v1/migrations/m-7"), 200);
  EXPECT_EQ(body["phase"], "ready");
  ExpectError(client_->Get("/v1/migrations/m-404"), 404, "not_found",
              "migration 'm-404' not found");
}

TEST_F(ApiServerTest, EventsWrappedAndUnknownMigration) {
  svc_.Put(ReadyMigration("m-7"));
  json events = json::array({{{"at", "2024-05-01T10:00:00Z"},
                              {"phase", "sync"},
                              {"kind", "info"},
                              {"message", "caught up"}}});
  svc_.SetEvents("m-7", events);
  json body = Expect(client_->Get("/v1/migrations/m-7/events"), 200);
  EXPECT_EQ(body, json({{"events", events}}));
  ExpectError(client_->Get("/v1/migrations/nope/events"), 404, "not_found", "'nope' not found");
}

TEST_F(ApiServerTest, CutoverAccepted202AndWrongState409) {
  Expect(PostJson("/v1/migrations", R"({"name":"early"})"), 201);
  ExpectError(PostJson("/v1/migrations/m-1/cutover", ""), 409, "failed_precondition",
              "cutover needs phase ready");
  svc_.Put(ReadyMigration("m-9"));
  json body = Expect(PostJson("/v1/migrations/m-9/cutover", ""), 202);
  EXPECT_EQ(body["phase"], "quiesce");
  auto call = svc_.LastCall("Act");
  ASSERT_TRUE(call);
  EXPECT_EQ(call->id, "m-9");
  EXPECT_EQ(call->action, "cutover");
  EXPECT_EQ(call->body, json::object()) << "an empty body reaches the service as {}";
}

TEST_F(ApiServerTest, RollbackPassesBody) {
  json m = ReadyMigration("m-3");
  m["phase"] = "verify";
  m["state"] = "running";
  svc_.Put(m);
  ExpectError(PostJson("/v1/migrations/m-3/rollback", "{}"), 409, "failed_precondition",
              "discard_target_writes");
  json body =
      Expect(PostJson("/v1/migrations/m-3/rollback", R"({"discard_target_writes":true})"), 202);
  EXPECT_EQ(body["phase"], "rolling_back");
  EXPECT_EQ(svc_.LastCall("Act")->body, json({{"discard_target_writes", true}}));
}

TEST_F(ApiServerTest, FinalizeAndOverride) {
  json m = ReadyMigration("m-4");
  m["phase"] = "verify";
  svc_.Put(m);
  Expect(PostJson("/v1/migrations/m-4/finalize", ""), 202);

  svc_.Put(ReadyMigration("m-5"));
  json override_body = {
      {"finding", "unlogged_tables"}, {"subject", "public.cache"}, {"reason", "cache only"}};
  json body = Expect(PostJson("/v1/migrations/m-5/override", override_body.dump()), 200);
  EXPECT_EQ(body["findings"][0]["overridden"], true);
  EXPECT_EQ(svc_.LastCall("Act")->body, override_body);
  ExpectError(PostJson("/v1/migrations/m-5/override", R"({"finding":"x","reason":"r"})"), 404,
              "not_found", "no finding 'x'");
  ExpectError(PostJson("/v1/migrations/m-5/override", R"({"finding":"x"})"), 400,
              "invalid_argument", "needs a reason");
  ExpectError(PostJson("/v1/migrations/m-404/finalize", ""), 404, "not_found", "'m-404' not found");
}

TEST_F(ApiServerTest, EveryStatusCodeMapsToItsHttpStatus) {
  struct Case {
    Status st;
    int http;
    const char* code;
  };
  std::vector<Case> cases = {
      {InvalidArgument("bad"), 400, "invalid_argument"},
      {NotFound("gone"), 404, "not_found"},
      {AlreadyExists("dup"), 409, "already_exists"},
      {FailedPrecondition("not now"), 409, "failed_precondition"},
      {Unavailable("source down"), 503, "unavailable"},
      {Timeout("slow"), 504, "timeout"},
      {Aborted("released"), 409, "aborted"},
      {Internal("bug"), 500, "internal"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.code);
    svc_.FailNext(c.st);
    ExpectError(client_->Get("/v1/migrations"), c.http, c.code, c.st.message());
    svc_.FailNext(c.st);
    ExpectError(client_->Get("/v1/migrations/m-1/events"), c.http, c.code, c.st.message());
  }
}

TEST_F(ApiServerTest, MalformedJsonIs400NamingThePosition) {
  ExpectError(PostJson("/v1/migrations", R"({"name": "app",})"), 400, "invalid_argument",
              "invalid JSON in request body at byte 16");
  ExpectError(PostJson("/v1/migrations", "{\"name\":\n  oops}"), 400, "invalid_argument", "line 2");
  svc_.Put(ReadyMigration("m-1"));
  ExpectError(PostJson("/v1/migrations/m-1/cutover", "{"), 400, "invalid_argument",
              "invalid JSON in request body");
  for (const auto& c : svc_.calls())
    EXPECT_NE(c.method, "Create") << "bad JSON must not reach the service";
  EXPECT_FALSE(svc_.LastCall("Act"));
}

TEST_F(ApiServerTest, NonObjectAndEmptyBodies) {
  ExpectError(PostJson("/v1/migrations", "[1,2]"), 400, "invalid_argument",
              "must be a JSON object (the migration spec), got array");
  ExpectError(PostJson("/v1/migrations", "\"app\""), 400, "invalid_argument", "got string");
  ExpectError(PostJson("/v1/migrations", "  \n"), 400, "invalid_argument", "request body is empty");
  svc_.Put(ReadyMigration("m-1"));
  ExpectError(PostJson("/v1/migrations/m-1/rollback", "true"), 400, "invalid_argument",
              "got boolean");
}

TEST_F(ApiServerTest, UnknownPathsAre404) {
  ExpectError(client_->Get("/"), 404, "not_found", "no such endpoint: /");
  ExpectError(client_->Get("/v2/migrations"), 404, "not_found", "no such endpoint");
  ExpectError(client_->Get("/v1/migrations/m-1/events/extra"), 404, "not_found",
              "no such endpoint");
  ExpectError(PostJson("/v1/migrations/m-1/explode", "{}"), 404, "not_found",
              "unknown migration action 'explode'");
}

TEST_F(ApiServerTest, WrongMethodsAre405WithAllow) {
  auto r = client_->Delete("/v1/migrations/m-1");
  ExpectError(r, 405, "invalid_argument", "method DELETE is not allowed");
  EXPECT_EQ(r->get_header_value("Allow"), "GET");
  r = client_->Get("/v1/migrations/m-1/cutover");
  ExpectError(r, 405, "invalid_argument", "use POST");
  EXPECT_EQ(r->get_header_value("Allow"), "POST");
  r = client_->Put("/v1/migrations", "{}", "application/json");
  ExpectError(r, 405, "invalid_argument", "use GET, POST");
  ExpectError(PostJson("/healthz", "{}"), 405, "invalid_argument", "use GET");
  ExpectError(client_->Patch("/v1/migrations/m-1/events", "{}", "application/json"), 405,
              "invalid_argument", "use GET");
}

TEST_F(ApiServerTest, OversizedBodyIs413) {
  std::string big = R"({"name":")" + std::string(kMaxRequestBodyBytes, 'x') + R"("})";
  ExpectError(PostJson("/v1/migrations", big), 413, "invalid_argument", "exceeds 1048576 bytes");
  EXPECT_FALSE(svc_.LastCall("Create"));
  // The server keeps serving afterwards.
  Expect(client_->Get("/healthz"), 200);
}

TEST_F(ApiServerTest, OversizedChunkedBodyIs413) {
  std::string big = R"({"name":")" + std::string(kMaxRequestBodyBytes, 'x') + R"("})";
  auto r = client_->Post(
      "/v1/migrations",
      [&](size_t offset, httplib::DataSink& sink) {
        if (offset >= big.size()) {
          sink.done();
          return true;
        }
        size_t n = std::min<size_t>(64 * 1024, big.size() - offset);
        sink.write(big.data() + offset, n);
        return true;
      },
      "application/json");
  ExpectError(r, 413, "invalid_argument", "exceeds");
  EXPECT_FALSE(svc_.LastCall("Create"));
}

TEST_F(ApiServerTest, MalformedHttpRequestGetsJson400) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(server_->port()));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  std::string garbage = "BREW /v1/migrations HTCPCP/1.0\r\n\r\n";
  ASSERT_EQ(write(fd, garbage.data(), garbage.size()), static_cast<ssize_t>(garbage.size()));
  std::string answer;
  char buf[4096];
  ssize_t n;
  // The JSON body ends the answer; the connection itself stays open a while.
  while (answer.find("}\n") == std::string::npos && (n = read(fd, buf, sizeof buf)) > 0) {
    answer.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  EXPECT_EQ(answer.rfind("HTTP/1.1 400", 0), 0u) << answer;
  EXPECT_NE(answer.find("Content-Type: application/json"), std::string::npos) << answer;
  EXPECT_NE(answer.find(R"({"code":"invalid_argument","error":"malformed HTTP request"})"),
            std::string::npos)
      << answer;
}

class ThrowingService : public FakeMigrationService {
 public:
  Result<json> Get(const std::string&) override { throw std::runtime_error("kaboom"); }
};

TEST(ApiServerExceptions, ServiceExceptionIs500Json) {
  ThrowingService svc;
  ApiServer server(svc, "127.0.0.1", 0);
  ASSERT_TRUE(server.Start().ok());
  httplib::Client client("127.0.0.1", server.port());
  auto r = client.Get("/v1/migrations/m-1");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 500);
  json body = json::parse(r->body);
  EXPECT_EQ(body["code"], "internal");
  EXPECT_NE(body["error"].get<std::string>().find("kaboom"), std::string::npos);
}

TEST(ApiServerLifecycle, StartTwiceBusyPortAndStop) {
  FakeMigrationService svc;
  ApiServer a(svc, "127.0.0.1", 0);
  ASSERT_TRUE(a.Start().ok());
  EXPECT_EQ(a.Start().code(), Code::kFailedPrecondition);

  ApiServer b(svc, "127.0.0.1", a.port());
  Status st = b.Start();
  EXPECT_EQ(st.code(), Code::kUnavailable);
  EXPECT_NE(st.message().find(std::to_string(a.port())), std::string::npos) << st.message();

  int port = a.port();
  a.Stop();
  a.Stop();  // idempotent
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(2);
  EXPECT_FALSE(client.Get("/healthz"));
}

TEST(ApiServerLifecycle, StopRightAfterStartDoesNotHang) {
  FakeMigrationService svc;
  for (int i = 0; i < 20; ++i) {
    ApiServer s(svc, "127.0.0.1", 0);
    ASSERT_TRUE(s.Start().ok());
    s.Stop();
  }
}

TEST_F(ApiServerTest, ConcurrentClients) {
  svc_.Put(ReadyMigration("m-1"));
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&] {
      httplib::Client c("127.0.0.1", server_->port());
      for (int i = 0; i < 25; ++i) {
        auto r = c.Get("/v1/migrations/m-1");
        if (r && r->status == 200 && json::parse(r->body)["id"] == "m-1") ok++;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 150);
}

}  // namespace
}  // namespace pgshift::api
