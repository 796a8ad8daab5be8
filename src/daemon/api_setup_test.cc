// pgshiftd's API set-up: development mode only on loopback, authentication
// needs an access file, TLS flags go together, files are checked at load.
#include "daemon/api_setup.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "common/os.h"

namespace pgshift::daemon {
namespace {

TEST(ApiSetupTest, LoopbackAddresses) {
  EXPECT_TRUE(IsLoopback("127.0.0.1"));
  EXPECT_TRUE(IsLoopback("127.1.2.3"));
  EXPECT_TRUE(IsLoopback("localhost"));
  EXPECT_TRUE(IsLoopback("::1"));
  EXPECT_FALSE(IsLoopback("0.0.0.0"));
  EXPECT_FALSE(IsLoopback("10.0.0.1"));
  EXPECT_FALSE(IsLoopback(""));
}

TEST(ApiSetupTest, DevelopmentModeOnlyOnLoopback) {
  auto dev = LoadApiSetup({}, "127.0.0.1");
  ASSERT_TRUE(dev.ok()) << dev.status().ToString();
  EXPECT_TRUE(dev->dev_mode());
  EXPECT_FALSE(dev->inventory);
  auto open = LoadApiSetup({}, "0.0.0.0");
  ASSERT_FALSE(open.ok());
  EXPECT_NE(open.status().message().find("without authentication"), std::string::npos);
  EXPECT_NE(DevModeWarning("127.0.0.1", 7432).find("DEVELOPMENT MODE"), std::string::npos);
}

TEST(ApiSetupTest, FlagCombinations) {
  EXPECT_NE(LoadApiSetup({.tokens = "/x"}, "0.0.0.0").status().message().find("--access"),
            std::string::npos);
  EXPECT_FALSE(LoadApiSetup({.tls_cert = "/c"}, "127.0.0.1").ok());
  EXPECT_FALSE(LoadApiSetup({.access = "/a", .client_ca = "/ca"}, "127.0.0.1").ok());
  EXPECT_FALSE(LoadApiSetup({.access = "/a"}, "127.0.0.1").ok());
  EXPECT_FALSE(LoadApiSetup({.secrets = "/s"}, "127.0.0.1").ok());
}

TEST(ApiSetupTest, LoadsTokensAccessAndRegistry) {
  auto dir = MakeTempDir("pgshift-daemon-test");
  ASSERT_TRUE(dir.ok());
  const std::string d = *dir;
  ASSERT_TRUE(WriteFileAtomic(d + "/tokens", "ops-token-0123456789ab ops\n").ok());
  ASSERT_TRUE(WriteFileAtomic(d + "/access", "operators: [ops]\n").ok());
  ASSERT_TRUE(WriteFileAtomic(d + "/secrets", "pw: hunter2\n").ok());
  ASSERT_TRUE(WriteFileAtomic(d + "/reg.yaml",
                              "secrets: secrets\ndatabases:\n  app:\n    team: t\n"
                              "    source: {host: h, credential: pw}\n")
                  .ok());
  chmod((d + "/tokens").c_str(), 0644);
  chmod((d + "/secrets").c_str(), 0600);
  Flags f{.registry = d + "/reg.yaml", .tokens = d + "/tokens", .access = d + "/access"};
  auto loose = LoadApiSetup(f, "0.0.0.0");
  ASSERT_FALSE(loose.ok());
  EXPECT_NE(loose.status().message().find("chmod 600"), std::string::npos);
  chmod((d + "/tokens").c_str(), 0600);
  auto ok = LoadApiSetup(f, "0.0.0.0");
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_FALSE(ok->dev_mode());
  ASSERT_TRUE(ok->inventory);
  EXPECT_EQ(ok->inventory->secrets().Get("pw").value_or(""), "hunter2");
  ApiSetup moved = std::move(*ok);  // the route source's secrets survive a move
  EXPECT_EQ(moved.inventory->List(nullptr).size(), 1u);
  (void)RemoveTree(d);
}

}  // namespace
}  // namespace pgshift::daemon
