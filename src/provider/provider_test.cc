// The provider seam's own pieces: the registry, the credential seam and the
// default EnsureReplica, driven with the in-memory fake env.
#include <gtest/gtest.h>

#include "pg/conn.h"
#include "provider/credentials.h"
#include "provider/registry.h"
#include "testing/fake_env.h"

namespace pgshift {
namespace {

MigrationSpec SpecFor(const std::string& provider) {
  MigrationSpec spec;
  spec.name = "app";
  spec.source_conninfo = "host=127.0.0.1 port=5432 user=postgres";
  spec.target.provider = provider;
  return spec;
}

TEST(ProviderRegistry, MakesWithTheSpecsProvider) {
  auto world = std::make_shared<FakeWorld>();
  ProviderRegistry registry;
  ASSERT_TRUE(registry.Register("fake", std::make_unique<FakeEnvFactory>(world)).ok());
  auto env = registry.Make("m1", SpecFor("fake"));
  ASSERT_TRUE(env.ok()) << env.status().ToString();
  EXPECT_EQ((*env)->SourceEndpoint(), world->source_ep);
}

TEST(ProviderRegistry, UnknownProviderListsTheKnownOnes) {
  auto world = std::make_shared<FakeWorld>();
  ProviderRegistry registry;
  ASSERT_TRUE(registry.Register("local", std::make_unique<FakeEnvFactory>(world)).ok());
  ASSERT_TRUE(registry.Register("fake", std::make_unique<FakeEnvFactory>(world)).ok());
  auto env = registry.Make("m1", SpecFor("aws"));
  ASSERT_FALSE(env.ok());
  EXPECT_EQ(env.status().code(), Code::kInvalidArgument);
  EXPECT_NE(env.status().message().find("'aws'"), std::string::npos);
  EXPECT_NE(env.status().message().find("available: fake, local"), std::string::npos);
}

TEST(ProviderRegistry, RefusesDuplicatesAndEmptyEntries) {
  auto world = std::make_shared<FakeWorld>();
  ProviderRegistry registry;
  ASSERT_TRUE(registry.Register("local", std::make_unique<FakeEnvFactory>(world)).ok());
  EXPECT_EQ(registry.Register("local", std::make_unique<FakeEnvFactory>(world)).code(),
            Code::kAlreadyExists);
  EXPECT_EQ(registry.Register("", std::make_unique<FakeEnvFactory>(world)).code(),
            Code::kInvalidArgument);
  EXPECT_EQ(registry.Register("aws", nullptr).code(), Code::kInvalidArgument);
  EXPECT_EQ(registry.Names(), std::vector<std::string>{"local"});
}

TEST(ProviderRegistry, EmptyRegistrySaysSo) {
  ProviderRegistry registry;
  auto env = registry.Make("m1", SpecFor("local"));
  ASSERT_FALSE(env.ok());
  EXPECT_NE(env.status().message().find("available: none"), std::string::npos);
}

TEST(EnsureReplica, DefaultRunsCreateReplicaToCompletion) {
  auto world = std::make_shared<FakeWorld>();
  world->slots.insert("s");
  FakeEnvFactory factory(world);
  auto env = factory.Make("m1", SpecFor("fake"));
  ASSERT_TRUE(env.ok());
  std::vector<int> seen;
  auto p = (*env)->EnsureReplica("s", [&](int pct) { seen.push_back(pct); });
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_TRUE(p->complete);
  EXPECT_EQ(p->percent, 100);
  EXPECT_EQ(seen, (std::vector<int>{50, 100}));
  EXPECT_TRUE(world->target_exists);
  // Its errors are CreateReplica's.
  EXPECT_EQ((*env)->EnsureReplica("missing", [](int) {}).status().code(),
            Code::kFailedPrecondition);
}

TEST(Credentials, FromTheConninfo) {
  ConninfoCredentials creds("host=db.internal port=5432 user=migrator password=s3cret");
  auto c = creds.Get();
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->user, "migrator");
  EXPECT_EQ(c->password, "s3cret");
  EXPECT_EQ(creds.Describe().find("s3cret"), std::string::npos);

  auto none = ConninfoCredentials("host=db.internal").Get();
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->user.empty());
  EXPECT_TRUE(none->password.empty());
  EXPECT_FALSE(ConninfoCredentials("host='unterminated").Get().ok());
}

TEST(Credentials, AppliedToAConninfo) {
  auto ci = WithCredentials("host=db.internal user=old password=old dbname=app",
                            Credentials{.user = "new", .password = "rotated"});
  ASSERT_TRUE(ci.ok());
  auto kv = ParseConninfo(*ci);
  ASSERT_TRUE(kv.ok());
  EXPECT_EQ(kv->at("user"), "new");
  EXPECT_EQ(kv->at("password"), "rotated");
  EXPECT_EQ(kv->at("dbname"), "app");
  EXPECT_EQ(kv->at("host"), "db.internal");
  // Empty fields keep what the conninfo has.
  auto kept = WithCredentials("host=h user=u password=p", Credentials{});
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ(ParseConninfo(*kept)->at("password"), "p");
}

TEST(Capabilities, NoneUnlessStated) {
  ProviderCapabilities none;
  EXPECT_FALSE(none.fence_exempts_held_sessions || none.source_host_access ||
               none.basebackup_rate_limit || none.sessions_survive_promotion ||
               none.promotes_within_hold || none.logical_slots_on_target ||
               none.failover_slot_sync);
  auto world = std::make_shared<FakeWorld>();
  world->capabilities.failover_slot_sync = true;
  auto env = FakeEnvFactory(world).Make("m1", SpecFor("fake"));
  ASSERT_TRUE(env.ok());
  EXPECT_TRUE((*env)->Capabilities().failover_slot_sync);
}

}  // namespace
}  // namespace pgshift
