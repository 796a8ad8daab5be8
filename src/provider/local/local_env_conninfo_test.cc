// Every form of source conninfo libpq accepts either works through a whole
// LocalEnv lifecycle or is refused when the migration is created (issue 17).
// Refused: forms that do not name exactly one server. Working, against real
// servers: a Unix-socket directory (key=value and URI), `localhost`, IPv6
// (`::1` and `[::1]` in a URI) and `hostaddr` — each builds the replica
// through it (pg_basebackup -d, the standby's primary_conninfo), is fenced,
// unfenced and fenced again, writes the final marker the standby replays,
// drops its slot and is retired: the source stops and refuses connections.
#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <cstdlib>
#include <functional>
#include <thread>

#include "checks/checks.h"
#include "common/clock.h"
#include "pg/conn.h"
#include "provider/local/local_env_testing.h"

namespace pgshift {
namespace {

using local_testing::SocketConninfo;
using local_testing::SpecFor;
using local_testing::TargetStopper;

TEST(SourceConninfo, FormsThatDoNotNameOneServerAreRefusedAtCreate) {
  struct Bad {
    std::string conninfo;
    std::string says;
  };
  const std::vector<Bad> bad = {
      {"host=10.0.0.1,10.0.0.2 port=5432 user=postgres", "several servers"},
      {"postgresql://postgres@db1:5432,db2:5432/postgres", "several servers"},
      {"hostaddr=10.0.0.1,10.0.0.2 port=5432", "several servers"},
      {"host=127.0.0.1 port=5432,5433", "several servers"},
      {"host=127.0.0.1 port=postgres", "not a TCP port"},
      {"host=127.0.0.1 port=70000", "not a TCP port"},
      {"service=warehouse dbname=app", "names a service"},
      {"host=@pgsocket port=5432", "abstract Unix socket"},
  };
  LocalEnvFactory factory;
  for (const Bad& b : bad) {
    MigrationSpec spec;
    spec.name = "bad";
    spec.source_conninfo = b.conninfo;
    spec.target.data_dir = "/nonexistent/pgshift-target";
    spec.target.port = 1;
    auto env = factory.Make("m-bad", spec);
    ASSERT_FALSE(env.ok()) << b.conninfo << " was accepted";
    EXPECT_EQ(env.status().code(), Code::kInvalidArgument) << b.conninfo;
    EXPECT_NE(env.status().message().find("source.conninfo"), std::string::npos)
        << env.status().message();
    EXPECT_NE(env.status().message().find(b.says), std::string::npos)
        << b.conninfo << ": " << env.status().message();
  }
}

TEST(SourceConninfo, ResolvesLikeLibpq) {
  struct Case {
    std::string conninfo;
    std::string address;
    int port;
  };
  const std::vector<Case> cases = {
      {"host=/run/pg port=6000", "/run/pg", 6000},
      {"postgresql://u@[::1]:6001/db", "::1", 6001},
      {"postgresql:///db?host=%2Frun%2Fpg&port=6002", "/run/pg", 6002},
      {"postgresql://%2Frun%2Fpg:6003/db", "/run/pg", 6003},
      {"hostaddr=127.0.0.1 port=6004", "127.0.0.1", 6004},
      {"host=db.example hostaddr=10.0.0.1 port=6005", "db.example", 6005},
      {"host=localhost port=6006", "localhost", 6006},
      {"host=db1 port=6007 service=ignored", "db1", 6007},
  };
  for (const Case& c : cases) {
    auto t = ResolveConnTarget(c.conninfo);
    ASSERT_TRUE(t.ok()) << c.conninfo << ": " << t.status().ToString();
    EXPECT_EQ(t->Address(), c.address) << c.conninfo;
    EXPECT_EQ(t->port, c.port) << c.conninfo;
  }
  // Left out: the environment, then libpq's compiled-in socket directory and port.
  for (const char* var : {"PGHOST", "PGHOSTADDR", "PGPORT", "PGSERVICE"}) unsetenv(var);
  auto plain = ResolveConnTarget("dbname=app");
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  EXPECT_EQ(plain->host, "/var/run/postgresql");
  EXPECT_TRUE(plain->UnixSocket());
  EXPECT_EQ(plain->port, 5432);
  setenv("PGHOST", "/run/other", 1);
  setenv("PGPORT", "6100", 1);
  auto env = ResolveConnTarget("dbname=app");
  unsetenv("PGHOST");
  unsetenv("PGPORT");
  ASSERT_TRUE(env.ok()) << env.status().ToString();
  EXPECT_EQ(env->host, "/run/other");
  EXPECT_EQ(env->port, 6100);
}

// One way of naming the test cluster: its conninfo, and the host the env's
// SourceEndpoint must report (what a router is given).
struct Form {
  std::string name;
  std::function<std::string(testing::TestCluster&)> conninfo;
  std::function<std::string(testing::TestCluster&)> endpoint_host;
};

// Names the parameter in test output (the default dumps its bytes).
void PrintTo(const Form& form, std::ostream* os) { *os << form.name; }

std::string Port(testing::TestCluster& pg) { return std::to_string(pg.port()); }

std::vector<Form> Forms() {
  auto dir = [](testing::TestCluster& pg) { return pg.dir(); };
  auto fixed = [](const char* host) {
    return [host](testing::TestCluster&) { return std::string(host); };
  };
  return {
      {"socket_dir", [](testing::TestCluster& pg) { return SocketConninfo(pg); }, dir},
      {"socket_dir_uri",
       [](testing::TestCluster& pg) {
         return "postgresql://postgres@/postgres?host=" + pg.dir() + "&port=" + Port(pg);
       },
       dir},
      {"localhost",
       [](testing::TestCluster& pg) {
         return "host=localhost port=" + Port(pg) + " user=postgres dbname=postgres";
       },
       fixed("localhost")},
      {"ipv6",
       [](testing::TestCluster& pg) {
         return "host=::1 port=" + Port(pg) + " user=postgres dbname=postgres";
       },
       fixed("::1")},
      {"ipv6_uri",
       [](testing::TestCluster& pg) {
         return "postgresql://postgres@[::1]:" + Port(pg) + "/postgres";
       },
       fixed("::1")},
      {"hostaddr",
       [](testing::TestCluster& pg) {
         return "hostaddr=127.0.0.1 port=" + Port(pg) + " user=postgres dbname=postgres";
       },
       fixed("127.0.0.1")},
  };
}

bool WaitFor(const std::function<bool()>& cond, int64_t timeout_ms) {
  const int64_t deadline = MonotonicMs() + timeout_ms;
  while (MonotonicMs() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return cond();
}

class SourceConninfoForm : public ::testing::TestWithParam<Form> {};

TEST_P(SourceConninfoForm, WholeLifecycle) {
  const Form& form = GetParam();
  auto pg = testing::TestCluster::Create(
      {.name = "ci", .settings = {{"listen_addresses", "'127.0.0.1,::1'"}}});
  ASSERT_TRUE(pg.ok()) << pg.status().ToString();
  testing::TestCluster& cluster = **pg;
  ASSERT_TRUE(cluster.Psql("create role app login").ok());
  ASSERT_TRUE(cluster.Psql("create table t (k int)").ok());
  const std::string app = cluster.cluster().Conninfo("postgres", "app");
  const std::string source_ci = form.conninfo(cluster);

  // Created through the factory, as Engine::Create does.
  LocalEnvFactory factory;
  auto made = factory.Make("m-" + form.name, SpecFor(cluster, source_ci, form.name));
  ASSERT_TRUE(made.ok()) << source_ci << ": " << made.status().ToString();
  MigrationEnv& env = **made;
  TargetStopper stopper(&env);
  EXPECT_EQ(env.SourceEndpoint(), (Endpoint{form.endpoint_host(cluster), cluster.port()}));

  auto preflight = env.PreflightFindings();
  ASSERT_TRUE(preflight.ok()) << preflight.status().ToString();
  EXPECT_FALSE(checks::AnyBlocking(*preflight)) << checks::RenderFindingsTable(*preflight);

  // The replica is built and streams through this form.
  const std::string slot = SlotNameFor("m-" + form.name);
  ASSERT_TRUE(env.EnsurePhysicalSlot(slot).ok());
  Status built = env.CreateReplica(slot, [](int) {});
  ASSERT_TRUE(built.ok()) << built.ToString();
  ASSERT_TRUE(cluster.Psql("insert into t select generate_series(1, 100)").ok());
  EXPECT_TRUE(WaitFor(
      [&] {
        auto lag = env.Lag(slot);
        return lag.ok() && lag->bytes == 0 && lag->seconds < 1e9;
      },
      30000))
      << "the standby did not stream from the source";

  // Fenced: the application's logins are refused; the final marker reaches the standby.
  auto fenced = env.FenceSource(HeldBackends{.server = env.SourceEndpoint()});
  ASSERT_TRUE(fenced.ok()) << fenced.status().ToString();
  EXPECT_FALSE(PgConn::Connect(app, 5).ok()) << "the fence let the application in";
  auto marker = env.WriteFinalMarker("pgshift final " + form.name);
  ASSERT_TRUE(marker.ok()) << marker.status().ToString();
  EXPECT_TRUE(WaitFor(
      [&] {
        auto t = env.InspectTarget();
        return t.ok() && t->replay_lsn.value >= marker->value;
      },
      30000))
      << "the standby did not replay the final marker";

  // Unfenced, the application logs in again; then fenced for good.
  Status unfenced = env.UnfenceSource();
  ASSERT_TRUE(unfenced.ok()) << unfenced.ToString();
  EXPECT_TRUE(PgConn::Connect(app, 5).ok()) << "still fenced after UnfenceSource";
  ASSERT_TRUE(env.FenceSource(HeldBackends{.server = env.SourceEndpoint()}).ok());

  auto timeline = env.PromoteTarget();
  ASSERT_TRUE(timeline.ok()) << timeline.status().ToString();
  Status dropped = env.DropSlot(slot);
  ASSERT_TRUE(dropped.ok()) << dropped.ToString();
  auto slots =
      cluster.Psql("select count(*) from pg_replication_slots where slot_name = '" + slot + "'");
  ASSERT_TRUE(slots.ok()) << slots.status().ToString();
  EXPECT_EQ(*slots, "0\n");

  Status retired = env.RetireSource();
  ASSERT_TRUE(retired.ok()) << retired.ToString();
  EXPECT_FALSE(cluster.cluster().Running()) << "the source must be stopped, not skipped";
  EXPECT_EQ(PQping(source_ci.c_str()), PQPING_NO_RESPONSE)
      << "the retired source still answers through " << source_ci;
  EXPECT_TRUE(env.RetireSource().ok()) << "retiring a retired source is a no-op";
}

INSTANTIATE_TEST_SUITE_P(Forms, SourceConninfoForm, ::testing::ValuesIn(Forms()),
                         [](const ::testing::TestParamInfo<Form>& p) { return p.param.name; });

}  // namespace
}  // namespace pgshift
