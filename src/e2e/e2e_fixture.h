// SandboxTest: the fixture the end-to-end tests share. Each test gets a fresh
// sandbox (source with data, a router, a real pgshiftd process); the fixture
// creates migrations over the REST API, runs ledger writers through the router
// and proves them on a server, and when a test failed prints the tails of
// pgshiftd's and the router's logs. At its end: counting rows on a server,
// waiting for a count, and the `E2E <name> {...}` line a binary prints last.
// Not thread-safe: used from the test's thread (LedgerWriter runs its own).
#pragma once

#include <dirent.h>
#include <gtest/gtest.h>
#include <sys/types.h>

#include <cctype>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "common/os.h"
#include "demo/sandbox.h"
#include "load/cdc_consumer.h"
#include "load/ledger.h"
#include "load/pgbench_load.h"
#include "pg/conn.h"

namespace pgshift::e2e {

using json = nlohmann::json;

inline constexpr int64_t kMigrationBoundMs = 240000;  // safety bound, not a performance assertion
inline constexpr size_t kPgshiftdLogTail = 6000;
inline constexpr size_t kRouterLogTail = 4000;
inline constexpr int kLedgerWriters = 2;
// What a pgshiftd armed with test fault points reads (common/faults.h).
inline constexpr char kFaultsEnv[] = "PGSHIFT_FAULTS";
// StartFullLoad's pgbench: load, not a benchmark.
inline constexpr int kPgbenchClients = 2;
inline constexpr int kPgbenchRate = 50;  // tps
inline constexpr int64_t kMinCommittedPerWriter = 50;

inline bool Terminal(const json& m) {
  return m["phase"] == "finalized" || m["phase"] == "rolled_back" || m["state"] == "failed" ||
         m["state"] == "blocked";
}

// Waiting for an operator (in ready, say), or ended.
inline bool WaitingOrTerminal(const json& m) { return m["state"] == "waiting" || Terminal(m); }

// The last `n` bytes of `path`, under a heading; nothing when it cannot be read.
inline void PrintTail(const std::string& heading, const std::string& path, size_t n) {
  auto text = ReadFile(path);
  if (!text.ok()) return;
  std::cerr << "---- " << heading << " ----\n"
            << text->substr(text->size() > n ? text->size() - n : 0) << "\n";
}

// Live processes (not zombies) whose command line (NUL-separated
// arguments) holds every one of `parts`.
inline std::vector<pid_t> LiveProcessesWith(const std::vector<std::string>& parts) {
  std::vector<pid_t> out;
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return out;
  while (dirent* d = ::readdir(proc)) {
    const pid_t pid = std::atoi(d->d_name);
    if (pid <= 0) continue;
    const std::string at = "/proc/" + std::to_string(pid);
    auto cmdline = ReadFile(at + "/cmdline");
    if (!cmdline.ok()) continue;
    bool all = true;
    for (const auto& p : parts) all = all && cmdline->find(p) != std::string::npos;
    auto stat = ReadFile(at + "/stat");
    const size_t paren = stat.ok() ? stat->rfind(')') : std::string::npos;
    const bool zombie =
        paren == std::string::npos || paren + 2 >= stat->size() || (*stat)[paren + 2] == 'Z';
    if (all && !zombie) out.push_back(pid);
  }
  ::closedir(proc);
  return out;
}

// The number of `path`'s phases without a transition event in `events`
// (GET /v1/migrations/{id}/events' body), each one a lost event; all of
// them when the events could not be read.
inline int MissingTransitions(const json& events, const std::vector<std::string>& path) {
  EXPECT_TRUE(events.contains("events")) << events.dump();
  const json list = events.contains("events") ? events["events"] : json::array();
  int missing = 0;
  for (const auto& p : path) {
    bool found = false;
    for (const auto& e : list) found = found || e["phase"] == p;
    EXPECT_TRUE(found) << "no transition event for " << p;
    missing += !found;
  }
  return missing;
}

// What SandboxTest::ExpectWritersClean lets pass.
struct WritersCheck {
  // Refused writes (a fenced source, a proxy that is down) where clients are
  // meant to see an error; each one a clear error, never a silent loss.
  bool allow_errors = false;
};

class SandboxTest : public ::testing::Test {
 protected:
  virtual std::string Router() const { return "proxy"; }
  // Adjusts the sandbox's options before it starts (Router() is set).
  virtual void Configure(demo::SandboxOptions&) const {}

  void SetUp() override {
    demo::SandboxOptions opts{
        .router = Router(), .pgshiftd_path = PGSHIFTD_PATH, .proxy_path = PGSHIFT_PROXY_PATH};
    Configure(opts);
    auto sb = demo::Sandbox::Start(opts);
    ASSERT_TRUE(sb.ok()) << sb.status().ToString();
    sb_ = std::move(sb).value();
  }
  void TearDown() override {
    if (HasFailure() && sb_) {
      PrintTail("pgshiftd log", sb_->PgshiftdLog(), kPgshiftdLogTail);
      PrintTail("proxy log", sb_->dir() + "/proxy.log", kRouterLogTail);
    }
    if (HasFailure() && consumer_) {
      std::cerr << "---- pg_recvlogical ----\n";
      for (const auto& line : consumer_->Log().last_lines) std::cerr << line << "\n";
    }
    if (pgbench_) pgbench_->Stop();
    pgbench_.reset();
    consumer_.reset();
    writers_.clear();
    sb_.reset();
  }

  // Stops pgshiftd (SIGTERM) and starts it again, armed with `faults`
  // (PGSHIFT_FAULTS, e.g. "crash:rollback_applied") when given.
  Status RestartPgshiftd(const std::string& faults) {
    PGSHIFT_RETURN_IF_ERROR(sb_->KillPgshiftd(SIGTERM));
    if (!faults.empty()) setenv(kFaultsEnv, faults.c_str(), 1);
    Status st = sb_->StartPgshiftd();
    unsetenv(kFaultsEnv);
    return st;
  }

  // Load through the router: the ledger writers (StartWriters), pgbench
  // and, given a `cdc_slot`, a pg_recvlogical consumer of that logical slot
  // on the source (which a migration carries to the target).
  Status StartRoutedLoad(const std::string& cdc_slot) {
    if (!cdc_slot.empty()) {
      PGSHIFT_RETURN_IF_ERROR(sb_->CreateCdcSlot(cdc_slot, load::CdcPlugin::kTestDecoding));
      consumer_ = sb_->CdcConsumerFor(cdc_slot, load::CdcPlugin::kTestDecoding);
      PGSHIFT_RETURN_IF_ERROR(consumer_->Start());
    }
    StartWriters();
    pgbench_ = std::make_unique<load::PgbenchLoad>(
        load::PgbenchOptions{.conninfo = sb_->AppConninfo(),
                             .clients = kPgbenchClients,
                             .threads = 1,
                             .rate = kPgbenchRate,
                             .log_dir = sb_->dir() + "/pgbench-logs"});
    pgbench_->Start();
    return Status::OK();
  }

  // POST /v1/migrations with `spec`; the new id.
  std::string CreateSpec(const json& spec) {
    auto r = sb_->Api("POST", "/v1/migrations", spec.dump());
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? CreatedId(*r) : "";
  }
  // The same with the sandbox's spec and `options`.
  std::string Create(const json& options) { return CreateSpec(sb_->MigrationSpec(options)); }
  // The id in POST /v1/migrations' answer `r`, which must be a 201.
  static std::string CreatedId(const json& r) {
    EXPECT_EQ(r["status"], 201) << r["body"].dump();
    return r["body"].value("id", "");
  }

  // POST /v1/migrations/{id}/{action}; whether it was accepted (202).
  bool PostAction(const std::string& id, const std::string& action,
                  const std::string& body = "{}") {
    auto r = sb_->Api("POST", "/v1/migrations/" + id + "/" + action, body);
    const bool accepted = r.ok() && (*r)["status"] == 202;
    EXPECT_TRUE(accepted) << action << ": "
                          << (r.ok() ? (*r)["body"].dump() : r.status().ToString());
    return accepted;
  }

  // GET /v1/migrations/{id}/events' body; an empty object when unanswered.
  json Events(const std::string& id) const {
    auto r = sb_->Api("GET", "/v1/migrations/" + id + "/events");
    return r.ok() ? (*r)["body"] : json::object();
  }

  // Ledger writers 1..kLedgerWriters through the router.
  void StartWriters() {
    for (int w = 1; w <= kLedgerWriters; ++w) {
      writers_.push_back(std::make_unique<load::LedgerWriter>(sb_->AppConninfo(), w));
      writers_.back()->Start();
    }
  }
  void StopWriters() {
    for (auto& w : writers_) w->Stop();
  }
  // Every acknowledged ledger row is on `conninfo` exactly once and each
  // writer committed its share; no write failed unless `opts` allows it.
  // Counts what was lost or doubled, and keeps the first error a client saw,
  // for the faults report.
  void ExpectWritersClean(const std::string& conninfo, WritersCheck opts = {}) {
    for (auto& w : writers_) {
      auto st = w->Stats();
      if (!opts.allow_errors) {
        EXPECT_EQ(st.failed, 0) << (st.errors.empty() ? "" : st.errors.front());
        EXPECT_EQ(st.uncertain, 0) << (st.errors.empty() ? "" : st.errors.front());
      }
      if (first_error_.empty() && !st.errors.empty()) {
        first_error_ = st.errors.front();
        while (!first_error_.empty() &&
               std::isspace(static_cast<unsigned char>(first_error_.back())))
          first_error_.pop_back();  // libpq's messages end in a newline
      }
      EXPECT_GT(st.committed, kMinCommittedPerWriter);
      auto check = load::CheckLedger(conninfo, w->writer_id(), w->Acknowledged());
      ASSERT_TRUE(check.ok()) << check.status().ToString();
      EXPECT_EQ(check->lost, 0);
      EXPECT_EQ(check->duplicated, 0);
      EXPECT_EQ(check->found, check->acknowledged);
      lost_rows_ += check->lost;
      duplicated_rows_ += check->duplicated;
    }
  }

  std::unique_ptr<demo::Sandbox> sb_;
  std::vector<std::unique_ptr<load::LedgerWriter>> writers_;
  std::unique_ptr<load::CdcConsumer> consumer_;  // StartRoutedLoad's, given a slot
  std::unique_ptr<load::PgbenchLoad> pgbench_;
  std::string first_error_;  // the first error a writer saw, "" when none
  // What ExpectWritersClean found missing or twice, for the faults report.
  int64_t lost_rows_ = 0;
  int64_t duplicated_rows_ = 0;
};

// The integer column `n` of the first row of `sql` on `conninfo`.
inline Result<int64_t> Count(const std::string& conninfo, const std::string& sql) {
  PGSHIFT_ASSIGN_OR_RETURN(auto conn, PgConn::Connect(conninfo));
  PGSHIFT_ASSIGN_OR_RETURN(Rows rows, conn->Query(sql));
  if (rows.empty()) return NotFound("no row from: " + sql);
  return rows.Int(0, "n");
}

// Waits until `sql` counts `want` on `conninfo` (at least `want` unless `exactly`).
inline Status WaitCount(const std::string& conninfo, const std::string& sql, int64_t want,
                        int64_t timeout_ms, bool exactly = true) {
  const int64_t deadline = MonotonicMs() + timeout_ms;
  while (true) {
    auto n = Count(conninfo, sql);
    if (n.ok() && (exactly ? *n == want : *n >= want)) return Status::OK();
    if (MonotonicMs() > deadline) {
      return Timeout(std::string("wanted ") + (exactly ? "" : "at least ") + std::to_string(want) +
                     " from `" + sql + "`, last " +
                     (n.ok() ? std::to_string(*n) : n.status().ToString()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

inline Status WaitAtLeast(const std::string& conninfo, const std::string& sql, int64_t want,
                          int64_t timeout_ms) {
  return WaitCount(conninfo, sql, want, timeout_ms, /*exactly=*/false);
}

// Prints `E2E <name> <line()>` once the binary's tests are over, after
// gtest's own output, so that it is the last line (`make e2e-<name>`).
class PrintLineAtExit : public ::testing::Environment {
 public:
  PrintLineAtExit(std::string name, std::function<nlohmann::ordered_json()> line)
      : name_(std::move(name)), line_(std::move(line)) {}
  void TearDown() override { std::cout << "E2E " << name_ << " " << line_().dump() << std::endl; }

 private:
  std::string name_;
  std::function<nlohmann::ordered_json()> line_;
};

// Registers it; for a namespace-scope initializer.
inline const ::testing::Environment* PrintAtExit(std::string name,
                                                 std::function<nlohmann::ordered_json()> line) {
  return ::testing::AddGlobalTestEnvironment(new PrintLineAtExit(std::move(name), std::move(line)));
}

}  // namespace pgshift::e2e
