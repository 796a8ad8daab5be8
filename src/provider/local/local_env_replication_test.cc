// source.replication_conninfo against real servers: the target replicates
// through another address than pgshiftd's (here a TcpRelay, as a NAT or a
// TCP proxy would be). The base backup and the standby's stream go through
// it, pgshiftd's own sessions do not; a cut shows as a standby that is not
// streaming, and streaming resumes when the network is back. Preflight names
// an address that leads nowhere or to another server.
#include <gtest/gtest.h>

#include "checks/checks.h"
#include "common/os.h"
#include "provider/local/local_env_testing.h"
#include "testing/tcp_relay.h"

namespace pgshift {
namespace {

using local_testing::EnvFor;
using local_testing::SpecFor;
using local_testing::TargetStopper;
using local_testing::WaitFor;

// A loaded machine's bound for a standby to (re)connect and catch up.
constexpr int64_t kStreamBoundMs = 60000;

const checks::Finding* Find(const std::vector<checks::Finding>& fs, const std::string& id) {
  for (const auto& f : fs) {
    if (f.id == id) return &f;
  }
  return nullptr;
}

TEST(ReplicationConninfo, TheStandbyStreamsThroughItAndSurvivesACut) {
  auto pg = testing::TestCluster::Create({.name = "rc"});
  ASSERT_TRUE(pg.ok()) << pg.status().ToString();
  testing::TestCluster& cluster = **pg;
  ASSERT_TRUE(cluster.Psql("create table t (k int)").ok());
  auto relay = testing::TcpRelay::Start("127.0.0.1", cluster.port());
  ASSERT_TRUE(relay.ok()) << relay.status().ToString();
  testing::TcpRelay& net = **relay;

  MigrationSpec spec = SpecFor(cluster, cluster.Conninfo(), "rc");
  spec.replication_conninfo = "host=127.0.0.1 port=" + std::to_string(net.port());
  LocalEnvFactory factory;
  auto made = factory.Make("m-rc", spec);
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  MigrationEnv& env = **made;
  TargetStopper stopper(&env);

  auto preflight = env.PreflightFindings();
  ASSERT_TRUE(preflight.ok()) << preflight.status().ToString();
  EXPECT_FALSE(checks::AnyBlocking(*preflight)) << checks::RenderFindingsTable(*preflight);
  const checks::Finding* endpoint = Find(*preflight, "replication_endpoint");
  ASSERT_NE(endpoint, nullptr);
  EXPECT_EQ(endpoint->severity, checks::Severity::kOk);

  const std::string slot = SlotNameFor("m-rc");
  ASSERT_TRUE(env.EnsurePhysicalSlot(slot).ok());
  const int64_t before_backup = net.accepted();
  Status built = env.CreateReplica(slot, [](int) {});
  ASSERT_TRUE(built.ok()) << built.ToString();
  EXPECT_GT(net.accepted(), before_backup) << "the base backup went around the relay";
  auto auto_conf = ReadFile(spec.target.data_dir + "/postgresql.auto.conf");
  ASSERT_TRUE(auto_conf.ok());
  EXPECT_NE(auto_conf->find("port=" + std::to_string(net.port())), std::string::npos)
      << "primary_conninfo does not name the replication address:\n"
      << *auto_conf;

  auto streaming = [&] {
    auto lag = env.Lag(slot);
    return lag.ok() && lag->bytes == 0 && lag->seconds < 1e9;
  };
  ASSERT_TRUE(cluster.Psql("insert into t select generate_series(1, 100)").ok());
  ASSERT_TRUE(WaitFor(streaming, kStreamBoundMs)) << "the standby did not stream";
  EXPECT_GE(net.open(), 1) << "the standby's stream is not through the relay";

  // Cut: the standby stops streaming; pgshiftd's own view of both sides works.
  net.Cut();
  ASSERT_TRUE(cluster.Psql("insert into t select generate_series(101, 200)").ok());
  EXPECT_TRUE(WaitFor(
      [&] {
        auto lag = env.Lag(slot);
        return lag.ok() && lag->seconds >= 1e9;
      },
      kStreamBoundMs))
      << "a cut network still counts as streaming";
  auto lag = env.Lag(slot);
  ASSERT_TRUE(lag.ok()) << lag.status().ToString();
  EXPECT_GT(lag->bytes, 0u) << "the standby replayed through a cut network";

  // Restored: the standby reconnects by itself and catches up.
  ASSERT_TRUE(net.Restore().ok());
  EXPECT_TRUE(WaitFor(streaming, kStreamBoundMs)) << "the standby did not come back";
  auto rows = cluster.Psql("select count(*) from t");
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(*rows, "200\n");
}

TEST(ReplicationConninfo, PreflightBlocksAnAddressThatLeadsNowhereOrElsewhere) {
  auto pg = testing::TestCluster::Create({.name = "rc-src"});
  ASSERT_TRUE(pg.ok()) << pg.status().ToString();
  auto other = testing::TestCluster::Create({.name = "rc-other"});
  ASSERT_TRUE(other.ok()) << other.status().ToString();
  auto free_port = FreePort();
  ASSERT_TRUE(free_port.ok());
  struct Case {
    std::string replication_conninfo;
    std::string value;
  };
  const std::vector<Case> cases = {
      {"host=127.0.0.1 port=" + std::to_string(*free_port), "unreachable"},
      {"host=127.0.0.1 port=" + std::to_string((*other)->port()), "another server"},
  };
  for (const Case& c : cases) {
    MigrationSpec spec = SpecFor(**pg, (*pg)->Conninfo(), "rc");
    spec.replication_conninfo = c.replication_conninfo;
    auto env = EnvFor(spec, "m-rc");
    ASSERT_TRUE(env);
    auto findings = env->PreflightFindings();
    ASSERT_TRUE(findings.ok()) << findings.status().ToString();
    const checks::Finding* f = Find(*findings, "replication_endpoint");
    ASSERT_NE(f, nullptr) << c.replication_conninfo;
    EXPECT_EQ(f->severity, checks::Severity::kBlocking) << c.replication_conninfo;
    EXPECT_EQ(f->value, c.value) << c.replication_conninfo << ": " << f->message;
    EXPECT_NE(f->message.find("source.replication_conninfo"), std::string::npos) << f->message;
  }
}

TEST(ReplicationConninfo, FactoryRefusesOneThatNamesSeveralServers) {
  MigrationSpec spec;
  spec.name = "bad";
  spec.source_conninfo = "host=127.0.0.1 port=5432";
  spec.replication_conninfo = "host=10.0.0.1,10.0.0.2";
  spec.target.data_dir = "/nonexistent/pgshift-target";
  spec.target.port = 1;
  auto env = LocalEnvFactory().Make("m-bad", spec);
  ASSERT_FALSE(env.ok());
  EXPECT_EQ(env.status().code(), Code::kInvalidArgument);
  EXPECT_NE(env.status().message().find("source.replication_conninfo"), std::string::npos)
      << env.status().message();
}

}  // namespace
}  // namespace pgshift
