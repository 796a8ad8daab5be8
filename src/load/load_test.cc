#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "load/ledger.h"
#include "load/pgbench_load.h"
#include "testing/pg_harness.h"

namespace pgshift::load {
namespace {

TEST(PgbenchOutput, CountsTransactionsFailuresAndAbortedClients) {
  PgbenchStats s;
  ParsePgbenchOutput(
      "number of transactions actually processed: 633\nnumber of failed transactions: 2 "
      "(0.3%)\n",
      s);
  ParsePgbenchOutput(
      "pgbench: error: client 3 aborted in command 4 (SQL) of script 0; server closed the "
      "connection\nnumber of transactions actually processed: 10\n",
      s);
  EXPECT_EQ(s.transactions, 643);
  EXPECT_EQ(s.failed, 3);
  EXPECT_EQ(s.aborted_clients, 1);
  PgbenchStats none;
  ParsePgbenchOutput("pgbench: error: connection refused", none);
  EXPECT_EQ(none.failed, 1) << "a run without a summary is a failure";
}

TEST(PgbenchLogs, ReadsEveryTransactionOfEveryRun) {
  const std::string dir = ::testing::TempDir() + "/pgbench-logs-" + std::to_string(::getpid());
  std::filesystem::create_directories(dir + "/run0");
  std::filesystem::create_directories(dir + "/run1");
  // client_id transaction_no time script_no time_epoch time_us [schedule_lag]
  std::ofstream(dir + "/run0/pgbench_log.1") << "0 0 1500 0 1700000000 250000 500\n"
                                                 "1 0 2000 0 1700000001 0 0\n";
  std::ofstream(dir + "/run1/pgbench_log.2") << "0 0 99000 0 1700000002 1000 98000\n";
  auto txns = ReadTxnLogs(dir);
  ASSERT_EQ(txns.size(), 3u);
  std::sort(txns.begin(), txns.end(),
            [](const TxnRecord& a, const TxnRecord& b) { return a.end_epoch_ms < b.end_epoch_ms; });
  EXPECT_DOUBLE_EQ(txns[0].end_epoch_ms, 1700000000250.0);
  EXPECT_DOUBLE_EQ(txns[0].latency_ms, 1.5);
  EXPECT_DOUBLE_EQ(txns[0].lag_ms, 0.5);
  EXPECT_DOUBLE_EQ(txns[2].latency_ms, 99.0);
  EXPECT_DOUBLE_EQ(txns[2].lag_ms, 98.0);
  std::filesystem::remove_all(dir);
}

TEST(Ledger, CountsLostAndDuplicatedRowsOnARealServer) {
  auto pg = testing::TestCluster::Create();
  ASSERT_TRUE(pg.ok()) << pg.status().ToString();
  const std::string ci = (*pg)->Conninfo();
  ASSERT_TRUE(CreateLedgerTable(ci).ok());
  LedgerWriter w(ci, 7, 0);
  w.Start();
  while (w.Stats().committed < 200) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  w.Stop();
  auto acked = w.Acknowledged();
  auto clean = CheckLedger(ci, 7, acked);
  ASSERT_TRUE(clean.ok()) << clean.status().ToString();
  EXPECT_EQ(clean->lost, 0);
  EXPECT_EQ(clean->duplicated, 0);
  EXPECT_EQ(clean->found, static_cast<int64_t>(acked.size()));
  // Tamper: one row removed, one duplicated — the check must see both.
  ASSERT_TRUE((*pg)->Psql("delete from pgshift_ledger where writer = 7 and n = 5").ok());
  ASSERT_TRUE((*pg)->Psql("insert into pgshift_ledger (writer, n) values (7, 9)").ok());
  auto bad = CheckLedger(ci, 7, acked);
  ASSERT_TRUE(bad.ok());
  EXPECT_EQ(bad->lost, 1);
  EXPECT_EQ(bad->duplicated, 1);
}

}  // namespace
}  // namespace pgshift::load
