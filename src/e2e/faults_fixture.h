// What the fault-matrix scenarios (faults_*_e2e_test.cc) share beyond
// e2e_fixture.h: arming pgshiftd's fault points (common/faults.h) for the
// pgshiftd a sandbox starts next, waiting for one that kills itself, and
// FaultsTest, their fixture (short migrations, the load through
// pgshift-proxy checked at the end, what each scenario adds to the faults
// report).
// Not thread-safe: used from the test's thread.
#pragma once

#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <thread>

#include "common/clock.h"
#include "demo/sandbox.h"
#include "e2e/e2e_fixture.h"
#include "e2e/faults_report.h"
#include "load/cdc_consumer.h"
#include "load/ledger.h"
#include "load/pgbench_load.h"

namespace pgshift::e2e {

inline constexpr int64_t kFaultsPollMs = 20;
// How long the writers go on once a migration ended, before they are checked.
inline constexpr int64_t kWritesGoOnMs = 1000;
// The full load's CDC consumer (StartFullLoad): its slot, and how long it may
// take to receive every acknowledged row (pg_recvlogical reconnects every
// 5 s; the rest is catching up).
inline constexpr char kFaultsCdcSlot[] = "faults_cdc";
inline constexpr int64_t kFaultsCdcDeliverMs = 60000;

// PGSHIFT_FAULTS for the pgshiftd the sandbox starts next. The entry is put
// into the environment once, before any thread of the test starts, and then
// rewritten in place: environ itself never changes under the ledger
// writers' threads (libpq reads it when they connect).
inline void SetFaults(const std::string& value) {
  static char entry[128] = "PGSHIFT_FAULTS=";
  static const bool put = ::putenv(entry) == 0;
  ASSERT_TRUE(put);
  ASSERT_LT(value.size() + 16, sizeof entry);
  std::snprintf(entry, sizeof entry, "PGSHIFT_FAULTS=%s", value.c_str());
}

// Whether the sandbox's pgshiftd runs (a zombie, which the sandbox has not
// reaped yet, does not count).
inline bool PgshiftdAlive(const demo::Sandbox& sb) {
  return !LiveProcessesWith({std::string("--state") + '\0' + sb.dir() + "/state.db"}).empty();
}

// Waits up to bound_ms until pgshiftd has killed itself, then lets the
// sandbox reap it.
inline bool WaitForPgshiftdToDie(demo::Sandbox& sb, int64_t bound_ms) {
  const int64_t deadline = MonotonicMs() + bound_ms;
  while (PgshiftdAlive(sb)) {
    if (MonotonicMs() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(kFaultsPollMs));
  }
  return sb.KillPgshiftd(SIGKILL).ok();
}

// Starts pgshiftd armed with `faults`. With a fault armed it may reach it
// before it answers; that counts as started.
inline void StartPgshiftd(demo::Sandbox& sb, const std::string& faults) {
  SetFaults(faults);
  Status st = sb.StartPgshiftd();
  if (!faults.empty() && st.code() == Code::kUnavailable) return;
  ASSERT_TRUE(st.ok()) << st.ToString();
}

// A fault scenario: its pgshiftd starts with no fault armed (StartPgshiftd
// arms one), and it adds its line and what it lost to the faults report.
class FaultsTest : public SandboxTest {
 protected:
  void SetUp() override {
    SetFaults("");
    started_ms_ = MonotonicMs();
    SandboxTest::SetUp();
  }
  void TearDown() override {
    SandboxTest::TearDown();
    SetFaults("");
  }

  // The ledger writers (StartWriters) with, through pgshift-proxy as well,
  // pgbench and (with `cdc`) a pg_recvlogical consumer of a logical slot on
  // the source, which a migration carries to the target.
  // StopWritersAndCheck checks them.
  void StartFullLoad(bool cdc = true) {
    Status st = StartRoutedLoad(cdc ? kFaultsCdcSlot : "");
    ASSERT_TRUE(st.ok()) << st.ToString();
  }

  // A short migration's options (1 s gates, 100 ms polls); `more` adds or
  // overrides.
  static json Options(bool auto_cutover, const json& more = json::object()) {
    json o = {{"auto_cutover", auto_cutover},
              {"auto_finalize", true},
              {"sustain_seconds", 1},
              {"verify_seconds", 1},
              {"poll_ms", 100}};
    for (const auto& [k, v] : more.items()) o[k] = v;
    return o;
  }

  // Creates a migration with `options` and waits for it to wait in ready
  // (the migration as it was then in `ready`, when given); its id, or ""
  // when it did not get there (the failure recorded).
  std::string CreateInReady(const json& options, json* ready = nullptr) {
    const std::string id = Create(options);
    if (id.empty()) return "";
    auto m = sb_->WaitFor(id, WaitingOrTerminal, kMigrationBoundMs);
    EXPECT_TRUE(m.ok()) << m.status().ToString();
    if (!m.ok()) return "";
    EXPECT_EQ((*m)["phase"], "ready") << m->dump(2);
    if ((*m)["phase"] != "ready") return "";
    if (ready != nullptr) *ready = *m;
    return id;
  }

  // Lets the writers go on (on `conninfo`) a moment, stops them and checks
  // every acknowledged row there (ExpectWritersClean); with the full load,
  // also that pgbench saw no failure and that every acknowledged row reached
  // the CDC consumer exactly once.
  void StopWritersAndCheck(const std::string& conninfo, WritersCheck opts = {}) {
    std::this_thread::sleep_for(std::chrono::milliseconds(kWritesGoOnMs));
    StopWriters();
    if (pgbench_) pgbench_->Stop();
    ExpectWritersClean(conninfo, opts);
    if (pgbench_) {
      const load::PgbenchStats pb = pgbench_->Stats();
      if (!opts.allow_errors) {
        EXPECT_EQ(pb.failed, 0) << (pb.errors.empty() ? "" : pb.errors[0]);
      }
      EXPECT_GT(pb.transactions, 0);
    }
    if (consumer_) ExpectDeliveredOnce(*consumer_);
  }

  // Every row a writer saw acknowledged reached `consumer` exactly once (a
  // re-delivery of the same row after a reconnect counts as duplicated too).
  void ExpectDeliveredOnce(load::CdcConsumer& consumer) {
    for (const auto& w : writers_) {
      const auto acked = w->Acknowledged();
      Status st = consumer.WaitDelivered(w->writer_id(), acked, kFaultsCdcDeliverMs);
      EXPECT_TRUE(st.ok()) << st.ToString();
      auto got = consumer.Changes();
      ASSERT_TRUE(got.ok()) << got.status().ToString();
      const load::CdcCheck c = load::CheckCdc(*got, w->writer_id(), acked);
      EXPECT_EQ(c.lost, 0) << "writer " << w->writer_id();
      EXPECT_EQ(c.duplicated, 0) << "writer " << w->writer_id() << ": " << c.replayed
                                 << " of them replayed";
      cdc_lost_ += c.lost;
      cdc_duplicated_ += c.duplicated;
    }
  }

  // `field` of the writers' stats, summed.
  int64_t Sum(int64_t load::LedgerStats::*field) const {
    int64_t n = 0;
    for (const auto& w : writers_) n += w->Stats().*field;
    return n;
  }
  int64_t Committed() const { return Sum(&load::LedgerStats::committed); }
  // Writes that got an error (refused, or with an unknown outcome).
  int64_t Refused() const {
    return Sum(&load::LedgerStats::failed) + Sum(&load::LedgerStats::uncertain);
  }

  // Polls `pred` every kFaultsPollMs up to bound_ms; the ms it took, or -1.
  static int64_t MsUntil(const std::function<bool()>& pred, int64_t bound_ms) {
    const int64_t start = MonotonicMs();
    while (!pred()) {
      if (MonotonicMs() - start > bound_ms) return -1;
      std::this_thread::sleep_for(std::chrono::milliseconds(kFaultsPollMs));
    }
    return MonotonicMs() - start;
  }
  // How long until `count` grows past what it is now, up to bound_ms; -1
  // when it does not.
  static int64_t MsUntilMore(const std::function<int64_t()>& count, int64_t bound_ms) {
    const int64_t before = count();
    return MsUntil([&] { return count() > before; }, bound_ms);
  }

  // GET on the proxy's admin API (/routes/app, say); null when it does not answer.
  json ProxyGet(const std::string& path) const {
    httplib::Client cli(sb_->RouterConfig().value("admin_url", ""));
    cli.set_connection_timeout(std::chrono::seconds(2));
    auto res = cli.Get(path.c_str());
    if (!res || res->status != 200) return nullptr;
    return json::parse(res->body, nullptr, false);
  }

  // The message of `id`'s first event that holds `needle`, or "".
  std::string EventSaying(const std::string& id, const std::string& needle) const {
    const json events = Events(id);
    for (const auto& e : events.value("events", json::array())) {
      const std::string m = e.value("message", "");
      if (m.find(needle) != std::string::npos) return m;
    }
    return "";
  }

  double Seconds() const { return (MonotonicMs() - started_ms_) / 1000.0; }

  // Adds the rows and events this test lost or doubled to the report's totals.
  void AddLosses(FaultsTotals& t) const {
    t.lost_rows += lost_rows_;
    t.duplicated_rows += duplicated_rows_;
    t.lost_events += missing_events_ + cdc_lost_;
    t.duplicated_events += cdc_duplicated_;
  }

  int64_t started_ms_ = 0;
  int missing_events_ = 0;  // transitions missing from the events (MissingTransitions)
  // Ledger rows the CDC consumer never received, or received more than once.
  int64_t cdc_lost_ = 0;
  int64_t cdc_duplicated_ = 0;
};

}  // namespace pgshift::e2e
