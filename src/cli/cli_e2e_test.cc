// The CLI end to end against a real ApiServer (real HTTP on a free port)
// backed by FakeMigrationService: through RunCli (same code path as main,
// with string streams) and through the `pgshift` binary itself.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <fstream>
#include <sstream>

#include "api/http_server.h"
#include "cli/commands.h"
#include "common/os.h"
#include "testing/fake_migration_service.h"

namespace pgshift::cli {
namespace {

using api::ApiServer;
using api::FakeMigrationService;
using nlohmann::json;

struct CliRun {
  int code = -1;
  std::string out;
  std::string err;
};

json Migration(const std::string& id, const std::string& phase, const std::string& state) {
  return {{"id", id},
          {"name", "orders"},
          {"phase", phase},
          {"state", state},
          {"updated_at", "2024-05-01T10:04:12Z"},
          {"spec", {{"options", {{"sustain_seconds", 30}}}}},
          {"progress", {{"basebackup_pct", 100}, {"lag_bytes", 0}, {"in_sync_ms", 31000}}},
          {"findings", json::array()},
          {"result", json::object()},
          {"error", state == "failed" ? "promotion failed: pg_ctl promote timed out" : ""},
          {"pending_action", state == "waiting" ? "cutover" : ""}};
}

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<ApiServer>(svc_, "127.0.0.1", 0);
    ASSERT_TRUE(server_->Start().ok());
    url_ = "http://127.0.0.1:" + std::to_string(server_->port());
  }

  CliRun Cli(std::vector<std::string> args, CliIo io = {}) {
    std::ostringstream out, err;
    io.out = &out;
    io.err = &err;
    if (!io.sleep) io.sleep = [](std::chrono::milliseconds) {};
    args.insert(args.begin(), {"--server", url_});
    CliRun r;
    r.code = RunCli(args, io, {AddMigrationCommands});
    r.out = out.str();
    r.err = err.str();
    return r;
  }

  std::vector<std::string> CreateArgs() {
    return {"migration",     "create",
            "--name",        "orders",
            "--source",      "host=127.0.0.1 port=5432 user=postgres",
            "--target-dir",  "/var/lib/pgshift/orders",
            "--target-port", "5544"};
  }

  FakeMigrationService svc_;
  std::unique_ptr<ApiServer> server_;
  std::string url_;
};

#define EXPECT_HAS(text, part) \
  EXPECT_NE((text).find(part), std::string::npos) << "missing: " << (part) << "\nin:\n" << (text)

TEST_F(CliTest, CreateFromFlagsSendsSpecAndPrintsNextStep) {
  auto args = CreateArgs();
  args.insert(args.end(), {"--router-type", "proxy", "--router-admin", "http://127.0.0.1:7433",
                           "--route", "orders", "--target-setting", "max_connections=200",
                           "--sustain-seconds", "10", "--auto-cutover"});
  CliRun r = Cli(args);
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_HAS(r.out, "Created migration orders (m-1), phase preflight.");
  EXPECT_HAS(r.out, "pgshift migration status m-1 --watch");
  auto call = svc_.LastCall("Create");
  ASSERT_TRUE(call);
  EXPECT_EQ(call->body, json::parse(R"({
    "name": "orders",
    "source": {"conninfo": "host=127.0.0.1 port=5432 user=postgres"},
    "target": {"provider": "local", "data_dir": "/var/lib/pgshift/orders", "port": 5544,
               "settings": {"max_connections": "200"}},
    "router": {"type": "proxy", "admin_url": "http://127.0.0.1:7433", "route": "orders"},
    "options": {"sustain_seconds": 10, "auto_cutover": true}
  })"));
}

TEST_F(CliTest, CreateWithSeveralProxyInstances) {
  auto args = CreateArgs();
  args.insert(args.end(),
              {"--router-type", "proxy", "--router-admin", "http://10.0.1.1:7433", "--router-admin",
               "http://10.0.1.2:7433,http://10.0.1.3:7433", "--route", "orders"});
  CliRun r = Cli(args);
  EXPECT_EQ(r.code, 0) << r.err;
  auto call = svc_.LastCall("Create");
  ASSERT_TRUE(call);
  EXPECT_EQ(call->body["router"], json::parse(R"({"type": "proxy", "route": "orders",
    "instances": [{"admin_url": "http://10.0.1.1:7433"}, {"admin_url": "http://10.0.1.2:7433"},
                  {"admin_url": "http://10.0.1.3:7433"}]})"));
}

TEST_F(CliTest, CreateJsonPrintsServerJson) {
  auto args = CreateArgs();
  args.push_back("--json");
  CliRun r = Cli(args);
  ASSERT_EQ(r.code, 0) << r.err;
  json printed = json::parse(r.out);
  EXPECT_EQ(printed["id"], "m-1");
  EXPECT_EQ(printed["spec"]["target"]["port"], 5544);
}

TEST_F(CliTest, CreateFromSpecFile) {
  auto dir = MakeTempDir("pgshift-cli-test");
  ASSERT_TRUE(dir.ok());
  std::string path = *dir + "/spec.json";
  std::ofstream(path)
      << R"({"name":"from-file","source":{"conninfo":"host=10.0.0.1"},"target":{"port":6000}})";
  CliRun r = Cli({"migration", "create", "--spec", path});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(svc_.LastCall("Create")->body["name"], "from-file");
  // --spec with flags is a usage error.
  r = Cli({"migration", "create", "--spec", path, "--name", "x"});
  EXPECT_EQ(r.code, kExitUsage);
  EXPECT_HAS(r.err, "excludes");
  (void)RemoveTree(*dir);
}

TEST_F(CliTest, CreateRejectsBadInputBeforeCallingTheServer) {
  auto args = CreateArgs();
  args[5] = "host=127.0.0.1 port";
  CliRun r = Cli(args);
  EXPECT_EQ(r.code, kExitUsage);
  EXPECT_HAS(r.err, "error: --source: bad connection string 'host=127.0.0.1 port'");
  r = Cli({"migration", "create", "--name", "orders"});
  EXPECT_EQ(r.code, kExitUsage);
  EXPECT_HAS(r.err, "error: missing --source, --target-dir, --target-port");
  r = Cli({"migration", "create", "--target-port", "99999"});
  EXPECT_EQ(r.code, kExitUsage);
  EXPECT_HAS(r.err, "--target-port");
  r = Cli({"migration", "create", "--router-type", "haproxy"});
  EXPECT_EQ(r.code, kExitUsage);
  EXPECT_HAS(r.err, "haproxy");
  EXPECT_FALSE(svc_.LastCall("Create"));
}

TEST_F(CliTest, CreateRejectedByServerShowsItsMessage) {
  CliRun r = Cli(CreateArgs());
  ASSERT_EQ(r.code, 0);
  r = Cli(CreateArgs());
  EXPECT_EQ(r.code, kExitFailed);
  EXPECT_HAS(r.err, "error: a migration named 'orders' exists: m-1");
}

TEST_F(CliTest, ListHumanAndJson) {
  svc_.Put(Migration("m-1", "sync", "running"));
  svc_.Put(Migration("m-2", "ready", "waiting"));
  CliRun r = Cli({"migration", "list"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_HAS(r.out, "ID   NAME    PHASE  STATE    UPDATED");
  EXPECT_HAS(r.out, "m-2  orders  ready  waiting  2024-05-01T10:04:12Z");
  r = Cli({"migration", "list", "--json"});
  EXPECT_EQ(r.code, 0);
  json printed = json::parse(r.out);
  ASSERT_EQ(printed["migrations"].size(), 2u);
  EXPECT_EQ(printed["migrations"][1]["id"], "m-2");
  EXPECT_HAS(r.out, "\n  \"migrations\"");  // pretty-printed
}

TEST_F(CliTest, StatusHumanShowsViewWithEvents) {
  svc_.Put(Migration("m-1", "ready", "waiting"));
  svc_.SetEvents("m-1", json::array({{{"at", "2024-05-01T10:03:00Z"},
                                      {"phase", "sync"},
                                      {"kind", "info"},
                                      {"message", "lag under threshold for 30 s"}}}));
  CliRun r = Cli({"migration", "status", "m-1"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_HAS(r.out, "Migration orders  (m-1)");
  EXPECT_HAS(r.out, "[x] validate  [>] ready");
  EXPECT_HAS(r.out, "In sync       31.0 s of 30.0 s required (met)");
  EXPECT_HAS(r.out, "2024-05-01T10:03:00Z  sync  info  lag under threshold for 30 s");
  EXPECT_HAS(r.out, "pgshift migration cutover m-1");
}

TEST_F(CliTest, StatusJsonIsServerJson) {
  json m = Migration("m-1", "sync", "running");
  svc_.Put(m);
  CliRun r = Cli({"migration", "status", "m-1", "--json"});
  EXPECT_EQ(r.code, 0);
  // Exactly what the server answers: the service's JSON plus the API's view fields.
  json served = m;
  served["database"] = nullptr;
  served["actions"] = {"cutover", "rollback"};
  EXPECT_EQ(json::parse(r.out), served);
}

TEST_F(CliTest, UnknownMigrationIs404Message) {
  for (auto cmd :
       std::vector<std::vector<std::string>>{{"migration", "status", "m-404"},
                                             {"migration", "events", "m-404"},
                                             {"migration", "cutover", "m-404"},
                                             {"migration", "status", "m-404", "--watch"}}) {
    CliRun r = Cli(cmd);
    EXPECT_EQ(r.code, kExitFailed) << cmd[1];
    EXPECT_HAS(r.err,
               "error: migration 'm-404' not found; list migrations with `pgshift migration list`");
    EXPECT_EQ(r.out, "");
  }
}

TEST_F(CliTest, CutoverWrongStateIs409MessageThenSucceedsWhenReady) {
  svc_.Put(Migration("m-1", "sync", "running"));
  CliRun r = Cli({"migration", "cutover", "m-1"});
  EXPECT_EQ(r.code, kExitFailed);
  EXPECT_HAS(r.err, "error: migration m-1 is in phase sync (running); cutover needs phase ready");
  svc_.Put(Migration("m-1", "ready", "waiting"));
  r = Cli({"migration", "cutover", "m-1"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_HAS(r.out, "cutover accepted for orders (m-1): phase quiesce, state running.");
  EXPECT_EQ(svc_.LastCall("Act")->body, json::object());
}

TEST_F(CliTest, RollbackSendsDiscardFlag) {
  svc_.Put(Migration("m-1", "verify", "running"));
  CliRun r = Cli({"migration", "rollback", "m-1"});
  EXPECT_EQ(r.code, kExitFailed);
  EXPECT_HAS(r.err, "pass discard_target_writes to confirm");
  EXPECT_EQ(svc_.LastCall("Act")->body, json({{"discard_target_writes", false}}));
  r = Cli({"migration", "rollback", "m-1", "--discard-target-writes", "--json"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["phase"], "rolling_back");
  EXPECT_EQ(svc_.LastCall("Act")->body, json({{"discard_target_writes", true}}));
}

TEST_F(CliTest, FinalizeOverrideEvents) {
  json m = Migration("m-1", "verify", "waiting");
  m["findings"] = json::array({{{"id", "unlogged_tables"},
                                {"severity", "blocking"},
                                {"subject", "public.s"},
                                {"message", "unlogged"},
                                {"remedy", "SET LOGGED"}}});
  svc_.Put(m);
  CliRun r = Cli({"migration", "override", "m-1", "--finding", "unlogged_tables", "--subject",
                  "public.s", "--reason", "cache table"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_HAS(r.out, "override accepted for orders (m-1)");
  EXPECT_EQ(
      svc_.LastCall("Act")->body,
      json({{"finding", "unlogged_tables"}, {"subject", "public.s"}, {"reason", "cache table"}}));
  r = Cli({"migration", "override", "m-1", "--finding", "x"});
  EXPECT_EQ(r.code, kExitUsage);
  EXPECT_HAS(r.err, "--reason is required");
  r = Cli({"migration", "override", "m-1", "--finding", "x", "--reason", "  "});
  EXPECT_EQ(r.code, kExitUsage);
  EXPECT_HAS(r.err, "--reason must say why");

  r = Cli({"migration", "finalize", "m-1"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_HAS(r.out, "finalize accepted for orders (m-1): phase finalize");

  svc_.SetEvents(
      "m-1",
      json::array({{{"at", "t1"}, {"phase", "sync"}, {"kind", "info"}, {"message", "hello"}}}));
  r = Cli({"migration", "events", "m-1"});
  EXPECT_EQ(r.code, 0);
  EXPECT_HAS(r.out, "AT  PHASE  KIND  MESSAGE\nt1  sync   info  hello\n");
  r = Cli({"migration", "events", "m-1", "--json"});
  EXPECT_EQ(json::parse(r.out)["events"][0]["message"], "hello");
}

TEST_F(CliTest, WatchNonTtyPrintsEachChangeAndExitsByOutcome) {
  struct Case {
    std::string final_phase, final_state;
    int code;
  };
  for (const Case& c : {Case{"finalized", "finalized", 0}, Case{"promote", "failed", 1},
                        Case{"rolled_back", "rolled_back", 2}}) {
    SCOPED_TRACE(c.final_state);
    svc_.Put(Migration("m-1", "sync", "running"));
    svc_.ScriptGets(
        "m-1",
        {Migration("m-1", "sync", "running"), Migration("m-1", "sync", "running"),
         Migration("m-1", "ready", "waiting"), Migration("m-1", c.final_phase, c.final_state)});
    CliRun r = Cli({"migration", "status", "m-1", "--watch", "--interval-ms", "100"});
    EXPECT_EQ(r.code, c.code) << r.err;
    // Three distinct views, the repeated one printed once, blank-line separated.
    size_t views = 0;
    for (size_t p = 0; (p = r.out.find("Migration orders  (m-1)", p)) != std::string::npos; ++p)
      ++views;
    EXPECT_EQ(views, 3u) << r.out;
    EXPECT_HAS(r.out, "\n\nMigration orders  (m-1)");
    EXPECT_EQ(r.out.find("\033["), std::string::npos) << "no ANSI codes when not a TTY";
  }
  EXPECT_HAS(Cli({"migration", "status", "m-1", "--watch"}).out,
             "[x] rolling_back  [x] rolled_back");
}

TEST_F(CliTest, WatchTtyRedrawsInPlace) {
  svc_.Put(Migration("m-1", "sync", "running"));
  svc_.ScriptGets("m-1", {Migration("m-1", "sync", "running"), Migration("m-1", "sync", "running"),
                          Migration("m-1", "finalized", "finalized")});
  CliIo io;
  io.out_is_tty = true;
  CliRun r = Cli({"migration", "status", "m-1", "--watch", "--interval-ms", "100"}, io);
  EXPECT_EQ(r.code, 0);
  size_t clears = 0;
  for (size_t p = 0; (p = r.out.find("\033[H\033[2J", p)) != std::string::npos; ++p) ++clears;
  EXPECT_EQ(clears, 3u) << "every poll redraws on a TTY";
  EXPECT_HAS(r.out, "Watching every 100 ms; Ctrl-C to stop.");
}

TEST_F(CliTest, WatchJsonAndInterrupt) {
  svc_.Put(Migration("m-1", "sync", "running"));
  int polls = 0;
  CliIo io;
  io.interrupted = [&] { return ++polls > 5; };
  bool installed = false;
  io.watch_interrupts = [&] { installed = true; };
  CliRun r = Cli({"migration", "status", "m-1", "--watch", "--json", "--interval-ms", "100"}, io);
  EXPECT_EQ(r.code, kExitInterrupted);
  EXPECT_TRUE(installed);
  EXPECT_HAS(r.err, "interrupted; the migration continues in pgshiftd");
  EXPECT_EQ(json::parse(r.out)["phase"], "sync") << "one JSON document: the state never changed";
  EXPECT_GE(svc_.GetCount("m-1"), 2);
}

TEST_F(CliTest, WatchSurvivesAServerRestart) {
  svc_.Put(Migration("m-1", "sync", "running"));
  svc_.ScriptGets("m-1", {Migration("m-1", "sync", "running")});
  const int port = server_->port();
  int sleeps = 0;
  CliIo io;
  io.sleep = [&](std::chrono::milliseconds) {
    ++sleeps;
    if (sleeps == 1) server_->Stop();
    if (sleeps == 8) {
      svc_.ScriptGets("m-1", {Migration("m-1", "finalized", "finalized")});
      server_ = std::make_unique<ApiServer>(svc_, "127.0.0.1", port);
      ASSERT_TRUE(server_->Start().ok());
    }
  };
  CliRun r = Cli({"migration", "status", "m-1", "--watch", "--interval-ms", "100"}, io);
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_HAS(r.err, "warning: cannot reach pgshiftd at " + url_);
  EXPECT_HAS(r.err, "reconnected to pgshiftd");
  EXPECT_HAS(r.out, "[x] finalized");
}

TEST_F(CliTest, ServerErrorsMapToExitCodes) {
  svc_.FailNext(Unavailable("source 10.0.0.5:5432 unreachable"));
  CliRun r = Cli({"migration", "list"});
  EXPECT_EQ(r.code, kExitUnreachable);
  EXPECT_HAS(r.err, "error: source 10.0.0.5:5432 unreachable");
  svc_.FailNext(Internal("state store is corrupt"));
  r = Cli({"migration", "list"});
  EXPECT_EQ(r.code, kExitFailed);
  EXPECT_HAS(r.err, "state store is corrupt");
}

TEST(CliNoServer, UnreachableServer) {
  auto port = FreePort();
  ASSERT_TRUE(port.ok());
  std::string url = "http://127.0.0.1:" + std::to_string(*port);
  std::ostringstream out, err;
  CliIo io;
  io.out = &out;
  io.err = &err;
  int code = RunCli({"--server", url, "migration", "list"}, io, {AddMigrationCommands});
  EXPECT_EQ(code, kExitUnreachable);
  EXPECT_HAS(err.str(),
             "error: cannot reach pgshiftd at " + url +
                 ": connection refused or host unreachable — is it running? start it with "
                 "`pgshiftd --state FILE`");
}

TEST(CliNoServer, UsageErrors) {
  auto run = [](std::vector<std::string> args) {
    std::ostringstream out, err;
    CliIo io;
    io.out = &out;
    io.err = &err;
    CliRun r;
    r.code = RunCli(args, io, {AddMigrationCommands});
    r.out = out.str();
    r.err = err.str();
    return r;
  };
  CliRun r = run({});
  EXPECT_EQ(r.code, kExitUsage);
  EXPECT_HAS(r.err, "A subcommand is required");
  r = run({"migration", "status"});
  EXPECT_EQ(r.code, kExitUsage);
  EXPECT_HAS(r.err, "id is required");
  r = run({"migration", "status", "m-1", "--interval-ms", "500"});
  EXPECT_EQ(r.code, kExitUsage);
  EXPECT_HAS(r.err, "--interval-ms requires --watch");
  r = run({"migration", "frobnicate"});
  EXPECT_EQ(r.code, kExitUsage);
  r = run({"--server", "localhost:7432", "migration", "list"});
  EXPECT_EQ(r.code, kExitUsage);
  EXPECT_HAS(r.err, "--server 'localhost:7432' is not a pgshiftd URL; use http://HOST:PORT");
  r = run({"--help"});
  EXPECT_EQ(r.code, 0);
  EXPECT_HAS(r.out, "Exit codes:\n  0    success");
}

// --- the real binary ------------------------------------------------------

CliRun RunBinary(const std::vector<std::string>& args, const std::string& env_server = "") {
  auto dir = MakeTempDir("pgshift-cli-bin");
  CliRun r;
  if (!dir.ok()) return r;
  std::string out_path = *dir + "/out", err_path = *dir + "/err";
  pid_t pid = fork();
  if (pid == 0) {
    int o = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int e = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(o, 1);
    dup2(e, 2);
    if (env_server.empty()) {
      unsetenv("PGSHIFT_SERVER");
    } else {
      setenv("PGSHIFT_SERVER", env_server.c_str(), 1);
    }
    std::vector<char*> argv = {const_cast<char*>(PGSHIFT_CLI_BINARY)};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(PGSHIFT_CLI_BINARY, argv.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = ReadFile(out_path).ok() ? *ReadFile(out_path) : "";
  r.err = ReadFile(err_path).ok() ? *ReadFile(err_path) : "";
  (void)RemoveTree(*dir);
  return r;
}

TEST_F(CliTest, BinaryEndToEnd) {
  CliRun r = RunBinary({"--server", url_, "migration", "create", "--name", "orders", "--source",
                        "host=127.0.0.1 port=5432", "--target-dir", "/srv/pg/orders",
                        "--target-port", "5544"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_HAS(r.out, "Created migration orders (m-1)");

  // --server from the environment; options after the subcommand.
  r = RunBinary({"migration", "status", "m-1"}, url_);
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_HAS(r.out, "[>] preflight  [ ] provision");

  r = RunBinary({"migration", "list", "--json", "--server", url_});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["migrations"][0]["id"], "m-1");

  r = RunBinary({"--server", url_, "migration", "cutover", "m-1"});
  EXPECT_EQ(r.code, 1);
  EXPECT_HAS(r.err,
             "error: migration m-1 is in phase preflight (running); cutover needs phase ready");

  r = RunBinary({"--server", url_, "migration", "status", "nope"});
  EXPECT_EQ(r.code, 1);
  EXPECT_HAS(r.err, "error: migration 'nope' not found");

  r = RunBinary({"--server", url_, "migration", "create", "--name", "x", "--source",
                 "port=abc host", "--target-dir", "/srv/x", "--target-port", "1"});
  EXPECT_EQ(r.code, 64);
  EXPECT_HAS(r.err, "error: --source: bad connection string");

  r = RunBinary({"migration", "list", "--bogus"});
  EXPECT_EQ(r.code, 64);
  EXPECT_HAS(r.err, "--bogus");
}

TEST_F(CliTest, BinaryWatchStopsOnCtrlC) {
  svc_.Put(Migration("m-1", "sync", "running"));
  auto dir = MakeTempDir("pgshift-cli-sigint");
  ASSERT_TRUE(dir.ok());
  std::string out_path = *dir + "/out", err_path = *dir + "/err";
  pid_t pid = fork();
  if (pid == 0) {
    int o = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int e = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(o, 1);
    dup2(e, 2);
    execl(PGSHIFT_CLI_BINARY, PGSHIFT_CLI_BINARY, "--server", url_.c_str(), "migration", "status",
          "m-1", "--watch", "--interval-ms", "200", static_cast<char*>(nullptr));
    _exit(127);
  }
  // Wait (bounded) for the first view, then Ctrl-C.
  for (int i = 0; i < 200 && svc_.GetCount("m-1") < 2; ++i) usleep(50 * 1000);
  EXPECT_GE(svc_.GetCount("m-1"), 2) << "the watcher never polled";
  kill(pid, SIGINT);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 130);
  EXPECT_HAS(*ReadFile(out_path), "[>] sync");
  EXPECT_HAS(*ReadFile(err_path), "interrupted; the migration continues in pgshiftd");
  (void)RemoveTree(*dir);
}

TEST(CliBinary, UnreachableDefaultsAndHelp) {
  auto port = FreePort();
  ASSERT_TRUE(port.ok());
  std::string url = "http://127.0.0.1:" + std::to_string(*port);
  CliRun r = RunBinary({"--server", url, "migration", "status", "m-1", "--watch"});
  EXPECT_EQ(r.code, 3);
  EXPECT_HAS(r.err, "cannot reach pgshiftd at " + url);
  EXPECT_HAS(r.err, "is it running? start it with `pgshiftd --state FILE`");

  r = RunBinary({"--help"});
  EXPECT_EQ(r.code, 0);
  EXPECT_HAS(r.out, "PGSHIFT_SERVER");
  EXPECT_HAS(r.out, "http://127.0.0.1:7432");
  EXPECT_HAS(r.out, "migration");
  r = RunBinary({"migration", "status", "--help"});
  EXPECT_EQ(r.code, 0);
  EXPECT_HAS(r.out, "finalized (exit 0), failed (exit 1) or rolled back (exit 2)");
}

}  // namespace
}  // namespace pgshift::cli
