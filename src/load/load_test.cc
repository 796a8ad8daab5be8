#include <gtest/gtest.h>

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
