// End-to-end CDC: real consumers (PostgreSQL's pg_recvlogical, test_decoding
// and wal2json) stream logical slots through pgshift-proxy while ledger
// writers commit through it and a real pgshiftd migrates the database. Every
// acknowledged ledger row must reach each consumer exactly once: across a
// cutover (the slots recreated on the target), across a cutover aborted before
// promotion (the consumers back on the source), and across kill -9 of pgshiftd
// while it recreates the slots. A consumer that bypasses the router blocks the
// migration at preflight; one that does not confirm in time aborts the cutover.
//
// The binary prints, last, the totals of its tests:
//   E2E cdc {"cutover_lost":N,"cutover_duplicated":N,"rollback_lost":N,
//            "rollback_duplicated":N,"events":N,"slots_carried":N}
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>

#include <chrono>
#include <iostream>
#include <thread>

#include "common/clock.h"
#include "e2e/e2e_fixture.h"
#include "load/cdc_consumer.h"
#include "load/ledger.h"
#include "pg/conn.h"

namespace pgshift {
namespace {

using e2e::Count;
using e2e::kMigrationBoundMs;
using e2e::Terminal;
using e2e::WaitCount;
using json = nlohmann::json;
using load::CdcPlugin;

// pg_recvlogical retries every 5 s; the rest is catching up.
constexpr int64_t kDeliverTimeoutMs = 60000;
constexpr int64_t kSlotActiveTimeoutMs = 30000;
constexpr int64_t kCutoverBoundMs = 60000;
constexpr int64_t kDrainTimeoutMs = 2000;  // the stopped-consumer test's cdc_drain_timeout_ms
constexpr int64_t kCrashPollMs = 10;
constexpr int kAfterWriter = 50;  // writes made after an aborted cutover

// What the tests measured, summed over the tests that ran; printed at the end.
struct CdcTotals {
  int64_t cutover_lost = 0;
  int64_t cutover_duplicated = 0;
  int64_t rollback_lost = 0;
  int64_t rollback_duplicated = 0;
  int64_t events = 0;  // ledger changes the consumers received
  int64_t slots_carried = 0;
};

CdcTotals& Totals() {
  static CdcTotals totals;
  return totals;
}

const ::testing::Environment* const kPrintTotals = e2e::PrintAtExit("cdc", [] {
  const CdcTotals& t = Totals();
  nlohmann::ordered_json line;
  line["cutover_lost"] = t.cutover_lost;
  line["cutover_duplicated"] = t.cutover_duplicated;
  line["rollback_lost"] = t.rollback_lost;
  line["rollback_duplicated"] = t.rollback_duplicated;
  line["events"] = t.events;
  line["slots_carried"] = t.slots_carried;
  return line;
});

std::string ActiveSlotsSql(const std::vector<std::string>& slots) {
  std::string in;
  for (const auto& s : slots) in += (in.empty() ? "" : ", ") + QuoteLiteral(s);
  return "select count(*) as n from pg_replication_slots where active and slot_name in (" + in +
         ")";
}

// The migration's plan entry for slot `name` (result.cdc_slots), or null.
const json* CdcSlot(const json& m, const std::string& name) {
  auto result = m.find("result");
  if (result == m.end()) return nullptr;
  auto slots = result->find("cdc_slots");
  if (slots == result->end() || !slots->is_array()) return nullptr;
  for (const auto& s : *slots) {
    if (s.value("name", "") == name) return &s;
  }
  return nullptr;
}

class CdcE2E : public e2e::SandboxTest {
 protected:
  void TearDown() override {
    for (auto& c : consumers_) {
      if (!HasFailure()) break;
      std::cerr << "---- pg_recvlogical, slot " << c->options().slot << " ----\n";
      for (const auto& line : c->Log().last_lines) std::cerr << line << "\n";
    }
    consumers_.clear();
    SandboxTest::TearDown();
  }

  // Creates `slot` on the source and a consumer of it (started unless `start`
  // is false), as role app through the router or straight to the source.
  Status AddConsumer(const std::string& slot, CdcPlugin plugin, bool through_router = true,
                     bool start = true) {
    PGSHIFT_RETURN_IF_ERROR(sb_->CreateCdcSlot(slot, plugin));
    consumers_.push_back(sb_->CdcConsumerFor(slot, plugin, through_router));
    return start ? consumers_.back()->Start() : Status::OK();
  }
  std::vector<std::string> SlotNames() const {
    std::vector<std::string> out;
    for (const auto& c : consumers_) out.push_back(c->options().slot);
    return out;
  }

  // The usual start of a test: pgshiftd with `faults` armed ("" keeps the
  // one running), a test_decoding and a wal2json consumer through the
  // router, and the ledger writers.
  Status StartWithBothPlugins(const std::string& faults) {
    if (!faults.empty()) PGSHIFT_RETURN_IF_ERROR(RestartPgshiftd(faults));
    PGSHIFT_RETURN_IF_ERROR(AddConsumer("orders_td", CdcPlugin::kTestDecoding));
    PGSHIFT_RETURN_IF_ERROR(AddConsumer("orders_json", CdcPlugin::kWal2Json));
    StartWriters();
    return Status::OK();
  }

  json Options(bool auto_cutover) const {
    return {{"auto_cutover", auto_cutover},
            {"auto_finalize", true},
            {"sustain_seconds", 1},
            {"verify_seconds", 1},
            {"poll_ms", 100}};
  }

  // Waits for `ready`, approves the cutover, and returns the migration once
  // the cutover attempt is over: back in `ready` (aborted), or past it.
  Result<json> CutOverFromReady(const std::string& id) {
    PGSHIFT_RETURN_IF_ERROR(sb_->WaitFor(
                                   id,
                                   [](const json& m) {
                                     return (m["phase"] == "ready" && m["state"] == "waiting") ||
                                            Terminal(m);
                                   },
                                   kMigrationBoundMs)
                                .status());
    PGSHIFT_ASSIGN_OR_RETURN(json cut, sb_->Api("POST", "/v1/migrations/" + id + "/cutover", "{}"));
    if (cut["status"] != 202) return FailedPrecondition("cutover refused: " + cut.dump());
    // An attempt ends with an error in `ready`, or leaves `ready` behind for good.
    return sb_->WaitFor(
        id,
        [](const json& m) {
          return (m["phase"] == "ready" && !m.value("error", "").empty()) || Terminal(m) ||
                 m["phase"] == "switch" || m["phase"] == "verify";
        },
        kCutoverBoundMs);
  }

  // Each consumer received every acknowledged row of every writer exactly
  // once; adds its numbers to *lost and *duplicated and Totals().events.
  void ExpectDeliveredExactlyOnce(int64_t* lost, int64_t* duplicated) {
    for (auto& c : consumers_) {
      SCOPED_TRACE("slot " + c->options().slot);
      for (auto& w : writers_) {
        const auto acked = w->Acknowledged();
        Status st = c->WaitDelivered(w->writer_id(), acked, kDeliverTimeoutMs);
        EXPECT_TRUE(st.ok()) << st.ToString();
        auto got = c->Changes();
        ASSERT_TRUE(got.ok()) << got.status().ToString();
        const load::CdcCheck check = load::CheckCdc(*got, w->writer_id(), acked);
        EXPECT_EQ(check.lost, 0);
        EXPECT_EQ(check.duplicated, 0) << check.replayed << " of them replayed";
        EXPECT_GT(check.delivered, e2e::kMinCommittedPerWriter);
        *lost += check.lost;
        *duplicated += check.duplicated;
      }
      auto got = c->Changes();
      if (got.ok()) Totals().events += static_cast<int64_t>(got->size());
    }
  }

  // The migration carried every consumer's slot to the target, each exactly
  // once, and the consumers confirmed there; the target's pg_replication_slots
  // shows each slot, active.
  void ExpectCarried(const json& m) {
    const auto names = SlotNames();
    ASSERT_EQ(m["result"].value("cdc_slots", json::array()).size(), names.size())
        << m["result"].dump(1);
    for (const auto& name : names) {
      const json* s = CdcSlot(m, name);
      ASSERT_NE(s, nullptr) << name << " not planned: " << m["result"].dump(1);
      EXPECT_EQ(s->value("state", ""), "advanced") << s->dump();
      EXPECT_FALSE(s->value("recreated_lsn", "").empty()) << s->dump();
      if (!s->value("recreated_lsn", "").empty()) ++Totals().slots_carried;
    }
    auto logical = Count(sb_->TargetConninfo(),
                         "select count(*) as n from pg_replication_slots where slot_type = "
                         "'logical'");
    ASSERT_TRUE(logical.ok()) << logical.status().ToString();
    EXPECT_EQ(*logical, static_cast<int64_t>(names.size()));
    Status st =
        WaitCount(sb_->TargetConninfo(), ActiveSlotsSql(names), names.size(), kSlotActiveTimeoutMs);
    EXPECT_TRUE(st.ok()) << "the consumers must stream from the target: " << st.ToString();
    EXPECT_FALSE(sb_->source().Running()) << "finalize retires the source";
  }

  // Every consumer's stream was ended at least once (paused by the proxy)
  // and it streamed again.
  void ExpectConsumersReconnected() {
    for (auto& c : consumers_) {
      const load::CdcLog log = c->Log();
      EXPECT_GE(log.disconnects, 1) << c->options().slot;
      EXPECT_GE(log.streams_started, 2) << c->options().slot;
      EXPECT_TRUE(c->Running()) << c->options().slot;
    }
  }

  std::vector<std::unique_ptr<load::CdcConsumer>> consumers_;
};

// (a) The product's promise, with both output plugins.
TEST_F(CdcE2E, BothPluginsGetEveryChangeExactlyOnceAcrossACutover) {
  Status st = StartWithBothPlugins("");
  ASSERT_TRUE(st.ok()) << st.ToString();
  std::this_thread::sleep_for(std::chrono::seconds(1));
  const std::string id = Create(Options(/*auto_cutover=*/true));
  auto m = sb_->WaitFor(id, Terminal, kMigrationBoundMs);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ASSERT_EQ((*m)["phase"], "finalized") << m->dump(2);
  std::this_thread::sleep_for(std::chrono::seconds(1));  // writes go on, on the target
  StopWriters();
  ExpectDeliveredExactlyOnce(&Totals().cutover_lost, &Totals().cutover_duplicated);
  ExpectCarried(*m);
  ExpectConsumersReconnected();
  ExpectWritersClean(sb_->TargetConninfo());
}

// (b) A failure after the consumers were drained and paused, before the
// target is promoted: traffic and consumers go back to the source.
TEST_F(CdcE2E, CutoverAbortedBeforePromotionPutsTheConsumersBackOnTheSource) {
  Status st = StartWithBothPlugins("fail:before_promote");
  ASSERT_TRUE(st.ok()) << st.ToString();
  const std::string id = Create(Options(/*auto_cutover=*/false));
  auto m = CutOverFromReady(id);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ASSERT_EQ((*m)["phase"], "ready") << "the cutover must have been aborted: " << m->dump(2);
  for (const auto& name : SlotNames()) {
    const json* s = CdcSlot(*m, name);
    ASSERT_NE(s, nullptr) << m->dump(2);
    EXPECT_FALSE(s->value("drained_lsn", "").empty()) << "drained before the abort: " << s->dump();
  }
  st = WaitCount(sb_->SourceConninfo(), ActiveSlotsSql(SlotNames()), consumers_.size(),
                 kSlotActiveTimeoutMs);
  ASSERT_TRUE(st.ok()) << "the consumers must stream from the source again: " << st.ToString();
  std::this_thread::sleep_for(std::chrono::seconds(1));  // writes go on, on the source
  StopWriters();
  ExpectDeliveredExactlyOnce(&Totals().rollback_lost, &Totals().rollback_duplicated);
  ExpectConsumersReconnected();
  ExpectWritersClean(sb_->SourceConninfo());
  EXPECT_TRUE(sb_->source().Running());
}

// (c) A slot whose consumer is not running cannot confirm the final LSN: the
// cutover is aborted, naming it, and the source serves on.
TEST_F(CdcE2E, AStoppedConsumerAbortsTheCutoverNamingItsSlot) {
  Status st = AddConsumer("stopped_cdc", CdcPlugin::kTestDecoding, /*through_router=*/true,
                          /*start=*/false);
  ASSERT_TRUE(st.ok()) << st.ToString();
  StartWriters();
  json options = Options(/*auto_cutover=*/false);
  options["cdc_drain_timeout_ms"] = kDrainTimeoutMs;
  const std::string id = Create(options);
  auto m = CutOverFromReady(id);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ASSERT_EQ((*m)["phase"], "ready") << "the cutover must have been aborted: " << m->dump(2);
  const std::string error = (*m).value("error", "");
  EXPECT_NE(error.find("stopped_cdc"), std::string::npos) << error;
  bool warned = false;
  for (const auto& f : (*m)["findings"]) {
    warned = warned ||
             (f["id"] == "cdc_slot" && f["subject"] == "stopped_cdc" && f["severity"] == "warning");
  }
  EXPECT_TRUE(warned) << "preflight warns of a slot without a consumer: " << (*m)["findings"];
  // Traffic is back on the source: new writes through the router land there.
  load::LedgerWriter after(sb_->AppConninfo(), kAfterWriter);
  after.Start();
  std::this_thread::sleep_for(std::chrono::seconds(2));
  after.Stop();
  StopWriters();
  const auto a = after.Stats();
  EXPECT_EQ(a.failed, 0) << (a.errors.empty() ? "" : a.errors.front());
  EXPECT_GT(a.committed, 20);
  auto check = load::CheckLedger(sb_->SourceConninfo(), kAfterWriter, after.Acknowledged());
  ASSERT_TRUE(check.ok()) << check.status().ToString();
  EXPECT_EQ(check->lost, 0);
  ExpectWritersClean(sb_->SourceConninfo());
}

// (d) The drain can only pause consumers it can reach: one that reads its slot
// straight from the source blocks the migration at preflight.
TEST_F(CdcE2E, AConsumerThatBypassesTheRouterBlocksAtPreflight) {
  Status st = AddConsumer("direct_cdc", CdcPlugin::kTestDecoding, /*through_router=*/false);
  ASSERT_TRUE(st.ok()) << st.ToString();
  st = AddConsumer("routed_cdc", CdcPlugin::kWal2Json);
  ASSERT_TRUE(st.ok()) << st.ToString();
  const std::string id = Create(Options(/*auto_cutover=*/false));
  auto m = sb_->WaitFor(
      id, [](const json& m) { return m["phase"] != "preflight" || Terminal(m); },
      kMigrationBoundMs);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ((*m)["phase"], "preflight");
  EXPECT_EQ((*m)["state"], "blocked");
  std::vector<std::string> bypassing;
  for (const auto& f : (*m)["findings"]) {
    if (f["id"] != "cdc_consumer_bypasses_router") continue;
    EXPECT_EQ(f["severity"], "blocking") << f.dump();
    bypassing.push_back(f.value("subject", ""));
  }
  EXPECT_EQ(bypassing, std::vector<std::string>{"direct_cdc"}) << (*m)["findings"].dump(1);
  const json* direct = CdcSlot(*m, "direct_cdc");
  const json* routed = CdcSlot(*m, "routed_cdc");
  ASSERT_NE(direct, nullptr) << m->dump(2);
  ASSERT_NE(routed, nullptr) << m->dump(2);
  EXPECT_EQ((*direct)["consumer"].value("through_router", true), false) << direct->dump();
  EXPECT_EQ((*routed)["consumer"].value("through_router", false), true) << routed->dump();
}

// (e) kill -9 of pgshiftd while it recreates the slots on the promoted target,
// restarted without the fault: the migration finishes, every slot exists
// once on the target, and the consumers still see every change once.
struct CrashPoint {
  const char* name;
  const char* fault;              // the point pgshiftd SIGKILLs itself at
  int64_t target_slots_at_crash;  // logical slots already on the target then
};

class CdcCrashE2E : public CdcE2E, public ::testing::WithParamInterface<CrashPoint> {};

TEST_P(CdcCrashE2E, KilledWhileRecreatingSlotsResumesExactlyOnce) {
  Status st = StartWithBothPlugins(std::string("crash:") + GetParam().fault);
  ASSERT_TRUE(st.ok()) << st.ToString();
  const std::string id = Create(Options(/*auto_cutover=*/true));
  const int64_t deadline = MonotonicMs() + kMigrationBoundMs;
  while (sb_->PgshiftdRunning()) {
    ASSERT_LT(MonotonicMs(), deadline) << "pgshiftd never reached " << GetParam().fault;
    std::this_thread::sleep_for(std::chrono::milliseconds(kCrashPollMs));
  }
  // Where it died: no slot on the target yet, or the first one only. The
  // traffic stays held meanwhile, so one look and a restart at once.
  auto at_crash = Count(sb_->TargetConninfo(),
                        "select count(*) as n from pg_replication_slots where slot_type = "
                        "'logical'");
  st = sb_->StartPgshiftd();
  ASSERT_TRUE(st.ok()) << st.ToString();
  ASSERT_TRUE(at_crash.ok()) << at_crash.status().ToString();
  EXPECT_EQ(*at_crash, GetParam().target_slots_at_crash);
  auto m = sb_->WaitFor(id, Terminal, kMigrationBoundMs);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ASSERT_EQ((*m)["phase"], "finalized") << m->dump(2);
  std::this_thread::sleep_for(std::chrono::seconds(1));
  StopWriters();
  ExpectDeliveredExactlyOnce(&Totals().cutover_lost, &Totals().cutover_duplicated);
  ExpectCarried(*m);
  ExpectWritersClean(sb_->TargetConninfo());
}

INSTANTIATE_TEST_SUITE_P(Faults, CdcCrashE2E,
                         ::testing::Values(CrashPoint{"BeforeRecreate", "before_cdc_recreate", 0},
                                           CrashPoint{"BetweenSlots", "cdc_recreate_slot", 1}),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace pgshift
