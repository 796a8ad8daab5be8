// MigrationProgress / MigrationResult: typed access to the stored JSON, the
// same keys written back, and unknown keys kept.
#include "model/progress.h"

#include <gtest/gtest.h>

namespace pgshift {
namespace {

using json = nlohmann::json;

// A result as a whole migration leaves it, plus keys this version does not know.
json StoredResult() {
  return json::parse(R"({
    "phase_started_ms": {"provision": 1000, "sync": 2000, "cdc_recreate": 2500},
    "slot": "pgshift_m_1",
    "cutover_attempts": 1,
    "cdc_slots": [{"name": "etl", "plugin": "pgoutput", "database": "app", "two_phase": false,
                   "consumer": {"pid": 4242, "application_name": "etl-worker",
                                "client_addr": "10.0.0.9:40000", "through_router": true,
                                "tls": true},
                   "state": "recreated", "recorded_lsn": "0/3000028",
                   "restart_lsn": "0/3000000", "drained_lsn": "0/3000060", "drain_ms": 3,
                   "recreated_lsn": "0/4000028", "target_confirmed_lsn": "",
                   "owner": "etl-team"}],
    "prepare_ms": 4, "prewarm_ms": 7,
    "fence_ms": 3, "fence_terminated": 2, "fence_exempted": 5,
    "final_lsn": "0/3000060", "fenced_at_ms": 3000,
    "timeline": 2, "promoted_at_ms": 3010,
    "parity_started": true, "parity_done": true,
    "switched_at_ms": 3020, "hold_ms": 35,
    "verify_started_ms": 3100, "verify_probes": 4, "verified": true,
    "finalized_at_ms": 9000,
    "reverse_replication": {"slot": "pgshift_rev"}
  })");
}

TEST(MigrationResultJson, RoundTripKeepsEveryKeyIncludingUnknownOnes) {
  const json stored = StoredResult();
  auto r = MigrationResult::FromJson(stored);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->ToJson(), stored);
}

TEST(MigrationResultJson, KnownKeysAreTyped) {
  auto r = MigrationResult::FromJson(StoredResult());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_TRUE(r->final_lsn.has_value());
  EXPECT_EQ(r->final_lsn->value, 0x3000060u);
  EXPECT_EQ(r->timeline, 2);
  EXPECT_EQ(r->hold_ms, 35);
  EXPECT_EQ(r->verified, true);
  EXPECT_EQ(r->parity_blocked, std::nullopt);
  EXPECT_EQ(r->phase_started_ms.at("sync"), 2000);
  ASSERT_TRUE(r->cdc_slots.has_value());
  ASSERT_EQ(r->cdc_slots->size(), 1u);
  EXPECT_EQ((*r->cdc_slots)[0].plugin, "pgoutput");
  EXPECT_EQ((*r->cdc_slots)[0].state, CdcSlotState::kRecreated);
  EXPECT_TRUE((*r->cdc_slots)[0].consumer.through_router);
  EXPECT_EQ((*r->cdc_slots)[0].unknown, (json{{"owner", "etl-team"}}));
  EXPECT_EQ((*r->cdc_slots)[0].consumer.unknown, (json{{"tls", true}}));
  EXPECT_EQ(r->unknown, (json{{"reverse_replication", {{"slot", "pgshift_rev"}}}}));
}

TEST(MigrationResultJson, UnsetMembersWriteNoKeys) {
  MigrationResult r;
  EXPECT_EQ(r.ToJson(), json::object());
  r.rollback_from = Phase::kVerify;
  r.verify_failure = "the target refuses writes";
  r.final_lsn = Lsn{0x3000060};
  EXPECT_EQ(r.ToJson(), (json{{"rollback_from", "verify"},
                              {"verify_failure", "the target refuses writes"},
                              {"final_lsn", "0/3000060"}}));
  r.final_lsn.reset();  // an aborted cutover forgets its final LSN
  EXPECT_FALSE(r.ToJson().contains("final_lsn"));
  auto back = MigrationResult::FromJson(r.ToJson());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->rollback_from, Phase::kVerify);
}

TEST(MigrationResultJson, NullAndEmptyReadAsNothingRecorded) {
  for (const json& j : {json(nullptr), json::object()}) {
    auto r = MigrationResult::FromJson(j);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->ToJson(), json::object());
  }
}

TEST(MigrationResultJson, WrongTypesAreRefusedNamingTheKey) {
  auto expect_bad = [](json j, const std::string& needle) {
    auto r = MigrationResult::FromJson(j);
    ASSERT_FALSE(r.ok()) << j.dump();
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
    EXPECT_NE(r.status().message().find(needle), std::string::npos) << r.status().message();
  };
  expect_bad({{"timeline", "two"}}, "result: field 'timeline'");
  expect_bad({{"final_lsn", "not an lsn"}}, "field 'final_lsn'");
  expect_bad({{"rollback_from", "sideways"}}, "field 'rollback_from'");
  expect_bad({{"cdc_slots", {{{"name", 1}}}}}, "field 'cdc_slots': item 0: field 'name'");
  expect_bad(json::array(), "JSON object");
}

TEST(MigrationProgressJson, RoundTripKeepsEveryKeyIncludingUnknownOnes) {
  const json stored = json::parse(R"({
    "basebackup_pct": 100, "sample_at_ms": 5000,
    "source_lsn": "0/5000000", "replay_lsn": "0/4FFFF00",
    "lag_bytes": 256, "lag_seconds": 0.5,
    "source_wal_bps": 1024.5, "replay_bps": 2048.0,
    "peak_source_wal_bps": 4096.0, "peak_replay_bps": 8192.0,
    "in_sync_since_ms": 4000, "in_sync_ms": 1000, "sustain_ms": 10000,
    "parity": {"tables_total": 12, "tables_done": 3, "current": "public.orders", "rows": 77},
    "cdc_lag_bytes": 12
  })");
  auto p = MigrationProgress::FromJson(stored);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->ToJson(), stored);
  EXPECT_EQ(p->lag_bytes, 256u);
  EXPECT_EQ(p->replay_lsn->ToString(), "0/4FFFF00");
  ASSERT_TRUE(p->parity.has_value());
  EXPECT_EQ(p->parity->current, "public.orders");
  EXPECT_EQ(p->parity->unknown, (json{{"rows", 77}}));
  EXPECT_EQ(p->unknown, (json{{"cdc_lag_bytes", 12}}));
}

TEST(MigrationProgressJson, ADoneParityCheckHasNoCurrentTable) {
  MigrationProgress p;
  p.parity = ParityProgress{.tables_total = 4, .tables_done = 4};
  EXPECT_EQ(p.ToJson(), (json{{"parity", {{"tables_total", 4}, {"tables_done", 4}}}}));
}

}  // namespace
}  // namespace pgshift
