// End-to-end: real PostgreSQL source under real load (pgbench + ledger
// writers) through a real PgBouncer, a real pgshiftd process driven over its
// REST API, a real physical replica that is promoted. Every acknowledged
// write must be on the new primary exactly once.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>

#include "common/os.h"
#include "demo/sandbox.h"
#include "e2e/e2e_fixture.h"
#include "load/ledger.h"
#include "load/pgbench_load.h"
#include "pg/conn.h"
#include "router/router.h"

namespace pgshift {
namespace {

using e2e::kMigrationBoundMs;
using e2e::Terminal;
using json = nlohmann::json;

class MigrationE2E : public e2e::SandboxTest {
 protected:
  std::string Router() const override { return "pgbouncer"; }
  void TearDown() override {
    pgbench_.reset();
    SandboxTest::TearDown();
  }
  void StartLoad(const std::string& protocol = "simple") {
    StartWriters();
    pgbench_ = std::make_unique<load::PgbenchLoad>(
        load::PgbenchOptions{.conninfo = sb_->AppConninfo(),
                             .clients = 4,
                             .threads = 2,
                             .chunk_seconds = 3,
                             .protocol = protocol,
                             .log_dir = sb_->dir() + "/pgbench-logs"});
    pgbench_->Start();
  }
  void StopLoad() {
    StopWriters();
    if (pgbench_) pgbench_->Stop();
  }
  // Every acknowledged ledger row is on `conninfo` exactly once; nothing failed.
  void ExpectLedgerClean(const std::string& conninfo) {
    ExpectWritersClean(conninfo);
    auto pb = pgbench_->Stats();
    EXPECT_EQ(pb.failed, 0) << (pb.errors.empty() ? "" : pb.errors.front());
    EXPECT_EQ(pb.aborted_clients, 0);
    EXPECT_GT(pb.transactions, 100);
  }

  // An automatic migration (cutover and finalize) run to its end.
  json RunToFinalized(std::string* id_out = nullptr) {
    // A rate-limited base backup: pg_basebackup must accept the limit we pass.
    std::string id = Create({{"auto_cutover", true},
                             {"auto_finalize", true},
                             {"sustain_seconds", 2},
                             {"verify_seconds", 1},
                             {"poll_ms", 100},
                             {"basebackup_max_rate_kbps", 65536}});
    if (id_out) *id_out = id;
    auto m = sb_->WaitFor(id, Terminal, kMigrationBoundMs);
    EXPECT_TRUE(m.ok()) << m.status().ToString();
    return m.ok() ? *m : json{{"phase", "timeout"}};
  }

  // Cut over under load, roll back from `verify`, and show writes go on
  // through the same router onto the (unfenced) source.
  // An automatic cutover that stops in `verify`, waiting for finalize or
  // rollback: its id and the migration as it stands there.
  std::pair<std::string, Result<json>> CutOverToVerify() {
    std::string id = Create({{"auto_cutover", true},
                             {"auto_finalize", false},
                             {"sustain_seconds", 1},
                             {"verify_seconds", 1},
                             {"poll_ms", 100}});
    auto m = sb_->WaitFor(
        id,
        [](const json& m) {
          return (m["phase"] == "verify" && m["state"] == "waiting") || Terminal(m);
        },
        kMigrationBoundMs);
    return {id, m};
  }

  void RollbackAfterSwitch() {
    StartLoad();
    auto [id, m] = CutOverToVerify();
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    ASSERT_EQ((*m)["phase"], "verify") << m->dump(2);
    // Without the explicit confirmation, rollback after the switch is refused.
    auto refused = sb_->Api("POST", "/v1/migrations/" + id + "/rollback", "{}");
    ASSERT_TRUE(refused.ok());
    EXPECT_EQ((*refused)["status"], 409);
    EXPECT_NE((*refused)["body"]["error"].get<std::string>().find("discard_target_writes"),
              std::string::npos);
    auto ok =
        sb_->Api("POST", "/v1/migrations/" + id + "/rollback", R"({"discard_target_writes":true})");
    ASSERT_TRUE(ok.ok());
    EXPECT_EQ((*ok)["status"], 202) << (*ok)["body"].dump();
    m = sb_->WaitFor(id, Terminal, kMigrationBoundMs);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    EXPECT_EQ((*m)["phase"], "rolled_back");
    load::LedgerWriter after(sb_->AppConninfo(), 50);
    after.Start();
    std::this_thread::sleep_for(std::chrono::seconds(2));
    after.Stop();
    StopLoad();
    auto st = after.Stats();
    EXPECT_EQ(st.failed, 0) << (st.errors.empty() ? "" : st.errors.front());
    EXPECT_GT(st.committed, 20);
    auto check = load::CheckLedger(sb_->SourceConninfo(), 50, after.Acknowledged());
    ASSERT_TRUE(check.ok());
    EXPECT_EQ(check->lost, 0) << "after rollback the router must send writes to the source";
    EXPECT_TRUE(sb_->source().Running());
    auto slots = sb_->source().Psql("select count(*) from pg_replication_slots");
    ASSERT_TRUE(slots.ok());
    EXPECT_EQ(*slots, "0\n");
    EXPECT_EQ(pgbench_->Stats().aborted_clients, 0);
  }
};

TEST_F(MigrationE2E, UnderWriteLoadThroughPgBouncerNothingIsLostOrFails) {
  StartLoad();
  // A writer that bypasses the router and talks to the source directly: the
  // fence must refuse it, or its write must reach the target.
  load::LedgerWriter direct(sb_->SourceConninfo(), 99);
  direct.Start();
  std::this_thread::sleep_for(std::chrono::seconds(1));
  std::string id;
  json m = RunToFinalized(&id);
  ASSERT_EQ(m["phase"], "finalized") << m.dump(2);
  std::this_thread::sleep_for(std::chrono::seconds(1));  // load keeps running on the target
  StopLoad();
  direct.Stop();
  ExpectLedgerClean(sb_->TargetConninfo());

  auto d = direct.Stats();
  EXPECT_GT(d.failed + d.uncertain, 0) << "the fence must have cut the direct writer off";
  auto dcheck = load::CheckLedger(sb_->TargetConninfo(), 99, direct.Acknowledged());
  ASSERT_TRUE(dcheck.ok());
  EXPECT_EQ(dcheck->lost, 0) << "a write the source acknowledged is missing on the target";
  EXPECT_EQ(dcheck->duplicated, 0);
  EXPECT_GT(dcheck->acknowledged, 0);

  // The target is a writable primary on a new timeline; the source is retired.
  EXPECT_GE(m["result"]["timeline"].get<int>(), 2);
  EXPECT_FALSE(sb_->source().Running());
  // The parity check compared the fenced source with the promotion snapshot.
  EXPECT_EQ(m["result"]["parity_done"], true);
  int parity_ok = 0, parity_bad = 0;
  for (const auto& f : m["findings"]) {
    if (f["id"] != "data_parity") continue;
    (f["severity"] == "ok" ? parity_ok : parity_bad)++;
  }
  EXPECT_GT(parity_ok, 0);
  EXPECT_EQ(parity_bad, 0) << m["findings"].dump(1);
  auto events = sb_->Api("GET", "/v1/migrations/" + id + "/events");
  ASSERT_TRUE(events.ok());
  EXPECT_GE((*events)["body"]["events"].size(), 10u);
}

TEST_F(MigrationE2E, RollbackAfterSwitchPutsTrafficBackOnTheSource) { RollbackAfterSwitch(); }

TEST_F(MigrationE2E, SigkillDuringSyncResumes) {
  StartLoad();
  std::string id = Create({{"auto_cutover", true},
                           {"auto_finalize", true},
                           {"sustain_seconds", 3},
                           {"verify_seconds", 1},
                           {"poll_ms", 100}});
  auto m = sb_->WaitFor(
      id, [](const json& m) { return m["phase"] == "sync" || Terminal(m); }, kMigrationBoundMs);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ASSERT_EQ((*m)["phase"], "sync");
  ASSERT_TRUE(sb_->KillPgshiftd(SIGKILL).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  ASSERT_TRUE(sb_->StartPgshiftd().ok());
  m = sb_->WaitFor(id, Terminal, kMigrationBoundMs);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ((*m)["phase"], "finalized") << m->dump(2);
  StopLoad();
  ExpectLedgerClean(sb_->TargetConninfo());
}

TEST_F(MigrationE2E, SigkillDuringQuiesceResumes) {
  StartLoad();
  std::string id = Create({{"auto_cutover", false},
                           {"auto_finalize", true},
                           {"sustain_seconds", 1},
                           {"verify_seconds", 1},
                           {"poll_ms", 100},
                           {"hold_timeout_ms", 20000}});
  auto m = sb_->WaitFor(
      id, [](const json& m) { return m["phase"] == "ready" || Terminal(m); }, kMigrationBoundMs);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ASSERT_EQ((*m)["phase"], "ready");
  // A transaction that stays open for 3 s keeps the hold (and so `quiesce`)
  // going long enough to kill pgshiftd inside it.
  std::atomic<bool> long_committed{false};
  std::jthread long_txn([&] {
    auto c = PgConn::Connect(sb_->AppConninfo());
    if (!c.ok()) return;
    Status st = (*c)->Exec("begin");
    if (st.ok()) st = (*c)->Exec("select pg_sleep(3)");
    if (st.ok()) st = (*c)->Exec("insert into pgshift_ledger (writer, n) values (77, 1)");
    if (st.ok()) st = (*c)->Exec("commit");
    long_committed = st.ok();
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto cut = sb_->Api("POST", "/v1/migrations/" + id + "/cutover", "{}");
  ASSERT_TRUE(cut.ok());
  ASSERT_EQ((*cut)["status"], 202) << (*cut)["body"].dump();
  m = sb_->WaitFor(
      id, [](const json& m) { return m["phase"] != "ready" && m["phase"] != "cdc_prepare"; },
      30000);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ASSERT_EQ((*m)["phase"], "quiesce")
      << "the long transaction should hold the migration in quiesce";
  ASSERT_TRUE(sb_->KillPgshiftd(SIGKILL).ok());
  ASSERT_TRUE(sb_->StartPgshiftd().ok());
  m = sb_->WaitFor(id, Terminal, kMigrationBoundMs);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ((*m)["phase"], "finalized") << m->dump(2);
  StopLoad();
  ExpectLedgerClean(sb_->TargetConninfo());
  long_txn.join();
  EXPECT_TRUE(long_committed) << "the in-flight transaction must be let finish by the hold";
  auto long_row = load::CheckLedger(sb_->TargetConninfo(), 77, {1});
  ASSERT_TRUE(long_row.ok());
  EXPECT_EQ(long_row->lost, 0) << "the in-flight transaction committed before the fence";
}

TEST_F(MigrationE2E, InactiveSlotIsNamedAndDroppedOnlyOnRequest) {
  ASSERT_TRUE(
      sb_->source()
          .Psql("select pg_create_logical_replication_slot('abandoned_etl', 'test_decoding')",
                "app")
          .ok());
  std::string id = Create({{"auto_cutover", false}, {"sustain_seconds", 1}, {"poll_ms", 100}});
  auto m = sb_->WaitFor(
      id, [](const json& m) { return m["phase"] == "ready" || Terminal(m); }, kMigrationBoundMs);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  bool named = false;
  for (const auto& f : (*m)["findings"]) {
    named = named ||
            (f["id"] == "slot_health" && f["subject"] == "abandoned_etl" &&
             f["remedy"].get<std::string>().find("pg_drop_replication_slot") != std::string::npos);
  }
  EXPECT_TRUE(named) << (*m)["findings"].dump(1);
  EXPECT_EQ(*sb_->source().Psql(
                "select count(*) from pg_replication_slots where slot_name = 'abandoned_etl'"),
            "1\n")
      << "pgshift must not drop a slot on its own";
  auto own = sb_->Api(
      "POST", "/v1/migrations/" + id + "/drop_slot",
      json{{"slot", "pgshift_" + id.substr(0, 1) + "_" + id.substr(2)}, {"reason", "x"}}.dump());
  EXPECT_EQ((*own)["status"], 409);
  auto drop = sb_->Api("POST", "/v1/migrations/" + id + "/drop_slot",
                       R"({"slot":"abandoned_etl","reason":"the ETL job was retired"})");
  ASSERT_TRUE(drop.ok());
  EXPECT_EQ((*drop)["status"], 202) << (*drop)["body"].dump();
  std::string left = "1\n";
  for (int i = 0; i < 100 && left != "0\n"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    left = *sb_->source().Psql(
        "select count(*) from pg_replication_slots where slot_name = 'abandoned_etl'");
  }
  EXPECT_EQ(left, "0\n");
}

TEST_F(MigrationE2E, UnloggedTableOverriddenAtPreflightIsCaughtByParityBeforePromotion) {
  ASSERT_TRUE(sb_->source()
                  .Psql("create unlogged table cache (k int primary key); "
                        "insert into cache select generate_series(1, 500)",
                        "app")
                  .ok());
  std::string id = Create({{"auto_cutover", true},
                           {"sustain_seconds", 1},
                           {"poll_ms", 100},
                           {"parity_before_promote_ms", 10000}});
  auto m = sb_->WaitFor(id, Terminal, kMigrationBoundMs);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ASSERT_EQ((*m)["state"], "blocked") << "an unlogged table with rows blocks at preflight";
  ASSERT_EQ((*m)["phase"], "preflight");
  auto ov = sb_->Api("POST", "/v1/migrations/" + id + "/override",
                     R"({"finding":"unlogged_tables","reason":"testing the parity proof"})");
  ASSERT_EQ((*ov)["status"], 200) << (*ov)["body"].dump();
  m = sb_->WaitFor(
      id, [](const json& m) { return m["phase"] == "ready" && m["state"] == "waiting"; },
      kMigrationBoundMs);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  const std::string error = (*m)["error"];
  EXPECT_NE(error.find("cache"), std::string::npos) << error;
  EXPECT_NE(error.find("not promoting"), std::string::npos) << error;
  // The source stayed authoritative: unfenced, serving through the router.
  load::LedgerWriter w(sb_->AppConninfo(), 60);
  w.Start();
  std::this_thread::sleep_for(std::chrono::seconds(1));
  w.Stop();
  EXPECT_EQ(w.Stats().failed, 0);
  auto check = load::CheckLedger(sb_->SourceConninfo(), 60, w.Acknowledged());
  ASSERT_TRUE(check.ok());
  EXPECT_GT(check->acknowledged, 10);
  EXPECT_EQ(check->lost, 0);
}

TEST_F(MigrationE2E, BadRequestsGet4xxAndChangeNothing) {
  struct Case {
    std::string body;
    int status;
    std::string needle;
  };
  json unknown = sb_->MigrationSpec({});
  unknown["surprise"] = true;
  json bad_conn = sb_->MigrationSpec({});
  bad_conn["source"]["conninfo"] = "host=127.0.0.1 port=5432 bogus_key=1";
  json bad_opt = sb_->MigrationSpec({{"sustain_seconds", "soon"}});
  json unreachable = sb_->MigrationSpec({});
  unreachable["source"]["conninfo"] = "host=127.0.0.1 port=" + std::to_string(FreePort().value()) +
                                      " user=postgres dbname=postgres";
  std::vector<Case> cases = {
      {unreachable.dump(), 400, "cannot reach the source"},
      {"{not json", 400, "JSON"},
      {"[1,2]", 400, "object"},
      {unknown.dump(), 400, "surprise"},
      {bad_conn.dump(), 400, "bogus_key"},
      {bad_opt.dump(), 400, "sustain_seconds"},
  };
  for (const auto& c : cases) {
    auto r = sb_->Api("POST", "/v1/migrations", c.body);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ((*r)["status"], c.status) << c.body;
    std::string err = (*r)["body"].value("error", "");
    EXPECT_NE(err.find(c.needle), std::string::npos) << err;
  }
  auto missing = sb_->Api("GET", "/v1/migrations/m-nothere");
  EXPECT_EQ((*missing)["status"], 404);
  auto list = sb_->Api("GET", "/v1/migrations");
  ASSERT_TRUE(list.ok());
  EXPECT_TRUE((*list)["body"]["migrations"].empty()) << "nothing may be stored";
  EXPECT_FALSE(PathExists(sb_->target_dir())) << "nothing may be created";
  auto slots = sb_->source().Psql("select count(*) from pg_replication_slots");
  EXPECT_EQ(*slots, "0\n");
}

// The same migration through pgshift-proxy: clients hold only a certificate,
// the proxy holds the role's SCRAM password, sessions move at their boundary.
class ProxyMigrationE2E : public MigrationE2E {
 protected:
  std::string Router() const override { return "proxy"; }
  void MigrateUnderLoad(const std::string& protocol) {
    StartLoad(protocol);
    std::this_thread::sleep_for(std::chrono::seconds(1));
    json m = RunToFinalized();
    ASSERT_EQ(m["phase"], "finalized") << m.dump(2);
    EXPECT_EQ(m["spec"]["router"]["type"], "proxy");
    std::this_thread::sleep_for(std::chrono::seconds(1));
    StopLoad();
    ExpectLedgerClean(sb_->TargetConninfo());
    EXPECT_FALSE(sb_->source().Running());
  }
};

TEST_F(ProxyMigrationE2E, SimpleProtocolNothingIsLostOrFails) { MigrateUnderLoad("simple"); }

TEST_F(ProxyMigrationE2E, PreparedStatementsSurviveTheSwitch) { MigrateUnderLoad("prepared"); }

TEST_F(ProxyMigrationE2E, RollbackAfterSwitchThroughTheProxy) { RollbackAfterSwitch(); }

// The fence leaves alone the source backends of the sessions the proxy holds
// (no terminate-and-wait inside the hold); those sessions still move to the
// target at their next statement, and nothing fails.
TEST_F(ProxyMigrationE2E, FenceSparesHeldIdleSessionsAndTheyStillMoveToTheTarget) {
  StartLoad();
  // Idle sessions, as an application's connection pool keeps them.
  std::vector<std::unique_ptr<PgConn>> idle;
  std::string pids;
  for (int i = 0; i < 5; ++i) {
    auto c = PgConn::Connect(sb_->AppConninfo());
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    auto r = (*c)->Query("select pg_backend_pid() as pid");
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    pids += (pids.empty() ? "" : ",") + r->Str(0, "pid");
    idle.push_back(std::move(*c));
  }
  auto [id, m] = CutOverToVerify();
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ASSERT_EQ((*m)["phase"], "verify") << m->dump(2);
  const json& result = (*m)["result"];
  ASSERT_TRUE(result.contains("fence_exempted")) << result.dump(1);
  EXPECT_GE(result["fence_exempted"].get<int>(), 5) << result.dump(1);
  // Traffic moved on, but the idle sessions' source backends were never terminated.
  EXPECT_EQ(*sb_->source().Psql("select count(*) from pg_stat_activity where pid in (" + pids +
                                ") and state = 'idle'"),
            "5\n");
  bool logged = false;
  auto events = sb_->Api("GET", "/v1/migrations/" + id + "/events");
  ASSERT_TRUE(events.ok());
  for (const auto& e : (*events)["body"]["events"]) {
    logged = logged || e["message"].get<std::string>().find(
                           "idle session(s) held by the router left alone") != std::string::npos;
  }
  EXPECT_TRUE(logged);
  // At their next statement they run on the target, without an error.
  for (auto& c : idle) {
    auto r = c->Query("select inet_server_port() as port");
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->Str(0, "port"), std::to_string(sb_->target_port()));
  }
  std::string left;
  for (int i = 0; i < 100 && left != "0\n"; ++i) {
    if (i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    left = *sb_->source().Psql("select count(*) from pg_stat_activity where pid in (" + pids + ")");
  }
  EXPECT_EQ(left, "0\n") << "a moved session ends its source backend";
  auto router = MakeRouter(sb_->RouterConfig());
  ASSERT_TRUE(router.ok()) << router.status().ToString();
  auto stats = (*router)->Stats();
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_EQ(stats->errors, 0);
  auto fin = sb_->Api("POST", "/v1/migrations/" + id + "/finalize", "{}");
  ASSERT_TRUE(fin.ok());
  EXPECT_EQ((*fin)["status"], 202) << (*fin)["body"].dump();
  m = sb_->WaitFor(id, Terminal, kMigrationBoundMs);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ((*m)["phase"], "finalized") << m->dump(2);
  StopLoad();
  ExpectLedgerClean(sb_->TargetConninfo());
}

}  // namespace
}  // namespace pgshift
