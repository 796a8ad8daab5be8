// End-to-end: PostgreSQL 15's own regression suite (the parallel schedule of
// Debian's postgresql-15 source package, which scripts/setup.sh fetches with
// regress.so built for it) run by Debian's pg_regress with --use-existing,
// four ways, each against a fresh sandbox cluster:
//   direct  straight to the source;
//   proxy   through pgshift-proxy in plain text (kernel splice);
//   mtls    through pgshift-proxy with mutual TLS (the dev certificates);
//   switch  through pgshift-proxy in plain text while pgshiftd migrates the
//           cluster (finalized automatically), started once kSwitchAfterTests
//           tests have finished, and finalized before the suite ends. The
//           cutover is approved inside a busy parallel group, so many
//           sessions move in mid-test, some holding temporary tables (the
//           route's uncarriable: wait keeps them on the source until they
//           drop them or end); with PGSHIFT_E2E_REGRESS_SWITCH_IN_GROUP=0
//           the cutover runs on its own, which lands between groups.
// The direct run must pass every test; a test that fails through the proxy
// but not directly is a proxy-only failure, and there must be none.
//
// The binary prints, last:
//   E2E regress {"tests":N,"direct_failed":N,"proxy_failed":N,"mtls_failed":N,
//                "switch_failed":N,"proxy_only_failures":["mode:test",...]}
// Each mode's pg_regress output directory (results/, regression.diffs) is
// kept under $PGSHIFT_E2E_REGRESS_OUT/<mode> when that is set.
#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "common/clock.h"
#include "common/os.h"
#include "common/process.h"
#include "e2e/e2e_fixture.h"

namespace pgshift {
namespace {

using json = nlohmann::json;

// Where scripts/setup.sh unpacks the source (one directory per version of
// the installed postgresql-15) and builds lib/regress.so.
constexpr char kCacheEnv[] = "PGSHIFT_REGRESS_CACHE";
constexpr char kDefaultCache[] = "/var/cache/pgshift";
constexpr char kOutEnv[] = "PGSHIFT_E2E_REGRESS_OUT";
constexpr char kDatabase[] = "regression";
constexpr char kSuperuser[] = "postgres";
// As the source's own `make installcheck-parallel`.
constexpr int kMaxConcurrentTests = 20;
// The migration starts once this many tests have finished: the suite is
// partway, and the rest (about 200 tests) outlasts a whole migration.
constexpr int kSwitchAfterTests = 20;
// Unless PGSHIFT_E2E_REGRESS_SWITCH_IN_GROUP=0: the cutover is approved (no
// auto cutover) kIntoGroupMs after a parallel group of at least
// kBusyGroupTests tests has started, so the switch lands on many sessions in
// mid-test.
constexpr char kSwitchInGroupEnv[] = "PGSHIFT_E2E_REGRESS_SWITCH_IN_GROUP";
constexpr int kBusyGroupTests = 10;
constexpr int64_t kIntoGroupMs = 500;
constexpr int64_t kSuiteTimeoutMs = 30 * 60 * 1000;  // safety bound, not a performance claim
constexpr size_t kDiffPrintBytes = 6000;             // per proxy-only failure, in the log

enum class Mode { kDirect, kProxy, kMtls, kSwitch };
const char* ModeName(Mode m) {
  switch (m) {
    case Mode::kDirect:
      return "direct";
    case Mode::kProxy:
      return "proxy";
    case Mode::kMtls:
      return "mtls";
    case Mode::kSwitch:
      return "switch";
  }
  return "?";
}

struct ModeResult {
  int tests = 0;
  std::vector<std::string> failed;  // in schedule order
};

std::map<Mode, ModeResult>& Results() {
  static std::map<Mode, ModeResult> results;
  return results;
}

// Tests failing in a proxied mode but not in the direct run, as "mode:test".
std::vector<std::string> ProxyOnlyFailures() {
  const auto& r = Results();
  std::set<std::string> direct;
  if (auto it = r.find(Mode::kDirect); it != r.end()) {
    direct.insert(it->second.failed.begin(), it->second.failed.end());
  }
  std::vector<std::string> out;
  for (const auto& [mode, result] : r) {
    if (mode == Mode::kDirect) continue;
    for (const auto& t : result.failed) {
      if (!direct.count(t)) out.push_back(std::string(ModeName(mode)) + ":" + t);
    }
  }
  return out;
}

class PrintTotals : public ::testing::Environment {
 public:
  void TearDown() override {
    nlohmann::ordered_json line;
    int tests = 0;
    for (const auto& [mode, result] : Results()) tests = std::max(tests, result.tests);
    line["tests"] = tests;
    for (Mode m : {Mode::kDirect, Mode::kProxy, Mode::kMtls, Mode::kSwitch}) {
      auto it = Results().find(m);
      line[std::string(ModeName(m)) + "_failed"] =
          it == Results().end() ? json(nullptr) : json(it->second.failed.size());
    }
    line["proxy_only_failures"] = ProxyOnlyFailures();
    std::cout << "E2E regress " << line.dump() << std::endl;
  }
};
const ::testing::Environment* const kPrintTotals =
    ::testing::AddGlobalTestEnvironment(new PrintTotals);

// The unpacked source of the installed server's version, with lib/regress.so.
Result<std::string> SourceDir() {
  PGSHIFT_ASSIGN_OR_RETURN(
      std::string version,
      RunChecked(DefaultRunner(),
                 {.argv = {"dpkg-query", "-W", "-f=${Version}", "postgresql-15"}}));
  const char* cache = std::getenv(kCacheEnv);
  const std::string dir =
      std::string(cache && *cache ? cache : kDefaultCache) + "/postgresql-15-" + version;
  if (!PathExists(dir + "/lib/regress.so") || !PathExists(dir + "/src/test/regress")) {
    return NotFound("no PostgreSQL " + version + " regression source with lib/regress.so in " +
                    dir + ": run scripts/setup.sh");
  }
  return dir;
}

// What pg_regress reports per test: "test name ... ok 12 ms" for a test alone,
// "     name ... FAILED 34 ms" inside a parallel group.
const std::regex& ResultLine() {
  static const std::regex re(R"(^(?:test )?\s*(\S+)\s+\.\.\. (ok|FAILED|failed \(ignored\)))");
  return re;
}

// The names in the schedule's "test:" lines.
Result<int> ScheduledTests(const std::string& schedule) {
  PGSHIFT_ASSIGN_OR_RETURN(std::string text, ReadFile(schedule));
  std::istringstream in(text);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    if (line.rfind("test:", 0) != 0) continue;
    std::istringstream words(line.substr(5));
    std::string w;
    while (words >> w) ++n;
  }
  return n;
}

// The database as pg_regress creates it when it is not told --use-existing:
// from template0, C collation (the expected outputs' sort order), and the
// per-database settings its expected outputs assume.
Status CreateRegressionDatabase(LocalCluster& cluster) {
  PGSHIFT_RETURN_IF_ERROR(cluster
                              .Psql(std::string("CREATE DATABASE ") + kDatabase +
                                    " TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' "
                                    "LC_CTYPE 'C'")
                              .status());
  std::string alter;
  for (const char* setting :
       {"lc_messages TO 'C'", "lc_monetary TO 'C'", "lc_numeric TO 'C'", "lc_time TO 'C'",
        "bytea_output TO 'hex'", "timezone_abbreviations TO 'Default'"}) {
    alter += std::string("ALTER DATABASE ") + kDatabase + " SET " + setting + ";";
  }
  return cluster.Psql(alter).status();
}

// The section of regression.diffs for `test` (it starts "diff ... results/<test>.out").
std::string DiffOf(const std::string& diffs, const std::string& test) {
  std::string out;
  size_t pos = 0;
  while ((pos = diffs.find("diff ", pos)) != std::string::npos) {
    size_t next = diffs.find("\ndiff ", pos + 1);
    const size_t end = next == std::string::npos ? diffs.size() : next + 1;
    const std::string header = diffs.substr(pos, diffs.find('\n', pos) - pos);
    if (header.find("/results/" + test + ".out") != std::string::npos) {
      out += diffs.substr(pos, end - pos);
    }
    pos = end;
  }
  return out.substr(0, kDiffPrintBytes);
}

// The migration of the switch mode, on its own thread: created once
// `finished` reaches kSwitchAfterTests, then followed until it ends.
struct Migrator {
  std::atomic<int> finished{0};  // tests pg_regress has reported
  std::atomic<bool> suite_done{false};
  bool in_group = true;                    // unless kSwitchInGroupEnv is "0"
  std::atomic<bool> group_running{false};  // a busy parallel group is under way
  std::string error;                       // why it did not finalize
  json migration;
  int finished_at_end = -1;  // tests finished when the migration ended
  std::thread thread;

  void Run(demo::Sandbox& sb) {
    while (finished.load() < kSwitchAfterTests) {
      if (suite_done.load()) {
        error = "the suite ended before " + std::to_string(kSwitchAfterTests) + " tests";
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    std::cerr << "regress switch: migrating after " << finished.load() << " tests" << std::endl;
    const json options = {{"auto_cutover", !in_group},
                          {"auto_finalize", true},
                          {"sustain_seconds", 1},
                          {"verify_seconds", 1},
                          {"poll_ms", 100}};
    auto r = sb.Api("POST", "/v1/migrations", sb.MigrationSpec(options).dump());
    if (!r.ok() || (*r)["status"] != 201) {
      error = "create: " + (r.ok() ? r->dump() : r.status().ToString());
      return;
    }
    const std::string id = (*r)["body"].value("id", "");
    if (in_group) {
      Status st = CutOverInGroup(sb, id);
      if (!st.ok()) {
        error = st.ToString();
        return;
      }
    }
    auto m = sb.WaitFor(id, e2e::Terminal, e2e::kMigrationBoundMs);
    finished_at_end = finished.load();
    if (!m.ok()) {
      error = m.status().ToString();
      return;
    }
    migration = *m;
    std::cerr << "regress switch: migration " << (*m)["phase"] << " after " << finished_at_end
              << " tests" << std::endl;
    if ((*m)["phase"] != "finalized") error = "migration ended " + m->dump(1);
  }

  Status CutOverInGroup(demo::Sandbox& sb, const std::string& id) {
    PGSHIFT_RETURN_IF_ERROR(sb.WaitFor(
                                  id,
                                  [](const json& m) {
                                    return (m["phase"] == "ready" && m["state"] == "waiting") ||
                                           e2e::Terminal(m);
                                  },
                                  e2e::kMigrationBoundMs)
                                .status());
    while (!group_running.load()) {
      if (suite_done.load()) return FailedPrecondition("the suite ended before a busy group");
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(kIntoGroupMs));
    std::cerr << "regress switch: cutover approved in a parallel group after " << finished.load()
              << " tests" << std::endl;
    PGSHIFT_ASSIGN_OR_RETURN(json cut, sb.Api("POST", "/v1/migrations/" + id + "/cutover", "{}"));
    if (cut["status"] != 202) return FailedPrecondition("cutover refused: " + cut.dump());
    return Status::OK();
  }
};

class RegressE2E : public ::testing::Test {
 protected:
  void TearDown() override {
    if (HasFailure() && sb_) {
      e2e::PrintTail("pgshiftd log", sb_->PgshiftdLog(), e2e::kPgshiftdLogTail);
      e2e::PrintTail("proxy log", sb_->dir() + "/proxy.log", e2e::kRouterLogTail);
    }
    sb_.reset();
  }

  // pg_regress's output directory for `mode`, empty, with results/ writable
  // by the server (tests COPY to and from files there).
  Result<std::string> OutDir(Mode mode) {
    const char* base = std::getenv(kOutEnv);
    const std::string dir =
        std::string(base && *base ? base : sb_->dir() + "/regress") + "/" + ModeName(mode);
    if (PathExists(dir)) PGSHIFT_RETURN_IF_ERROR(RemoveTree(dir));
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) return Internal("cannot create " + dir + ": " + ec.message());
    PGSHIFT_RETURN_IF_ERROR(MakeDirOwnedBy(dir + "/results", sb_->source().spec().os_user, 0755));
    return dir;
  }

  // pg_regress's arguments and environment for `mode`.
  ProcessSpec PgRegress(Mode mode, const std::string& src, const std::string& out) const {
    const std::string regress = src + "/src/test/regress";
    const int port = mode == Mode::kDirect ? sb_->source().spec().port : sb_->proxy_port();
    ProcessSpec spec{
        .argv = {DefaultPgBinDir() + "/../lib/pgxs/src/test/regress/pg_regress", "--use-existing",
                 "--host=127.0.0.1", "--port=" + std::to_string(port),
                 std::string("--user=") + kSuperuser, std::string("--dbname=") + kDatabase,
                 "--bindir=" + DefaultPgBinDir(), "--inputdir=" + regress, "--outputdir=" + out,
                 "--dlpath=" + src + "/lib", "--schedule=" + regress + "/parallel_schedule",
                 "--max-concurrent-tests=" + std::to_string(kMaxConcurrentTests)},
        .timeout_ms = kSuiteTimeoutMs};
    if (mode == Mode::kMtls) {
      const std::string c = sb_->CertDir() + "/";
      spec.extra_env = {"PGSSLMODE=verify-full", "PGSSLROOTCERT=" + c + "ca.crt",
                        "PGSSLCERT=" + c + "app-client.crt", "PGSSLKEY=" + c + "app-client.key"};
    } else {
      spec.extra_env = {"PGSSLMODE=disable"};
    }
    return spec;
  }

  // GET `path` on the proxy's admin API; null when it fails.
  json ProxyGet(const std::string& path) const {
    const std::string url = sb_->RouterConfig().value("admin_url", "");
    httplib::Client cli(url);
    auto res = cli.Get(path);
    if (!res || res->status != 200) return json();
    return json::parse(res->body, nullptr, false);
  }

  void RunMode(Mode mode) {
    auto src = SourceDir();
    ASSERT_TRUE(src.ok()) << src.status().ToString();
    const std::string schedule = *src + "/src/test/regress/parallel_schedule";
    auto scheduled = ScheduledTests(schedule);
    ASSERT_TRUE(scheduled.ok()) << scheduled.status().ToString();

    auto sb = demo::Sandbox::Start({.router = "proxy",
                                    .pgshiftd_path = PGSHIFTD_PATH,
                                    .proxy_path = PGSHIFT_PROXY_PATH,
                                    .client_tls = mode == Mode::kMtls,
                                    .route_database = kDatabase,
                                    .route_roles = {"*"},
                                    .route_uncarriable = "wait"});
    ASSERT_TRUE(sb.ok()) << sb.status().ToString();
    sb_ = std::move(sb).value();
    Status st = CreateRegressionDatabase(sb_->source());
    ASSERT_TRUE(st.ok()) << st.ToString();
    auto out = OutDir(mode);
    ASSERT_TRUE(out.ok()) << out.status().ToString();

    Migrator migrator;
    const char* in_group = std::getenv(kSwitchInGroupEnv);
    migrator.in_group = !(in_group && std::string(in_group) == "0");
    static const std::regex group_start(R"(^parallel group \((\d+) tests\))");
    if (mode == Mode::kSwitch) migrator.thread = std::thread([&] { migrator.Run(*sb_); });
    ModeResult result;
    std::string pending;
    ProcessSpec spec = PgRegress(mode, *src, *out);
    spec.on_output = [&](const std::string& chunk) {
      pending += chunk;
      size_t nl;
      while ((nl = pending.find('\n')) != std::string::npos) {
        const std::string line = pending.substr(0, nl);
        pending.erase(0, nl + 1);
        std::cout << "[" << ModeName(mode) << "] " << line << "\n";
        std::smatch m;
        if (!std::regex_search(line, m, ResultLine())) continue;
        ++result.tests;
        if (m[2] != "ok") result.failed.push_back(m[1]);
        migrator.finished.store(result.tests);
      }
      std::smatch g;
      migrator.group_running.store(std::regex_search(pending, g, group_start) &&
                                   std::stoi(g[1]) >= kBusyGroupTests);
    };
    const int64_t start = MonotonicMs();
    auto run = DefaultRunner().Run(spec);
    migrator.suite_done.store(true);
    if (migrator.thread.joinable()) migrator.thread.join();
    std::cout.flush();
    std::cerr << "regress " << ModeName(mode) << ": " << result.tests << " tests in "
              << (MonotonicMs() - start) / 1000 << " s, " << result.failed.size()
              << " failed; output in " << *out << std::endl;
    Results()[mode] = result;

    ASSERT_TRUE(run.ok()) << run.status().ToString();
    EXPECT_FALSE(run->timed_out) << "pg_regress ran past " << kSuiteTimeoutMs << " ms";
    EXPECT_EQ(result.tests, *scheduled) << "every test of " << schedule << " must run";
    EXPECT_EQ(run->exit_code == 0, result.failed.empty()) << "pg_regress exit " << run->exit_code;
    if (mode == Mode::kDirect) {
      EXPECT_TRUE(result.failed.empty())
          << "the environment must let every test pass directly; see " << *out
          << "/regression.diffs";
    } else {
      auto read = ReadFile(*out + "/regression.diffs");
      const std::string diffs = read.ok() ? *read : "";
      for (const auto& failure : ProxyOnlyFailures()) {
        if (failure.rfind(std::string(ModeName(mode)) + ":", 0) != 0) continue;
        ADD_FAILURE() << "fails through the proxy but not directly: " << failure << "\n"
                      << DiffOf(diffs, failure.substr(failure.find(':') + 1));
      }
    }
    if (mode == Mode::kDirect) return;
    const json stats = ProxyGet("/routes/app/stats");
    std::cerr << "regress " << ModeName(mode) << ": route stats " << stats.dump() << std::endl;
    if (mode != Mode::kMtls) {
      EXPECT_GT(stats.value("splices", 0), 0) << "plain-text sessions must have been spliced";
    }
    if (mode == Mode::kSwitch) {
      EXPECT_TRUE(migrator.error.empty()) << migrator.error;
      EXPECT_LT(migrator.finished_at_end, result.tests)
          << "the migration must end while the suite still runs";
      EXPECT_GT(stats.value("switched_sessions", 0), 0) << "sessions must have moved";
      const json report = ProxyGet("/routes/app").value("last_switch", json());
      std::cerr << "regress switch: switch report " << report.dump() << std::endl;
      ASSERT_TRUE(report.is_object()) << "the proxy must report its switch";
      EXPECT_GT(report.value("moved", 0), 0);
      // pgshiftd put the report on the migration's timeline.
      const std::string id = migrator.migration.value("id", "");
      auto events = sb_->Api("GET", "/v1/migrations/" + id + "/events", "");
      ASSERT_TRUE(events.ok()) << events.status().ToString();
      bool recorded = false;
      for (const auto& e : (*events)["body"].value("events", json::array()))
        recorded = recorded || e.value("message", "").rfind("switch to ", 0) == 0;
      EXPECT_TRUE(recorded) << "no switch report among the migration's events";
    }
  }

  std::unique_ptr<demo::Sandbox> sb_;
};

// In this order: the proxied runs are compared with the direct one.
TEST_F(RegressE2E, Direct) { RunMode(Mode::kDirect); }
TEST_F(RegressE2E, ThroughProxySpliced) { RunMode(Mode::kProxy); }
TEST_F(RegressE2E, ThroughProxyWithMtls) { RunMode(Mode::kMtls); }
TEST_F(RegressE2E, ThroughProxyWhileMigrating) { RunMode(Mode::kSwitch); }

}  // namespace
}  // namespace pgshift
