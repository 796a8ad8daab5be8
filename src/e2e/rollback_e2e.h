// RollbackE2E: the fixture of the rollback end-to-end binary (its tests are
// in rollback_e2e_test.cc, asked for, and rollback_auto_e2e_test.cc, started
// by the health window). Load through pgshift-proxy (ledger writers, pgbench
// and a pg_recvlogical consumer), the proof on the source after a rollback,
// and the totals the binary prints last:
//   E2E rollback {"rows_written_on_target":N,"lost":N,"duplicated":N,
//                 "failed_txns":N,"cdc_lost":N,"cdc_duplicated":N,
//                 "auto_rollback_triggered":B,"rollback_hold_ms":X}
// Not thread-safe: used from the test's thread.
#pragma once

#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>

#include <chrono>
#include <iostream>
#include <memory>
#include <string>

#include "e2e/e2e_fixture.h"
#include "load/cdc_consumer.h"
#include "load/ledger.h"
#include "load/pgbench_load.h"

namespace pgshift::e2e {

inline constexpr char kCdcSlotName[] = "ledger_cdc";
inline constexpr int64_t kDeliverTimeoutMs = 60000;
inline constexpr int64_t kApplyTimeoutMs = 30000;
inline constexpr int64_t kRollbackBoundMs = 60000;
inline constexpr auto kWritesOnSource = std::chrono::seconds(1);
inline constexpr char kLedgerCount[] = "select count(*) as n from pgshift_ledger";

// What the binary's tests measured, summed over those that ran.
struct RollbackTotals {
  int64_t rows_written_on_target = 0;
  int64_t lost = 0;
  int64_t duplicated = 0;
  // Failed through the router, but for the writes an automatic scenario
  // made the target reject on purpose (its anomaly).
  int64_t failed_txns = 0;
  int64_t cdc_lost = 0;
  int64_t cdc_duplicated = 0;
  // The automatic scenarios that ran, and those that rolled back by
  // themselves (the health window's anomaly, no request).
  int auto_scenarios = 0;
  int auto_rolled_back = 0;
  int64_t rollback_hold_ms = 0;  // the asked-for lossless rollback's, without a crash
};

inline RollbackTotals& Totals() {
  static RollbackTotals totals;
  return totals;
}

inline nlohmann::ordered_json TotalsLine() {
  const RollbackTotals& t = Totals();
  nlohmann::ordered_json line;
  line["rows_written_on_target"] = t.rows_written_on_target;
  line["lost"] = t.lost;
  line["duplicated"] = t.duplicated;
  line["failed_txns"] = t.failed_txns;
  line["cdc_lost"] = t.cdc_lost;
  line["cdc_duplicated"] = t.cdc_duplicated;
  line["auto_rollback_triggered"] = t.auto_scenarios > 0 && t.auto_rolled_back == t.auto_scenarios;
  line["rollback_hold_ms"] = t.rollback_hold_ms;
  return line;
}

// The end of a rollback: done, or stopped for an operator.
inline bool RolledBackOrFailed(const json& m) {
  return m["phase"] == "rolled_back" || m["phase"] == "finalized" || m["state"] == "failed";
}

class RollbackE2E : public SandboxTest {
 protected:
  std::string Admin(const std::string& db = "app") const {
    return sb_->SourceConninfo(db, "postgres");
  }

  // Load through the router: the ledger writers, pgbench and the consumer.
  Status StartLoad(bool cdc) { return StartRoutedLoad(cdc ? kCdcSlotName : ""); }

  json Options() const {
    return {{"auto_cutover", true},
            {"auto_finalize", false},
            {"sustain_seconds", 1},
            {"verify_seconds", 1},
            {"poll_ms", 100}};
  }

  // Waits until the migration is verified and waits for finalize (or rolled
  // back, or stuck).
  Result<json> WaitVerified(const std::string& id) {
    return sb_->WaitFor(
        id,
        [](const json& m) {
          return (m["phase"] == "verify" && m["state"] == "waiting") || Terminal(m);
        },
        kMigrationBoundMs);
  }

  Result<json> Post(const std::string& id, const std::string& action, const json& body) {
    return sb_->Api("POST", "/v1/migrations/" + id + "/" + action, body.dump());
  }

  // Adds `w`'s proof to Totals(): every row it saw acknowledged is on the
  // source exactly once, and in the consumer's output exactly once.
  void ProveOnSource(load::LedgerWriter& w) {
    const auto acked = w.Acknowledged();
    auto check = load::CheckLedger(sb_->SourceConninfo(), w.writer_id(), acked);
    ASSERT_TRUE(check.ok()) << check.status().ToString();
    EXPECT_EQ(check->lost, 0) << "writer " << w.writer_id();
    EXPECT_EQ(check->duplicated, 0) << "writer " << w.writer_id();
    Totals().lost += check->lost;
    Totals().duplicated += check->duplicated;
    if (!consumer_) return;
    Status delivered = consumer_->WaitDelivered(w.writer_id(), acked, kDeliverTimeoutMs);
    EXPECT_TRUE(delivered.ok()) << delivered.ToString();
    auto got = consumer_->Changes();
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    const load::CdcCheck c = load::CheckCdc(*got, w.writer_id(), acked);
    EXPECT_EQ(c.lost, 0) << "writer " << w.writer_id();
    EXPECT_EQ(c.duplicated, 0) << c.replayed << " of them replayed";
    Totals().cdc_lost += c.lost;
    Totals().cdc_duplicated += c.duplicated;
  }

  // Stops the load and adds what it measured to Totals(): every
  // acknowledged ledger row on the source exactly once, no failure, and the
  // consumer's output holding every row exactly once.
  void StopAndProveOnSource() {
    StopWriters();
    if (pgbench_) pgbench_->Stop();
    ExpectWritersClean(sb_->SourceConninfo());
    for (auto& w : writers_) {
      const auto st = w->Stats();
      Totals().failed_txns += st.failed + st.uncertain;
      ProveOnSource(*w);
    }
    if (pgbench_) {
      const auto pb = pgbench_->Stats();
      EXPECT_EQ(pb.failed, 0) << (pb.errors.empty() ? "" : pb.errors.front());
      EXPECT_GT(pb.transactions, 0);
      Totals().failed_txns += pb.failed;
    }
    // Sequences: ahead of every value the target used, so new rows on the
    // source never collide.
    auto ahead = Count(Admin(),
                       "select ((select last_value from pgshift_ledger_id_seq) >= "
                       "(select max(id) from pgshift_ledger))::int as n");
    ASSERT_TRUE(ahead.ok()) << ahead.status().ToString();
    EXPECT_EQ(*ahead, 1) << "the ledger's sequence on the source is behind its rows";
  }

  // Rows the target took between the switch and the rollback's hold.
  int64_t RowsWrittenOnTarget(const json& result) {
    auto n = Count(Admin(),
                   "select count(*) as n from pgshift_ledger where at >= "
                   "to_timestamp(" +
                       std::to_string(result.value("switched_at_ms", int64_t{0})) +
                       " / 1000.0) and at < to_timestamp(" +
                       std::to_string(result.value("rollback_hold_started_ms", int64_t{0})) +
                       " / 1000.0)");
    EXPECT_TRUE(n.ok()) << n.status().ToString();
    return n.ok() ? *n : 0;
  }
};

}  // namespace pgshift::e2e
