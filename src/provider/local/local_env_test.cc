// LocalEnv against a real server named by its socket directory rather than
// an IP address: the "is the source up" probe must not assume an IPv4
// literal, or unfencing fails and retiring silently skips the source.
#include "provider/local/local_env.h"

#include <gtest/gtest.h>

#include "common/os.h"
#include "testing/pg_harness.h"

namespace pgshift {
namespace {

TEST(LocalEnv, SourceNamedBySocketDirectoryIsUnfencedAndRetired) {
  auto pg = testing::TestCluster::Create({.name = "sock"});
  ASSERT_TRUE(pg.ok()) << pg.status().ToString();
  const ClusterSpec& cs = (*pg)->cluster().spec();
  MigrationSpec spec;
  spec.name = "sock";
  spec.source_conninfo = "host=" + (*pg)->dir() + " port=" + std::to_string(cs.port) +
                         " user=postgres dbname=postgres";
  spec.target.data_dir = (*pg)->dir() + "/target";
  auto port = FreePort();
  ASSERT_TRUE(port.ok());
  spec.target.port = *port;
  auto router = MakeRouter({{"type", "none"}});
  ASSERT_TRUE(router.ok()) << router.status().ToString();
  LocalEnv env("m-sock", spec, std::move(router).value());
  EXPECT_EQ(env.SourceEndpoint().host, (*pg)->dir());
  ASSERT_TRUE(env.InspectSource().ok());

  auto fenced = env.FenceSource(HeldBackends{});
  ASSERT_TRUE(fenced.ok()) << fenced.status().ToString();
  Status unfenced = env.UnfenceSource();
  ASSERT_TRUE(unfenced.ok()) << unfenced.ToString();
  auto hba = ReadFile(cs.data_dir + "/pg_hba.conf");
  ASSERT_TRUE(hba.ok());
  EXPECT_EQ(hba->find("pgshift fence"), std::string::npos);

  Status retired = env.RetireSource();
  ASSERT_TRUE(retired.ok()) << retired.ToString();
  EXPECT_FALSE((*pg)->cluster().Running()) << "the source must be stopped, not skipped";
  // Retired: a second call finds it down and does nothing.
  EXPECT_TRUE(env.RetireSource().ok());
}

}  // namespace
}  // namespace pgshift
