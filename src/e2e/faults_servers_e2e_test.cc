// Server, network and disk faults under a migration, with real clusters, a
// real pgshiftd process and the full load through pgshift-proxy all along
// (ledger writers, pgbench and a CDC consumer: FaultsTest::StartFullLoad):
//   - the target killed while the base backup runs, while it streams, and
//     inside the cutover's hold before promotion: the migration retries or
//     stops with its reason recorded, traffic never moves, and the source
//     stays untouched and unfenced (the writers keep committing on it);
//   - the source unreachable for pgshiftd mid-sync, and the network between
//     source and target cut (TcpRelay): nothing moves meanwhile, pgshiftd
//     says why, and it carries on when the network is back;
//   - pgshiftd's state store on a full disk (a tmpfs the test mounts): no
//     phase is recorded that was not committed, the log says why, and the
//     migration carries on once there is space again.
// Each scenario adds its line and its lost or duplicated rows and events to
// the faults report (e2e/faults_report.h).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "common/clock.h"
#include "common/os.h"
#include "e2e/faults_fixture.h"
#include "e2e/faults_report.h"
#include "model/phase.h"
#include "pg/conn.h"
#include "testing/tcp_relay.h"

namespace pgshift::e2e {
namespace {

// Bounds are safety nets on a loaded machine, not performance claims.
constexpr int64_t kFaultSeenBoundMs = 60000;
// How long a fault lasts: several of pgshiftd's polls and retries, well
// inside its retry budget (max_step_attempts back-offs, ~20 s).
constexpr int64_t kOutageMs = 6000;
// Writers must commit on the source while a fault lasts: at least this many.
constexpr int64_t kMinCommitsDuringFault = 20;
// The base backup's rate in the provision scenario: slow enough to be
// caught running (a pgbench scale-1 source is ~25 MB), fast enough to end.
constexpr int64_t kSlowBackupKbps = 4096;
// The state store's tmpfs: room for the state file, its WAL and the filler.
constexpr const char* kStateFsSize = "size=16m";

class FaultsServerE2E : public FaultsTest {
 protected:
  json Get(const std::string& id) {
    auto r = sb_->Api("GET", "/v1/migrations/" + id);
    return r.ok() ? (*r)["body"] : json::object();
  }

  // Waits for an event whose message holds `needle`; its message, or "".
  std::string WaitForEvent(const std::string& id, const std::string& needle,
                           int64_t timeout_ms = kFaultSeenBoundMs) {
    const int64_t deadline = MonotonicMs() + timeout_ms;
    while (MonotonicMs() < deadline) {
      const std::string said = EventSaying(id, needle);
      if (!said.empty()) return said;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ADD_FAILURE() << "no event saying '" << needle << "' within " << timeout_ms << " ms";
    return "";
  }

  json WaitForPhase(const std::string& id, const std::string& phase) {
    auto m = sb_->WaitFor(
        id, [&](const json& m) { return m["phase"] == phase || Terminal(m); }, kMigrationBoundMs);
    EXPECT_TRUE(m.ok()) << m.status().ToString();
    if (!m.ok()) return json::object();
    EXPECT_EQ((*m)["phase"], phase) << m->dump(2);
    return *m;
  }

  // Traffic has not moved: the route leads to the source and is not held,
  // the source takes the application's logins (not fenced), and the
  // writers keep committing there without an error.
  void ExpectTrafficOnUnfencedSource(const std::string& when) {
    SCOPED_TRACE(when);
    const json route = ProxyGet("/routes/app");
    ASSERT_TRUE(route.contains("upstream")) << route.dump();
    EXPECT_EQ(route["upstream"]["port"], sb_->source().spec().port) << route.dump();
    EXPECT_FALSE(route.value("held", true)) << route.dump();
    auto app = PgConn::Connect(sb_->SourceConninfo(), 5);
    EXPECT_TRUE(app.ok()) << "the source refuses the application: " << app.status().ToString();
    const int64_t before = Committed();
    EXPECT_TRUE(WaitUntil([&] { return Committed() >= before + kMinCommitsDuringFault; }))
        << "the writers stopped committing through the proxy";
    for (auto& w : writers_) {
      auto st = w->Stats();
      EXPECT_EQ(st.failed + st.uncertain, 0) << (st.errors.empty() ? "" : st.errors.front());
    }
  }

  static bool WaitUntil(const std::function<bool()>& cond) {
    return MsUntil(cond, kFaultSeenBoundMs) >= 0;
  }

  // The target cluster, as pg_ctl sees it.
  LocalCluster Target() const {
    return LocalCluster(ClusterSpec{
        .data_dir = sb_->target_dir(), .port = sb_->target_port(), .os_user = "postgres"});
  }

  // Waits for `id` to finish, then checks every ledger row on the target and
  // every transition of the main path in the events.
  void ExpectFinalizedAndClean(const std::string& id) {
    auto m = sb_->WaitFor(id, Terminal, kMigrationBoundMs);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    EXPECT_EQ((*m)["phase"], "finalized") << m->dump(2);
    StopWritersAndCheck(sb_->TargetConninfo());
    std::vector<std::string> path;
    for (const auto& info : PhasesOf(PhaseBranch::kMain)) path.push_back(info.name);
    missing_events_ += MissingTransitions(Events(id), path);
  }

  void Report(const std::string& scenario) {
    FaultsTotals& t = TheFaultsTotals();
    t.AddScenario(scenario, !HasFailure());
    AddLosses(t);
    char line[120];
    std::snprintf(line, sizeof line, "  %.0f s", Seconds());
    t.lines.back() += line;
    t.Write();
  }
};

// The target's base backup is killed while it copies (kill -9, as the OOM
// killer or a crash of the target's host would): provision fails with the
// reason, the next attempt discards the partial copy and starts over, and
// the migration finishes; traffic stayed on the unfenced source meanwhile.
TEST_F(FaultsServerE2E, TargetKilledDuringProvisionRetriesAndFinishes) {
  StartFullLoad();
  const std::string id = Create(Options(true, {{"basebackup_max_rate_kbps", kSlowBackupKbps}}));
  ASSERT_FALSE(id.empty());
  const std::string partial = sb_->target_dir() + ".partial";
  std::vector<pid_t> backup;
  ASSERT_TRUE(WaitUntil([&] {
    backup = LiveProcessesWith({"pg_basebackup", partial});
    return !backup.empty() && PathExists(partial);
  })) << "the base backup was never seen running";
  for (pid_t pid : backup) ::kill(pid, SIGKILL);

  const std::string why = WaitForEvent(id, "will retry: base backup from the source");
  EXPECT_NE(why.find(partial), std::string::npos) << why;
  EXPECT_EQ(Get(id)["phase"], "provision");
  ExpectTrafficOnUnfencedSource("after the base backup was killed");
  ExpectFinalizedAndClean(id);
  Report("target killed during provision (base backup) -> retried, finalized");
}

// The standby is stopped (pg_ctl stop -m immediate) while it streams: the
// sync step records why it failed, starts it again (its slot kept the WAL
// it missed), and the migration finishes.
TEST_F(FaultsServerE2E, TargetKilledDuringSyncIsRestartedAndFinishes) {
  StartFullLoad();
  const std::string id = Create(Options(true, {{"sustain_seconds", 5}}));
  ASSERT_FALSE(id.empty());
  WaitForPhase(id, "sync");
  // pg_ctl may report a failure when pgshiftd has already started the
  // standby again before pg_ctl saw it gone (it would wait for that one to
  // stop too, so it waits 1 s at most); the event below proves the stop.
  const Status stopped = Target().Stop("immediate", /*timeout_s=*/1);
  if (!stopped.ok()) std::cerr << "pg_ctl stop -m immediate: " << stopped.ToString() << "\n";

  const std::string why = WaitForEvent(id, "the target is not running");
  EXPECT_NE(why.find("starting it again"), std::string::npos) << why;
  WaitForEvent(id, "the target was down and has been started again");
  ExpectTrafficOnUnfencedSource("after the target was killed in sync");
  ExpectFinalizedAndClean(id);
  Report("target killed during sync -> restarted, finalized");
}

// The standby is killed inside the cutover's hold, while drain waits for it
// to replay the final LSN (its replay is paused so that drain waits): the
// cutover is aborted at once, traffic is released onto the unfenced source,
// the standby is started again, and a second cutover finishes.
TEST_F(FaultsServerE2E, TargetKilledDuringDrainAbortsTheCutoverOntoTheSource) {
  StartFullLoad();
  const std::string id = CreateInReady(Options(false, {{"drain_timeout_ms", 60000}}));
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(Target().Psql("select pg_wal_replay_pause()").ok());

  ASSERT_TRUE(PostAction(id, "cutover"));
  WaitForPhase(id, "drain");
  const int64_t killed_at = MonotonicMs();
  ASSERT_TRUE(Target().Stop("immediate").ok());

  const std::string why = WaitForEvent(id, "cutover aborted, traffic released to the source");
  EXPECT_NE(why.find("target"), std::string::npos) << why;
  EXPECT_LT(MonotonicMs() - killed_at, kFaultSeenBoundMs);
  auto back = sb_->WaitFor(
      id, [](const json& m) { return m["phase"] == "ready" || Terminal(m); }, kMigrationBoundMs);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ((*back)["phase"], "ready") << back->dump(2);
  EXPECT_FALSE(Events(id).dump().find("target promoted") != std::string::npos)
      << "a dead target was promoted";
  ExpectTrafficOnUnfencedSource("after the cutover was aborted");

  // The standby comes back by itself; an operator's second cutover finishes.
  WaitForEvent(id, "the target was down and has been started again");
  auto waiting = sb_->WaitFor(id, WaitingOrTerminal, kMigrationBoundMs);
  ASSERT_TRUE(waiting.ok()) << waiting.status().ToString();
  ASSERT_TRUE(PostAction(id, "cutover"));
  ExpectFinalizedAndClean(id);
  Report("target killed during drain (in the hold) -> cutover aborted onto the source, finalized");
}

// pgshiftd reaches the source through a relay that is cut mid-sync (the
// standby streams directly, so the application and the replica do not
// notice): each failed attempt names the source, nothing moves, and the
// migration carries on when the relay is back.
TEST_F(FaultsServerE2E, SourceUnreachableMidSyncWaitsAndCarriesOn) {
  auto relay = testing::TcpRelay::Start("127.0.0.1", sb_->source().spec().port);
  ASSERT_TRUE(relay.ok()) << relay.status().ToString();
  testing::TcpRelay& net = **relay;
  // No CDC consumer: pgshiftd knows the source by the relay's port, the
  // proxy by its own, so preflight would take the consumer for one that
  // bypasses the router.
  StartFullLoad(/*cdc=*/false);
  json spec = sb_->MigrationSpec(Options(false, {{"sustain_seconds", 3}}));
  const std::string direct = spec["source"]["conninfo"];
  auto via_relay = WithConninfo(direct, {{"port", std::to_string(net.port())}});
  ASSERT_TRUE(via_relay.ok());
  spec["source"]["conninfo"] = *via_relay;
  spec["source"]["replication_conninfo"] =
      "host=127.0.0.1 port=" + std::to_string(sb_->source().spec().port);
  const std::string id = CreateSpec(spec);
  ASSERT_FALSE(id.empty());
  // The route's upstream is the source's own port, not the relay's: the
  // preflight check that the route serves this source is overridden.
  auto blocked = sb_->WaitFor(
      id, [](const json& m) { return m["state"] == "blocked" || Terminal(m); }, kMigrationBoundMs);
  ASSERT_TRUE(blocked.ok()) << blocked.status().ToString();
  ASSERT_NE((*blocked).value("error", "").find("route_serves_another_server"), std::string::npos)
      << blocked->dump(2);
  auto overridden = sb_->Api("POST", "/v1/migrations/" + id + "/override",
                             json{{"finding", "route_serves_another_server"},
                                  {"subject", "route"},
                                  {"reason", "the proxy reaches the source without the relay"}}
                                 .dump());
  ASSERT_TRUE(overridden.ok()) << overridden.status().ToString();
  ASSERT_EQ((*overridden)["status"], 200) << (*overridden)["body"].dump();
  // The override is queued; until pgshiftd applies it the migration still
  // reads blocked in preflight.
  auto past = sb_->WaitFor(
      id, [](const json& m) { return m["phase"] != "preflight" || m["state"] == "failed"; },
      kMigrationBoundMs);
  ASSERT_TRUE(past.ok()) << past.status().ToString();
  WaitForPhase(id, "sync");

  net.Cut();
  const std::string why = WaitForEvent(id, "will retry: source");
  std::this_thread::sleep_for(std::chrono::milliseconds(kOutageMs));
  const json during = Get(id);
  EXPECT_EQ(during["phase"], "sync") << during.dump(2);
  EXPECT_NE(during["state"], "failed") << during.dump(2);
  EXPECT_NE(during.value("error", "").find("source"), std::string::npos) << during.dump(2);
  ExpectTrafficOnUnfencedSource("while pgshiftd cannot reach the source");

  ASSERT_TRUE(net.Restore().ok());
  auto waiting = sb_->WaitFor(id, WaitingOrTerminal, kMigrationBoundMs);
  ASSERT_TRUE(waiting.ok()) << waiting.status().ToString();
  EXPECT_EQ((*waiting)["phase"], "ready") << waiting->dump(2);
  EXPECT_EQ((*waiting).value("error", ""), "");
  StopWriters();
  ExpectWritersClean(sb_->SourceConninfo());
  Report("source unreachable for pgshiftd mid-sync -> waited, carried on to ready");
}

// The standby replicates through a relay (source.replication_conninfo) that
// is cut mid-sync: the lag gate never passes meanwhile, and once the
// network is back the standby reconnects and the migration finishes.
TEST_F(FaultsServerE2E, NetworkCutBetweenSourceAndTargetHoldsSyncUntilRestored) {
  auto relay = testing::TcpRelay::Start("127.0.0.1", sb_->source().spec().port);
  ASSERT_TRUE(relay.ok()) << relay.status().ToString();
  testing::TcpRelay& net = **relay;
  StartFullLoad();
  json spec = sb_->MigrationSpec(Options(true, {{"sustain_seconds", 3}}));
  spec["source"]["replication_conninfo"] = "host=127.0.0.1 port=" + std::to_string(net.port());
  const std::string id = CreateSpec(spec);
  ASSERT_FALSE(id.empty());
  WaitForPhase(id, "sync");
  ASSERT_TRUE(WaitUntil([&] { return net.open() > 0; })) << "the standby does not use the relay";

  net.Cut();
  std::this_thread::sleep_for(std::chrono::milliseconds(kOutageMs));
  const json during = Get(id);
  EXPECT_EQ(during["phase"], "sync") << during.dump(2);
  EXPECT_EQ(during["progress"].value("in_sync_ms", -1), 0) << during.dump(2);
  ExpectTrafficOnUnfencedSource("while the network is cut");

  ASSERT_TRUE(net.Restore().ok());
  ExpectFinalizedAndClean(id);
  EXPECT_GT(net.accepted(), 1) << "the standby did not reconnect through the relay";
  Report("network between source and target cut mid-sync -> held in sync, finalized");
}

// A tmpfs the test mounts for pgshiftd's state file, unmounted whatever
// happens (after the sandbox, and so pgshiftd, is gone).
class FaultsServerE2EDiskFull : public FaultsServerE2E {
 protected:
  void SetUp() override {
    ASSERT_EQ(::geteuid(), 0u) << "mounting a tmpfs needs root (CI runs the tests as root)";
    auto dir = MakeTempDir("pgshift-statefs");
    ASSERT_TRUE(dir.ok()) << dir.status().ToString();
    mount_ = *dir;
    ASSERT_EQ(::mount("tmpfs", mount_.c_str(), "tmpfs", 0, kStateFsSize), 0)
        << "mount tmpfs on " << mount_ << ": " << std::strerror(errno);
    mounted_ = true;
    FaultsServerE2E::SetUp();
  }
  void TearDown() override {
    FaultsServerE2E::TearDown();  // stops pgshiftd first
    if (mounted_) {
      EXPECT_EQ(::umount2(mount_.c_str(), MNT_DETACH), 0) << std::strerror(errno);
    }
    if (!mount_.empty()) (void)RemoveTree(mount_);
  }
  void Configure(demo::SandboxOptions& o) const override { o.state_path = mount_ + "/state.db"; }

  // Fills the tmpfs with one file until the disk is full.
  void Fill() {
    const std::string path = mount_ + "/filler";
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ASSERT_GE(fd, 0) << std::strerror(errno);
    std::string block(64 * 1024, 'f');
    while (::write(fd, block.data(), block.size()) > 0) {
    }
    const int err = errno;
    ::fsync(fd);
    ::close(fd);
    ASSERT_EQ(err, ENOSPC) << std::strerror(err);
  }
  void Free() { ASSERT_EQ(::unlink((mount_ + "/filler").c_str()), 0) << std::strerror(errno); }

  std::string mount_;
  bool mounted_ = false;
};

// The state store's disk fills while the migration syncs: pgshiftd does not
// move on (the phase it shows is the last one committed), its log says it
// cannot record the state, and once there is space the migration finishes.
TEST_F(FaultsServerE2EDiskFull, StateStoreDiskFullRefusesToAdvanceThenResumes) {
  StartFullLoad();
  const std::string id = Create(Options(true, {{"sustain_seconds", 3}}));
  ASSERT_FALSE(id.empty());
  WaitForPhase(id, "sync");
  Fill();
  ASSERT_TRUE(WaitUntil([&] {
    auto log = ReadFile(sb_->PgshiftdLog());
    return log.ok() && log->find("cannot record the migration's state") != std::string::npos;
  })) << "pgshiftd did not report the full disk";
  const json during = Get(id);
  std::this_thread::sleep_for(std::chrono::milliseconds(kOutageMs));
  const json later = Get(id);
  EXPECT_EQ(later["phase"], during["phase"]) << "moved on without recording it";
  EXPECT_NE(later["phase"], "finalized");
  EXPECT_EQ(later["phase"], "sync") << later.dump(2);
  ExpectTrafficOnUnfencedSource("while the state store's disk is full");

  Free();
  ExpectFinalizedAndClean(id);
  Report("state store disk full mid-sync -> did not advance, finalized once freed");
}

}  // namespace
}  // namespace pgshift::e2e
