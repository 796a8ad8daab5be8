// CdcParse/CheckCdc: unit tests of the output parsers and the check.
// CdcConsumer: pg_recvlogical streaming from real PostgreSQL 15 servers; these
// tests establish the delivery contract stated in cdc_consumer.h.
#include "load/cdc_consumer.h"

#include <gtest/gtest.h>

#include <chrono>
#include <iostream>
#include <map>
#include <thread>

#include "common/clock.h"
#include "common/os.h"
#include "load/ledger.h"
#include "testing/pg_harness.h"

namespace pgshift::load {

void PrintTo(const LedgerChange& c, std::ostream* os) {
  *os << "{id " << c.id << ", writer " << c.writer << ", n " << c.n << "}";
}

namespace {

constexpr char kAt[] = " at[timestamp with time zone]:'2026-12-01 21:34:37.170964+00'";

std::string TdInsert(int64_t id, int writer, int64_t n) {
  return "table public.pgshift_ledger: INSERT: id[bigint]:" + std::to_string(id) +
         " writer[integer]:" + std::to_string(writer) + " n[bigint]:" + std::to_string(n) + kAt;
}

std::string JsonInsert(int64_t id, int writer, int64_t n) {
  return R"({"action":"I","xid":725,"schema":"public","table":"pgshift_ledger","columns":[)"
         R"({"name":"id","type":"bigint","value":)" +
         std::to_string(id) + R"(},{"name":"writer","type":"integer","value":)" +
         std::to_string(writer) + R"(},{"name":"n","type":"bigint","value":)" + std::to_string(n) +
         R"(},{"name":"at","type":"timestamp with time zone","value":"2026-12-01 21:34:37+00"}]})";
}

TEST(CdcParse, TestDecodingLedgerInsertsOnly) {
  const std::string text =
      "BEGIN 725\n" + TdInsert(1, 1, 1) + "\n" + TdInsert(2, 3, 42) + "\nCOMMIT 725\n" +
      "BEGIN 726\nmessage: transactional: 1 prefix: p, sz: 5 content:hello\nCOMMIT 726\n"
      "table public.t2: INSERT: a[integer]:3\n"
      "table public.other_ledger: INSERT: id[bigint]:9 writer[integer]:1 n[bigint]:7\n"
      "table app.pgshift_ledger: INSERT: id[bigint]:9 writer[integer]:1 n[bigint]:7\n"
      "table public.pgshift_ledger: UPDATE: id[bigint]:1 writer[integer]:1 n[bigint]:1" +
      kAt +
      "\n"
      "table public.pgshift_ledger: DELETE: id[bigint]:2\n"
      // Quoted values may hold spaces and doubled quotes; column order does not matter.
      "table public.pgshift_ledger: INSERT: id[bigint]:3 note[text]:'it''s n[bigint]:9' "
      "writer[integer]:2 n[bigint]:5\n";
  size_t consumed = 0;
  const auto got = ParseLedgerChanges(CdcPlugin::kTestDecoding, text, &consumed);
  EXPECT_EQ(consumed, text.size());
  const std::vector<LedgerChange> want = {{1, 1, 1}, {2, 3, 42}, {3, 2, 5}};
  EXPECT_EQ(got, want);
}

TEST(CdcParse, Wal2JsonLedgerInsertsOnly) {
  const std::string text =
      R"({"action":"B","xid":725})"
      "\n" +
      JsonInsert(1, 1, 1) + "\n" + JsonInsert(2, 3, 42) +
      "\n"
      R"({"action":"C","xid":725})"
      "\n"
      R"({"action":"M","xid":726,"transactional":true,"prefix":"p","content":"hello"})"
      "\n"
      R"({"action":"I","xid":727,"schema":"public","table":"t2","columns":[{"name":"a","type":"integer","value":3}]})"
      "\n"
      R"({"action":"U","xid":728,"schema":"public","table":"pgshift_ledger","columns":[{"name":"id","type":"bigint","value":1},{"name":"writer","type":"integer","value":1},{"name":"n","type":"bigint","value":1}]})"
      "\n"
      R"({"action":"I","schema":"other","table":"pgshift_ledger","columns":[{"name":"id","type":"bigint","value":9},{"name":"writer","type":"integer","value":1},{"name":"n","type":"bigint","value":7}]})"
      "\n"
      R"({"action":5,"schema":"public","table":"pgshift_ledger"})"
      "\n";
  const auto got = ParseLedgerChanges(CdcPlugin::kWal2Json, text);
  const std::vector<LedgerChange> want = {{1, 1, 1}, {2, 3, 42}};
  EXPECT_EQ(got, want);
}

// pg_recvlogical may be mid-write: the last line counts once its newline is there.
TEST(CdcParse, TornLastLineIsReadOnceComplete) {
  for (CdcPlugin plugin : {CdcPlugin::kTestDecoding, CdcPlugin::kWal2Json}) {
    SCOPED_TRACE(CdcPluginName(plugin));
    const bool json = plugin == CdcPlugin::kWal2Json;
    const std::string first = (json ? JsonInsert(1, 1, 41) : TdInsert(1, 1, 41)) + "\n";
    const std::string last = json ? JsonInsert(2, 1, 42) : TdInsert(2, 1, 42);
    // Cut right after "4" of 42: read as 4 it would be a wrong number.
    const size_t cut = last.rfind("42") + 1;
    size_t consumed = 0;
    auto got = ParseLedgerChanges(plugin, first + last.substr(0, cut), &consumed);
    EXPECT_EQ(got, (std::vector<LedgerChange>{{1, 1, 41}}));
    EXPECT_EQ(consumed, first.size());
    got = ParseLedgerChanges(plugin, last + "\n", &consumed);
    EXPECT_EQ(got, (std::vector<LedgerChange>{{2, 1, 42}}));
    EXPECT_EQ(consumed, last.size() + 1);
  }
}

// Killed between writing a record and its newline, the next run's first
// record lands on the same line.
TEST(CdcParse, RecordsGluedByALostNewlineAreBothRead) {
  const std::string td =
      TdInsert(5, 1, 8) + "BEGIN 9\n" + TdInsert(5, 1, 8) + TdInsert(6, 1, 9) + "\nCOMMIT 9\n";
  EXPECT_EQ(ParseLedgerChanges(CdcPlugin::kTestDecoding, td),
            (std::vector<LedgerChange>{{5, 1, 8}, {5, 1, 8}, {6, 1, 9}}));
  const std::string js = JsonInsert(5, 1, 8) + R"({"action":"B","xid":9})" + "\n" +
                         JsonInsert(5, 1, 8) + JsonInsert(6, 1, 9) + "\n";
  EXPECT_EQ(ParseLedgerChanges(CdcPlugin::kWal2Json, js),
            (std::vector<LedgerChange>{{5, 1, 8}, {5, 1, 8}, {6, 1, 9}}));
}

TEST(CdcParse, LogCountsStreamsAndDisconnects) {
  const auto log = ParseCdcLog(
      "pg_recvlogical: starting log streaming at 0/0 (slot s1)\n"
      "pg_recvlogical: streaming initiated\n"
      "pg_recvlogical: confirming write up to 0/0, flush to 0/0 (slot s1)\n"
      "pg_recvlogical: error: unexpected termination of replication stream: FATAL:  terminating "
      "connection due to administrator command\n"
      "pg_recvlogical: disconnected; waiting 5 seconds to try again\n"
      "pg_recvlogical: error: connection to server at \"127.0.0.1\", port 55432 failed: "
      "Connection refused\n"
      "pg_recvlogical: disconnected; waiting 5 seconds to try again\n"
      "pg_recvlogical: starting log streaming at 0/0 (slot s1)\n"
      "pg_recvlogical: streaming initiated\n");
  EXPECT_EQ(log.streams_started, 2);
  EXPECT_EQ(log.disconnects, 2);
  ASSERT_EQ(log.last_lines.size(), 9u);
  EXPECT_EQ(log.last_lines.back(), "pg_recvlogical: streaming initiated");
}

TEST(CheckCdc, CountsLostDuplicatedReplayedAndUnacknowledged) {
  const std::vector<LedgerChange> received = {
      {1, 1, 1},  {2, 1, 2}, {2, 1, 2},  // n=2 replayed: the same row again
      {3, 1, 3},  {9, 1, 3},             // n=3 twice as two rows
      {10, 1, 5},                        // committed, never acknowledged
      {11, 2, 4},                        // another writer
  };
  const auto c = CheckCdc(received, 1, {1, 2, 3, 4});
  EXPECT_EQ(c.acknowledged, 4);
  EXPECT_EQ(c.delivered, 3);
  EXPECT_EQ(c.lost, 1);
  EXPECT_EQ(c.duplicated, 2);
  EXPECT_EQ(c.replayed, 1);
  EXPECT_EQ(c.unacknowledged_delivered, 1);
}

// ---- Real servers ----

constexpr int kWriter = 1;
constexpr int64_t kDeliverTimeoutMs = 30000;

void SleepMs(int64_t ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

Result<std::unique_ptr<testing::TestCluster>> StartLogicalCluster() {
  return testing::TestCluster::Create(
      {.name = "cdc",
       .settings = {
           {"wal_level", "logical"}, {"max_replication_slots", "10"}, {"max_wal_senders", "10"}}});
}

CdcConsumerOptions ConsumerOn(testing::TestCluster& pg, const std::string& slot, CdcPlugin plugin) {
  return {.conninfo = pg.Conninfo(),
          .slot = slot,
          .plugin = plugin,
          .output_file = pg.dir() + "/" + slot + ".out"};
}

Lsn CurrentWalLsn(testing::TestCluster& pg) {
  auto out = pg.Psql("select pg_current_wal_lsn()");
  EXPECT_TRUE(out.ok()) << out.status().ToString();
  auto lsn = Lsn::Parse(out.ok() ? out->substr(0, out->find('\n')) : "");
  EXPECT_TRUE(lsn.ok()) << lsn.status().ToString();
  return lsn.ok() ? *lsn : Lsn{};
}

std::map<int64_t, int> CountById(const std::vector<LedgerChange>& changes) {
  std::map<int64_t, int> out;
  for (const auto& c : changes) ++out[c.id];
  return out;
}

TEST(CdcConsumer, BothPluginsReceiveEveryAcknowledgedRowExactlyOnce) {
  auto pg = StartLogicalCluster();
  ASSERT_TRUE(pg.ok()) << pg.status().ToString();
  const std::string ci = (*pg)->Conninfo();
  ASSERT_TRUE(CreateLedgerTable(ci).ok());
  CdcConsumer td(ConsumerOn(**pg, "cdc_td", CdcPlugin::kTestDecoding));
  CdcConsumer wj(ConsumerOn(**pg, "cdc_wj", CdcPlugin::kWal2Json));
  for (CdcConsumer* c : {&td, &wj}) {
    Status st = c->CreateSlot();
    ASSERT_TRUE(st.ok()) << st.ToString();
    st = c->Start();
    ASSERT_TRUE(st.ok()) << st.ToString();
  }
  LedgerWriter w(ci, kWriter);
  w.Start();
  SleepMs(3000);
  w.Stop();
  EXPECT_EQ(w.Stats().uncertain, 0);
  const auto acked = w.Acknowledged();
  ASSERT_GT(acked.size(), 100u);
  for (CdcConsumer* c : {&td, &wj}) {
    SCOPED_TRACE(CdcPluginName(c->options().plugin));
    Status st = c->WaitDelivered(kWriter, acked, kDeliverTimeoutMs);
    ASSERT_TRUE(st.ok()) << st.ToString();
    auto got = c->Changes();
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    const CdcCheck check = CheckCdc(*got, kWriter, acked);
    EXPECT_EQ(check.lost, 0);
    EXPECT_EQ(check.duplicated, 0);
    EXPECT_EQ(check.delivered, static_cast<int64_t>(acked.size()));
    EXPECT_EQ(check.unacknowledged_delivered, 0);
    EXPECT_EQ(got->size(), acked.size());
    const CdcLog log = c->Log();
    EXPECT_EQ(log.streams_started, 1);
    EXPECT_EQ(log.disconnects, 0);
    EXPECT_TRUE(c->Stop().ok());
  }
}

// After SIGKILL, a restart on the slot receives again exactly the rows the
// killed process had written past the slot's confirmed position, and nothing
// it had confirmed.
TEST(CdcConsumer, AfterSigkillTheUnconfirmedRowsComeAgain) {
  auto pg = StartLogicalCluster();
  ASSERT_TRUE(pg.ok()) << pg.status().ToString();
  const std::string ci = (*pg)->Conninfo();
  ASSERT_TRUE(CreateLedgerTable(ci).ok());
  CdcConsumerOptions opts = ConsumerOn(**pg, "cdc_kill", CdcPlugin::kTestDecoding);
  opts.status_interval_s = 1;  // confirm some rows before the kill
  opts.fsync_interval_s = 1;
  CdcConsumer c(opts);
  ASSERT_TRUE(c.CreateSlot().ok());
  ASSERT_TRUE(c.Start().ok());
  LedgerWriter w(ci, kWriter);
  w.Start();
  SleepMs(2500);
  c.Kill();
  // The walsender releases the slot once it notices its client is gone.
  const int64_t deadline = MonotonicMs() + 10000;
  while (true) {
    auto active =
        (*pg)->Psql("select active from pg_replication_slots where slot_name = 'cdc_kill'");
    if (active.ok() && *active == "f\n") break;
    ASSERT_LT(MonotonicMs(), deadline) << "the slot stayed active after its consumer died";
    SleepMs(50);
  }
  // The killed process's file is final: its last record can lack only its newline.
  auto text = ReadFile(opts.output_file);
  ASSERT_TRUE(text.ok());
  const auto before_kill = CountById(ParseLedgerChanges(CdcPlugin::kTestDecoding, *text + "\n"));
  ASSERT_FALSE(before_kill.empty());
  // What the slot will send: everything past its confirmed position.
  auto peek = (*pg)->Psql("select data from pg_logical_slot_peek_changes('cdc_kill', NULL, NULL)");
  ASSERT_TRUE(peek.ok()) << peek.status().ToString();
  const auto pending = CountById(ParseLedgerChanges(CdcPlugin::kTestDecoding, *peek + "\n"));
  std::set<int64_t> unconfirmed;
  for (const auto& [id, count] : before_kill) {
    if (pending.count(id)) unconfirmed.insert(id);
  }

  ASSERT_TRUE(c.Start().ok());
  SleepMs(500);
  w.Stop();
  const auto acked = w.Acknowledged();
  Status st = c.WaitDelivered(kWriter, acked, kDeliverTimeoutMs);
  ASSERT_TRUE(st.ok()) << st.ToString();
  auto all = c.Changes();
  ASSERT_TRUE(all.ok());
  const CdcCheck check = CheckCdc(*all, kWriter, acked);
  EXPECT_EQ(check.lost, 0);
  EXPECT_EQ(check.duplicated, check.replayed) << "only re-deliveries of the same rows";
  std::set<int64_t> twice;
  for (const auto& [id, count] : CountById(*all)) {
    EXPECT_LE(count, 2) << "row id " << id;
    if (count == 2) twice.insert(id);
  }
  EXPECT_EQ(twice, unconfirmed);
  EXPECT_LT(unconfirmed.size(), before_kill.size()) << "the slot had confirmed some rows";
  std::cout << "[ info ] rows received before the kill: " << before_kill.size()
            << ", received again after the restart: " << twice.size() << "\n";
  EXPECT_EQ(c.Log().streams_started, 2);
}

// SIGINT ends pg_recvlogical without a last confirmation: within one status
// interval nothing was confirmed and every row comes again. Once the slot
// confirmed everything (WaitConfirmed), a restart is exactly-once.
TEST(CdcConsumer, SigintConfirmsNothingMoreButARestartAfterConfirmationIsExactlyOnce) {
  auto pg = StartLogicalCluster();
  ASSERT_TRUE(pg.ok()) << pg.status().ToString();
  const std::string ci = (*pg)->Conninfo();
  ASSERT_TRUE(CreateLedgerTable(ci).ok());
  CdcConsumerOptions opts = ConsumerOn(**pg, "cdc_stop", CdcPlugin::kWal2Json);
  CdcConsumer a(opts);  // pg_recvlogical's default intervals
  ASSERT_TRUE(a.CreateSlot().ok());
  const auto created = a.ConfirmedFlush();
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  const int64_t start = MonotonicMs();
  ASSERT_TRUE(a.Start().ok());
  LedgerWriter w1(ci, 1);
  w1.Start();
  SleepMs(1500);
  w1.Stop();
  const auto acked1 = w1.Acknowledged();
  ASSERT_TRUE(a.WaitDelivered(1, acked1, 5000).ok());
  ASSERT_TRUE(a.Stop().ok());
  ASSERT_LT(MonotonicMs() - start, (kDefaultCdcStatusIntervalS - 1) * 1000)
      << "the test needs the first stream to end within one status interval";
  const auto after_stop = a.ConfirmedFlush();
  ASSERT_TRUE(after_stop.ok());
  EXPECT_EQ(after_stop->ToString(), created->ToString()) << "pg_recvlogical confirmed on SIGINT";

  opts.status_interval_s = 1;
  opts.fsync_interval_s = 1;
  CdcConsumer b(opts);  // the same slot and file
  ASSERT_TRUE(b.Start().ok());
  Status st = b.WaitConfirmed(CurrentWalLsn(**pg), kDeliverTimeoutMs);
  ASSERT_TRUE(st.ok()) << st.ToString();
  auto replay = b.Changes();
  ASSERT_TRUE(replay.ok());
  const CdcCheck again = CheckCdc(*replay, 1, acked1);
  EXPECT_EQ(again.lost, 0);
  EXPECT_EQ(again.duplicated, static_cast<int64_t>(acked1.size())) << "every row came again";
  EXPECT_EQ(again.replayed, again.duplicated);
  EXPECT_EQ(replay->size(), 2 * acked1.size());

  ASSERT_TRUE(b.Stop().ok());
  ASSERT_TRUE(b.Start().ok());
  LedgerWriter w2(ci, 2);
  w2.Start();
  SleepMs(1000);
  w2.Stop();
  const auto acked2 = w2.Acknowledged();
  st = b.WaitDelivered(2, acked2, kDeliverTimeoutMs);
  ASSERT_TRUE(st.ok()) << st.ToString();
  auto all = b.Changes();
  ASSERT_TRUE(all.ok());
  const CdcCheck once = CheckCdc(*all, 2, acked2);
  EXPECT_EQ(once.lost, 0);
  EXPECT_EQ(once.duplicated, 0);
  EXPECT_EQ(once.delivered, static_cast<int64_t>(acked2.size()));
  EXPECT_EQ(all->size(), 2 * acked1.size() + acked2.size()) << "writer 1's rows came a third time";
}

// The server ends the stream (as a migration does): pg_recvlogical reconnects
// by itself after 5 s, loses nothing, and only repeats unconfirmed rows.
TEST(CdcConsumer, ReconnectsByItselfWhenTheServerEndsTheStream) {
  auto pg = StartLogicalCluster();
  ASSERT_TRUE(pg.ok()) << pg.status().ToString();
  const std::string ci = (*pg)->Conninfo();
  ASSERT_TRUE(CreateLedgerTable(ci).ok());
  CdcConsumerOptions opts = ConsumerOn(**pg, "cdc_reconnect", CdcPlugin::kWal2Json);
  opts.status_interval_s = 1;
  opts.fsync_interval_s = 1;
  CdcConsumer c(opts);
  ASSERT_TRUE(c.CreateSlot().ok());
  ASSERT_TRUE(c.Start().ok());
  LedgerWriter w(ci, kWriter);
  w.Start();
  SleepMs(1500);
  auto ended = (*pg)->Psql(
      "select pg_terminate_backend(active_pid) from pg_replication_slots "
      "where slot_name = 'cdc_reconnect'");
  ASSERT_TRUE(ended.ok() && *ended == "t\n") << ended.status().ToString();
  const int64_t deadline = MonotonicMs() + 20000;
  while (c.Log().streams_started < 2) {
    ASSERT_LT(MonotonicMs(), deadline) << "no reconnect";
    SleepMs(100);
  }
  SleepMs(500);
  w.Stop();
  const auto acked = w.Acknowledged();
  Status st = c.WaitDelivered(kWriter, acked, kDeliverTimeoutMs);
  ASSERT_TRUE(st.ok()) << st.ToString();
  auto all = c.Changes();
  ASSERT_TRUE(all.ok());
  const CdcCheck check = CheckCdc(*all, kWriter, acked);
  EXPECT_EQ(check.lost, 0);
  EXPECT_EQ(check.duplicated, check.replayed) << "only re-deliveries of the same rows";
  EXPECT_EQ(check.unacknowledged_delivered, 0);
  std::cout << "[ info ] rows received again after the reconnect: " << check.replayed << "\n";
  const CdcLog log = c.Log();
  EXPECT_EQ(log.disconnects, 1);
  EXPECT_EQ(log.streams_started, 2);
  EXPECT_TRUE(c.Running());
}

}  // namespace
}  // namespace pgshift::load
