// MigrationSpec::FromJson for source.replication_conninfo: what the target
// replicates from when it reaches the source at another address.
#include <gtest/gtest.h>

#include "model/migration.h"
#include "pg/conn.h"

namespace pgshift {
namespace {

using json = nlohmann::json;

json SpecWith(const json& source) {
  return {{"name", "m"},
          {"source", source},
          {"target", {{"data_dir", "/srv/pg/target"}, {"port", 6543}}}};
}

TEST(ReplicationConninfo, DefaultsToTheSourceConninfo) {
  auto s = MigrationSpec::FromJson(SpecWith({{"conninfo", "host=db1 port=5432 user=admin"}}));
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->replication_conninfo, "");
  EXPECT_EQ(*s->ReplicationConninfo(), "host=db1 port=5432 user=admin");
  EXPECT_FALSE(s->ToJson()["source"].contains("replication_conninfo"));
}

TEST(ReplicationConninfo, PutsItsAddressOverTheSourceLogin) {
  const json source = {{"conninfo", "host=db1 port=5432 user=admin dbname=postgres"},
                       {"replication_conninfo", "host=10.1.2.3 port=6432 sslmode=require"}};
  auto s = MigrationSpec::FromJson(SpecWith(source));
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  auto ci = s->ReplicationConninfo();
  ASSERT_TRUE(ci.ok()) << ci.status().ToString();
  auto kv = ParseConninfo(*ci);
  ASSERT_TRUE(kv.ok());
  EXPECT_EQ((*kv)["host"], "10.1.2.3");
  EXPECT_EQ((*kv)["port"], "6432");
  EXPECT_EQ((*kv)["sslmode"], "require");
  EXPECT_EQ((*kv)["user"], "admin");
  EXPECT_EQ((*kv)["dbname"], "postgres");
  // Stored and read back unchanged.
  auto again = MigrationSpec::FromJson(s->ToJson());
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->replication_conninfo, s->replication_conninfo);
}

TEST(ReplicationConninfo, RefusesWhatIsNotAnAddress) {
  struct Bad {
    std::string conninfo;
    std::string says;
  };
  const std::vector<Bad> bad = {
      {"host=10.1.2.3 user=other", "'user' cannot be set there"},
      {"host=10.1.2.3 password=x", "'password' cannot be set there"},
      {"host=10.1.2.3 dbname=app", "'dbname' cannot be set there"},
      {"host=10.1.2.3 port=notaport", "port 'notaport' is not a TCP port"},
      {"host='10.1.2.3", "source.replication_conninfo"},
  };
  for (const Bad& b : bad) {
    auto s = MigrationSpec::FromJson(
        SpecWith({{"conninfo", "host=db1 port=5432"}, {"replication_conninfo", b.conninfo}}));
    ASSERT_FALSE(s.ok()) << b.conninfo << " was accepted";
    EXPECT_EQ(s.status().code(), Code::kInvalidArgument);
    EXPECT_NE(s.status().message().find("source.replication_conninfo"), std::string::npos)
        << s.status().message();
    EXPECT_NE(s.status().message().find(b.says), std::string::npos)
        << b.conninfo << ": " << s.status().message();
  }
}

}  // namespace
}  // namespace pgshift
