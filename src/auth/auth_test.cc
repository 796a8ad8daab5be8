// Unit tests of the configuration loader, the tokens and access files and
// the authenticator's decisions.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include "auth/authenticator.h"
#include "auth/config_doc.h"
#include "auth/credentials.h"
#include "common/os.h"

namespace pgshift::auth {
namespace {

constexpr const char* kAliceToken = "alice-token-0123456789";
constexpr const char* kBobToken = "bob-token-0123456789ab";

TEST(ConfigDocTest, YamlValuesAreTypedAndLinesKnown) {
  auto doc = ParseConfigDoc(
      "databases:\n"
      "  app:\n"
      "    team: payments\n"
      "    port: 5432\n"
      "    tags: [a, \"b\"]\n"
      "    quoted: \"5432\"\n"
      "    flag: true\n"
      "    nothing: ~\n",
      "reg.yaml");
  ASSERT_TRUE(doc.ok()) << doc.status().ToString();
  EXPECT_EQ(doc->root["databases"]["app"]["team"], "payments");
  EXPECT_EQ(doc->root["databases"]["app"]["port"], 5432);
  EXPECT_EQ(doc->root["databases"]["app"]["quoted"], "5432");
  EXPECT_EQ(doc->root["databases"]["app"]["flag"], true);
  EXPECT_TRUE(doc->root["databases"]["app"]["nothing"].is_null());
  EXPECT_EQ(doc->root["databases"]["app"]["tags"][1], "b");
  EXPECT_EQ(doc->LineOf("/databases/app/team"), 3);
  EXPECT_EQ(doc->LineOf("/databases/app/tags/1"), 5);
  EXPECT_EQ(doc->LineOf("/databases/app/missing"), doc->LineOf("/databases/app"));
  Status st = doc->Error("/databases/app/port", "must be a string");
  EXPECT_EQ(st.message(), "reg.yaml:4: field databases.app.port: must be a string");
  EXPECT_EQ(FieldName("/databases/app/tags/1"), "databases.app.tags[1]");
}

TEST(ConfigDocTest, JsonIsAccepted) {
  auto doc = ParseConfigDoc("{\"a\": {\"b\": [1, 2.5, \"x\"]}}", "x.json");
  ASSERT_TRUE(doc.ok()) << doc.status().ToString();
  EXPECT_EQ(doc->root["a"]["b"][0], 1);
  EXPECT_DOUBLE_EQ(doc->root["a"]["b"][1].get<double>(), 2.5);
}

TEST(ConfigDocTest, SyntaxErrorsAndDuplicatesNameFileAndLine) {
  auto bad = ParseConfigDoc("a: 1\nb: [1, 2\nc: 3\n", "bad.yaml");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), Code::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("bad.yaml:"), std::string::npos);
  auto dup = ParseConfigDoc("a: 1\nb: 2\na: 3\n", "dup.yaml");
  ASSERT_FALSE(dup.ok());
  EXPECT_NE(dup.status().message().find("dup.yaml:3: field a: duplicate key"), std::string::npos)
      << dup.status().message();
}

class PrivateFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = MakeTempDir("pgshift-auth-test");
    ASSERT_TRUE(d.ok());
    dir_ = *d;
  }
  void TearDown() override { (void)RemoveTree(dir_); }
  std::string Write(const std::string& name, const std::string& text, mode_t mode) {
    std::string p = dir_ + "/" + name;
    EXPECT_TRUE(WriteFileAtomic(p, text).ok());
    chmod(p.c_str(), mode);
    return p;
  }
  std::string dir_;
};

TEST_F(PrivateFileTest, TokensFileMustBePrivate) {
  std::string text = std::string(kAliceToken) + " alice\n";
  auto open = Write("tokens", text, 0644);
  auto loaded = TokenTable::Load(open);
  ASSERT_FALSE(loaded.ok());
  EXPECT_NE(loaded.status().message().find("mode 0644"), std::string::npos);
  EXPECT_NE(loaded.status().message().find("chmod 600"), std::string::npos);
  auto closed = Write("tokens2", text, 0600);
  auto ok = TokenTable::Load(closed);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->IdentityOf(kAliceToken), "alice");
}

TEST(TokenTableTest, LinesAndMappings) {
  auto lines = TokenTable::Parse(
      "# comment\n\n" + std::string(kAliceToken) + " alice\n" + kBobToken + "\tbob\n", "t");
  ASSERT_TRUE(lines.ok()) << lines.status().ToString();
  EXPECT_EQ(lines->size(), 2u);
  EXPECT_EQ(lines->IdentityOf(kBobToken), "bob");
  EXPECT_EQ(lines->IdentityOf("nope-nope-nope-nope"), "");
  EXPECT_EQ(lines->IdentityOf(""), "");
  auto map = TokenTable::Parse("{\"" + std::string(kAliceToken) + "\": \"alice\"}", "t.json");
  ASSERT_TRUE(map.ok()) << map.status().ToString();
  EXPECT_EQ(map->IdentityOf(kAliceToken), "alice");
}

TEST(TokenTableTest, ErrorsNameTheLineNeverTheToken) {
  auto shortish = TokenTable::Parse("ok-token-0123456789 a\nshort b\n", "tokens");
  ASSERT_FALSE(shortish.ok());
  EXPECT_NE(shortish.status().message().find("tokens:2:"), std::string::npos);
  EXPECT_EQ(shortish.status().message().find("short"), std::string::npos);
  auto missing = TokenTable::Parse("lonely-token-0123456789\n", "tokens");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().message().find("lonely"), std::string::npos);
  EXPECT_FALSE(TokenTable::Parse("", "tokens").ok());
}

TEST(AccessPolicyTest, RolesAndErrors) {
  auto a = AccessPolicy::Parse(
      "operators: [alice]\n"
      "teams:\n"
      "  payments: [bob, ci]\n"
      "  search: [carol]\n",
      "access.yaml");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_TRUE(a->RoleOf("alice").is_operator);
  EXPECT_EQ(a->RoleOf("bob").team, "payments");
  EXPECT_FALSE(a->RoleOf("bob").is_operator);
  EXPECT_FALSE(a->Knows("mallory"));
  auto twice = AccessPolicy::Parse("teams:\n  a: [x]\n  b: [x]\n", "access.yaml");
  ASSERT_FALSE(twice.ok());
  EXPECT_NE(twice.status().message().find("access.yaml:3: field teams.b"), std::string::npos)
      << twice.status().message();
  auto unknown = AccessPolicy::Parse("operators: [a]\nadmins: [b]\n", "access.yaml");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("access.yaml:2: field admins: unknown field"),
            std::string::npos)
      << unknown.status().message();
}

class AuthenticatorTest : public ::testing::Test {
 protected:
  Authenticator Make(bool certs = true) {
    auto tokens = TokenTable::Parse(std::string(kAliceToken) + " alice\n" + kBobToken + " bob\n" +
                                        "stranger-token-0123456789 stranger\n",
                                    "tokens");
    auto access = AccessPolicy::Parse(
        "operators: [alice]\nteams:\n  payments: [bob, svc.example]\n", "access");
    EXPECT_TRUE(tokens.ok() && access.ok());
    return Authenticator(*tokens, certs, *access);
  }
};

TEST_F(AuthenticatorTest, TokensGiveIdentityAndRole) {
  auto a = Make();
  auto alice = a.Authenticate({.authorization = std::string("Bearer ") + kAliceToken});
  ASSERT_TRUE(alice.ok());
  EXPECT_EQ(alice->identity, "alice");
  EXPECT_TRUE(alice->is_operator());
  auto bob = a.Authenticate({.authorization = std::string("Bearer ") + kBobToken});
  ASSERT_TRUE(bob.ok());
  EXPECT_EQ(bob->team(), "payments");
  EXPECT_TRUE(bob->CanActOn("payments"));
  EXPECT_FALSE(bob->CanActOn("search"));
  EXPECT_FALSE(bob->CanActOn(""));
  EXPECT_EQ(RequireOperator(*bob, "the expert form").code(), Code::kPermissionDenied);
  EXPECT_TRUE(RequireActOn(*bob, "app", "payments", "cutover").ok());
  Status denied = RequireActOn(*bob, "search", "search", "cutover");
  EXPECT_EQ(denied.code(), Code::kPermissionDenied);
  EXPECT_NE(denied.message().find("team 'search'"), std::string::npos) << denied.message();
}

TEST_F(AuthenticatorTest, RefusalsAreUnauthenticatedOrForbidden) {
  auto a = Make();
  auto none = a.Authenticate({});
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), Code::kUnauthenticated);
  EXPECT_EQ(HttpStatusFor(none.status().code()), 401);
  auto bad = a.Authenticate({.authorization = "Bearer not-a-known-token-123"});
  EXPECT_EQ(bad.status().code(), Code::kUnauthenticated);
  auto basic = a.Authenticate({.authorization = "Basic abc"});
  EXPECT_EQ(basic.status().code(), Code::kUnauthenticated);
  auto stranger = a.Authenticate({.authorization = "Bearer stranger-token-0123456789"});
  ASSERT_TRUE(stranger.ok());
  Status st = RequireRole(*stranger);
  EXPECT_EQ(st.code(), Code::kPermissionDenied);
  EXPECT_EQ(HttpStatusFor(st.code()), 403);
  EXPECT_STREQ(CodeName(st.code()), "forbidden");
}

TEST_F(AuthenticatorTest, CertificatesUseTheNameTheAccessFileKnows) {
  auto a = Make();
  auto c = a.Authenticate({.cert_names = {"host-42", "svc.example"}});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->identity, "svc.example");
  EXPECT_EQ(c->team(), "payments");
  auto unknown = a.Authenticate({.cert_names = {"host-42"}});
  ASSERT_TRUE(unknown.ok());
  EXPECT_EQ(unknown->identity, "host-42");
  EXPECT_FALSE(unknown->role.any());
}

TEST(AuthenticatorDevTest, DevModeIsAnOperator) {
  auto a = Authenticator::DevMode();
  auto c = a.Authenticate({});
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(c->is_operator());
  EXPECT_TRUE(c->dev_mode);
  EXPECT_EQ(c->identity, kDevIdentity);
}

}  // namespace
}  // namespace pgshift::auth
