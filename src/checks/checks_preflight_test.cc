// Integration tests: preflight and validate checks on real PostgreSQL clusters,
// each proven by creating the condition it detects.
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <set>
#include <thread>

#include "checks/checks.h"
#include "checks/extensions.h"
#include "common/lsn.h"
#include "common/os.h"
#include "common/process.h"
#include "pg/conn.h"
#include "testing/pg_harness.h"
#include "testing/test_replica.h"

namespace pgshift::checks {
namespace {

using pgshift::testing::TestCluster;
using testing::InstallationCopy;
using testing::TestReplica;

std::unique_ptr<TestCluster> MakeCluster(const std::string& name,
                                         std::map<std::string, std::string> settings = {}) {
  auto tc = TestCluster::Create({.name = name, .settings = std::move(settings)});
  EXPECT_TRUE(tc.ok()) << tc.status().ToString();
  return tc.ok() ? std::move(*tc) : nullptr;
}

std::unique_ptr<PgConn> Connect(const std::string& conninfo) {
  auto c = PgConn::Connect(conninfo);
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return c.ok() ? std::move(*c) : nullptr;
}

const Finding* Find(const std::vector<Finding>& fs, const std::string& id,
                    const std::string& subject) {
  for (const Finding& f : fs) {
    if (f.id == id && f.subject == subject) return &f;
  }
  return nullptr;
}

std::string Dump(const std::vector<Finding>& fs) { return RenderFindingsTable(fs); }

TEST(Preflight, CleanClusterHasNoBlockingFindingsAndListsEveryCheck) {
  auto src = MakeCluster("clean");
  ASSERT_TRUE(src);
  auto conn = Connect(src->Conninfo());
  ASSERT_TRUE(conn);
  auto findings = RunPreflight(*conn, TargetPlan{});
  ASSERT_TRUE(findings.ok()) << findings.status().ToString();
  EXPECT_FALSE(AnyBlocking(*findings)) << Dump(*findings);
  std::set<std::string> ids;
  for (const Finding& f : *findings) ids.insert(f.id);
  for (const char* id : {"slot_health", "params", "extensions", "unlogged_tables", "prepared_xacts",
                         "long_txns", "no_pk_tables", "large_objects", "tablespaces", "version"}) {
    EXPECT_TRUE(ids.count(id)) << "missing check " << id << "\n" << Dump(*findings);
  }
  const Finding* mc = Find(*findings, "params", "max_connections");
  ASSERT_NE(mc, nullptr);
  EXPECT_EQ(mc->severity, Severity::kOk);

  auto json = RunCheckCommand(src->Conninfo(), "");
  ASSERT_TRUE(json.ok()) << json.status().ToString();
  ASSERT_TRUE((*json)["findings"].is_array());
  ASSERT_FALSE((*json)["findings"].empty());
  for (const auto& f : (*json)["findings"]) {
    for (const char* key :
         {"id", "severity", "subject", "value", "threshold", "message", "remedy"}) {
      EXPECT_TRUE(f.contains(key)) << f.dump();
    }
    EXPECT_NE(f["severity"], "blocking") << f.dump();
  }
  EXPECT_NE(RenderFindingsTable(*findings).find(" 0 blocking"), std::string::npos);
}

TEST(Preflight, InactiveLogicalSlotRetainingWalIsNamedWithItsByteCount) {
  auto src = MakeCluster("slot");
  ASSERT_TRUE(src);
  ASSERT_TRUE(src->Psql("select pg_create_logical_replication_slot('stale_cdc', "
                        "'test_decoding')")
                  .ok());
  auto conn = Connect(src->Conninfo());
  ASSERT_TRUE(conn);
  auto before = conn->Query("select restart_lsn::text as l from pg_replication_slots");
  ASSERT_TRUE(before.ok()) << before.status().ToString();
  auto restart = Lsn::Parse(before->Str(0, "l"));
  ASSERT_TRUE(restart.ok());
  ASSERT_TRUE(src->Psql("create table filler as select g, repeat('x', 100) as pad "
                        "from generate_series(1, 60000) g")
                  .ok());
  auto after = conn->Query("select pg_current_wal_lsn()::text as l");
  ASSERT_TRUE(after.ok());
  const uint64_t generated = LsnDiff(*Lsn::Parse(after->Str(0, "l")), *restart);
  ASSERT_GT(generated, 2u << 20) << "the test must generate WAL beyond the threshold";

  CheckOptions opts;
  opts.slots.inactive_retained_bytes = 1 << 20;
  auto findings = RunPreflight(*conn, TargetPlan{}, opts);
  ASSERT_TRUE(findings.ok()) << findings.status().ToString();
  const Finding* f = Find(*findings, "slot_health", "stale_cdc");
  ASSERT_NE(f, nullptr) << Dump(*findings);
  EXPECT_EQ(f->severity, Severity::kWarning) << f->ToJson().dump();
  EXPECT_FALSE(f->value["active"].get<bool>());
  EXPECT_EQ(f->value["type"], "logical");
  const uint64_t retained = f->value["retained_bytes"].get<uint64_t>();
  EXPECT_GE(retained, generated);
  EXPECT_LT(retained, generated + (1u << 20));  // the slot, not something else, explains it
  EXPECT_NE(f->message.find("stale_cdc"), std::string::npos);
  EXPECT_NE(f->message.find(std::to_string(retained)), std::string::npos) << f->message;
  EXPECT_NE(f->message.find("likely cause"), std::string::npos);
  EXPECT_NE(f->remedy.find("SELECT pg_drop_replication_slot('stale_cdc');"), std::string::npos);
  const Finding* summary = Find(*findings, "slot_health", "");
  ASSERT_NE(summary, nullptr);
  EXPECT_EQ(summary->value["oldest_slot"], "stale_cdc");
  EXPECT_GE(summary->value["oldest_slot_lag_bytes"].get<uint64_t>(), generated);
  // The check reports; it never drops the slot.
  EXPECT_EQ(*src->Psql("select count(*) from pg_replication_slots where slot_name='stale_cdc'"),
            "1\n");
}

TEST(Preflight, TargetInstallationMissingAnExtensionBlocks) {
  auto src = MakeCluster("ext");
  ASSERT_TRUE(src);
  ASSERT_TRUE(src->Psql("create extension hstore").ok());
  auto copy = InstallationCopy::Create({"hstore"});
  ASSERT_TRUE(copy.ok()) << copy.status().ToString();
  // The copy is a working installation that finds its own share dir.
  auto sharedir =
      RunChecked(DefaultRunner(), {.argv = {(*copy)->bin_dir() + "/pg_config", "--sharedir"}});
  ASSERT_TRUE(sharedir.ok());
  EXPECT_EQ(sharedir->rfind((*copy)->bin_dir().substr(0, (*copy)->bin_dir().find("/lib/")), 0), 0u)
      << *sharedir;

  auto conn = Connect(src->Conninfo());
  ASSERT_TRUE(conn);
  auto with_default = RunPreflight(*conn, TargetPlan{});
  ASSERT_TRUE(with_default.ok()) << with_default.status().ToString();
  EXPECT_EQ(Find(*with_default, "extensions", "hstore"), nullptr) << Dump(*with_default);
  EXPECT_FALSE(AnyBlocking(*with_default)) << Dump(*with_default);

  auto with_copy = RunPreflight(*conn, TargetPlan{.bin_dir = (*copy)->bin_dir()});
  ASSERT_TRUE(with_copy.ok()) << with_copy.status().ToString();
  const Finding* f = Find(*with_copy, "extensions", "hstore");
  ASSERT_NE(f, nullptr) << Dump(*with_copy);
  EXPECT_EQ(f->severity, Severity::kBlocking);
  EXPECT_TRUE(AnyBlocking(*with_copy));

  auto json = RunCheckCommand(src->Conninfo(), (*copy)->bin_dir());
  ASSERT_TRUE(json.ok()) << json.status().ToString();
  bool found = false;
  for (const auto& j : (*json)["findings"]) {
    found |= j["id"] == "extensions" && j["subject"] == "hstore" && j["severity"] == "blocking";
  }
  EXPECT_TRUE(found) << json->dump(2);

  // The running target's own catalogue agrees: a replica started from the
  // copy does not offer hstore.
  auto replica = TestReplica::Create(*src, {.bin_dir = (*copy)->bin_dir()});
  ASSERT_TRUE(replica.ok()) << replica.status().ToString();
  auto tgt = Connect((*replica)->Conninfo());
  ASSERT_TRUE(tgt);
  auto validate = RunValidate(*conn, *tgt, TargetPlan{.bin_dir = (*copy)->bin_dir()});
  ASSERT_TRUE(validate.ok()) << validate.status().ToString();
  const Finding* v = Find(*validate, "extensions", "hstore");
  ASSERT_NE(v, nullptr) << Dump(*validate);
  EXPECT_EQ(v->severity, Severity::kBlocking);
}

TEST(Preflight, LowerMaxConnectionsOnTargetBlocksBeforeAnythingIsCreated) {
  auto src = MakeCluster("maxconn");
  ASSERT_TRUE(src);
  ASSERT_EQ(*src->Psql("show max_connections"), "100\n");
  auto conn = Connect(src->Conninfo());
  ASSERT_TRUE(conn);
  auto findings = RunPreflight(*conn, TargetPlan{.settings = {{"max_connections", "20"}}});
  ASSERT_TRUE(findings.ok()) << findings.status().ToString();
  const Finding* f = Find(*findings, "params", "max_connections");
  ASSERT_NE(f, nullptr) << Dump(*findings);
  EXPECT_EQ(f->severity, Severity::kBlocking);
  EXPECT_EQ(f->value["source"], 100);
  EXPECT_EQ(f->value["target"], 20);
  // Preflight created nothing on the source.
  EXPECT_EQ(*src->Psql("select count(*) from pg_replication_slots"), "0\n");

  // And the check is right: a standby with these settings refuses to start.
  auto replica =
      TestReplica::Create(*src, {.settings = {{"max_connections", "20"}}, .start = false});
  ASSERT_TRUE(replica.ok()) << replica.status().ToString();
  Status started = (*replica)->cluster().Start(30);
  EXPECT_FALSE(started.ok());
  auto log = ReadFile((*replica)->cluster().LogFile());
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  EXPECT_NE(log->find("max_connections"), std::string::npos) << *log;
}

TEST(Preflight, UnloggedTableWithRowsBlocksUntilOverridden) {
  auto src = MakeCluster("unlogged");
  ASSERT_TRUE(src);
  ASSERT_TRUE(src->Psql("create unlogged table scratch (id int primary key, v text); "
                        "insert into scratch select g, 'v' from generate_series(1, 100) g")
                  .ok());
  auto conn = Connect(src->Conninfo());
  ASSERT_TRUE(conn);
  auto findings = RunPreflight(*conn, TargetPlan{});
  ASSERT_TRUE(findings.ok()) << findings.status().ToString();
  const Finding* f = Find(*findings, "unlogged_tables", "postgres.public.scratch");
  ASSERT_NE(f, nullptr) << Dump(*findings);
  EXPECT_EQ(f->severity, Severity::kBlocking);
  EXPECT_TRUE(f->value["has_rows"].get<bool>());
  EXPECT_TRUE(AnyBlocking(*findings));
  ASSERT_TRUE(ApplyOverride(*findings, "unlogged_tables", "postgres.public.scratch",
                            "scratch is a cache, rebuilt on start")
                  .ok());
  EXPECT_FALSE(AnyBlocking(*findings)) << Dump(*findings);
}

TEST(Preflight, HazardsArePreparedLongAndKeylessTransactionsAndTables) {
  auto src = MakeCluster("hazards", {{"max_prepared_transactions", "5"}});
  ASSERT_TRUE(src);
  ASSERT_TRUE(src->Psql("create table nokey (v text); create table keyed (id int primary key); "
                        "select lo_from_bytea(0, 'blob')")
                  .ok());
  ASSERT_TRUE(src->Psql("begin; insert into keyed values (1); prepare transaction 'gx1'").ok());
  auto holder = Connect(src->Conninfo());
  ASSERT_TRUE(holder);
  ASSERT_TRUE(holder->Exec("begin").ok());
  ASSERT_TRUE(holder->Exec("select txid_current()").ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));

  auto conn = Connect(src->Conninfo());
  ASSERT_TRUE(conn);
  CheckOptions opts;
  opts.hazards.long_txn_seconds = 1;
  auto findings = RunPreflight(*conn, TargetPlan{}, opts);
  ASSERT_TRUE(findings.ok()) << findings.status().ToString();
  const Finding* nokey = Find(*findings, "no_pk_tables", "postgres.public.nokey");
  ASSERT_NE(nokey, nullptr) << Dump(*findings);
  EXPECT_EQ(nokey->severity, Severity::kWarning);
  EXPECT_EQ(Find(*findings, "no_pk_tables", "postgres.public.keyed"), nullptr);
  const Finding* lobs = Find(*findings, "large_objects", "postgres");
  ASSERT_NE(lobs, nullptr) << Dump(*findings);
  EXPECT_EQ(lobs->severity, Severity::kWarning);
  EXPECT_EQ(lobs->value["large_objects"], 1);
  const Finding* px = Find(*findings, "prepared_xacts", "gx1");
  ASSERT_NE(px, nullptr) << Dump(*findings);
  EXPECT_EQ(px->severity, Severity::kWarning);
  const Finding* lt = Find(*findings, "long_txns", "pid " + std::to_string(holder->BackendPid()));
  ASSERT_NE(lt, nullptr) << Dump(*findings);
  EXPECT_GE(lt->value["age_seconds"].get<int64_t>(), 1);
  ASSERT_TRUE(src->Psql("rollback prepared 'gx1'").ok());
}

TEST(Preflight, NamesEveryTablespaceAndWhatTheTargetMustDoWithIt) {
  auto src = MakeCluster("tblspc");
  ASSERT_TRUE(src);
  auto conn = Connect(src->Conninfo());
  ASSERT_TRUE(conn);
  auto none = RunPreflight(*conn, TargetPlan{});
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  const Finding* clean = Find(*none, "tablespaces", "");
  ASSERT_NE(clean, nullptr) << Dump(*none);
  EXPECT_EQ(clean->severity, Severity::kOk);

  const std::string dir = src->dir() + "/ts_dir";
  ASSERT_TRUE(MakeDirOwnedBy(dir, "postgres", 0700).ok());
  ASSERT_TRUE(conn->Exec("create tablespace ts_dir location '" + dir + "'").ok());
  ASSERT_TRUE(conn->Exec("set allow_in_place_tablespaces = on").ok());
  ASSERT_TRUE(conn->Exec("create tablespace ts_inplace location ''").ok());

  // A dry run knows neither where the target maps them nor its settings: warnings.
  auto dry = RunPreflight(*conn, TargetPlan{});
  ASSERT_TRUE(dry.ok()) << dry.status().ToString();
  const Finding* d = Find(*dry, "tablespaces", "ts_dir");
  ASSERT_NE(d, nullptr) << Dump(*dry);
  EXPECT_EQ(d->severity, Severity::kWarning);
  EXPECT_EQ(d->value["location"], dir);
  EXPECT_NE(d->remedy.find("--tablespace-mapping=" + dir + "="), std::string::npos) << d->remedy;
  const Finding* ip = Find(*dry, "tablespaces", "ts_inplace");
  ASSERT_NE(ip, nullptr) << Dump(*dry);
  EXPECT_EQ(ip->severity, Severity::kWarning);
  EXPECT_TRUE(ip->value["in_place"].get<bool>());
  EXPECT_NE(ip->message.find("allow_in_place_tablespaces"), std::string::npos) << ip->message;
  EXPECT_EQ(Find(*dry, "tablespaces", ""), nullptr) << "no 'none' finding beside named ones";

  // A plan that maps them and allows in-place ones: ok, saying where each goes.
  TargetPlan plan{.settings = {{"allow_in_place_tablespaces", "on"}},
                  .tablespace_dir = "/srv/new.tblspc"};
  auto planned = RunPreflight(*conn, plan);
  ASSERT_TRUE(planned.ok()) << planned.status().ToString();
  d = Find(*planned, "tablespaces", "ts_dir");
  ASSERT_NE(d, nullptr) << Dump(*planned);
  EXPECT_EQ(d->severity, Severity::kOk);
  const std::string mapped = "/srv/new.tblspc/" + d->value["oid"].dump();
  EXPECT_EQ(d->value["target_location"], mapped);
  EXPECT_NE(d->message.find(mapped), std::string::npos) << d->message;
  ip = Find(*planned, "tablespaces", "ts_inplace");
  ASSERT_NE(ip, nullptr) << Dump(*planned);
  EXPECT_EQ(ip->severity, Severity::kOk);
  EXPECT_EQ(Find(*planned, "params", "allow_in_place_tablespaces"), nullptr) << Dump(*planned);
}

TEST(Validate, RunningReplicaOfCleanSourceHasNoBlockingFindings) {
  auto src = MakeCluster("validate");
  ASSERT_TRUE(src);
  ASSERT_TRUE(src->Psql("create extension pg_trgm").ok());
  auto replica = TestReplica::Create(*src, {});
  ASSERT_TRUE(replica.ok()) << replica.status().ToString();
  auto s = Connect(src->Conninfo());
  auto t = Connect((*replica)->Conninfo());
  ASSERT_TRUE(s && t);
  auto findings = RunValidate(*s, *t, TargetPlan{});
  ASSERT_TRUE(findings.ok()) << findings.status().ToString();
  EXPECT_FALSE(AnyBlocking(*findings)) << Dump(*findings);
  const Finding* slot = Find(*findings, "slot_health", (*replica)->slot_name());
  ASSERT_NE(slot, nullptr) << Dump(*findings);
  EXPECT_TRUE(slot->value["active"].get<bool>());
}

TEST(Validate, ReadsEachDatabasesExtensionsThroughTheSessionsItIsLent) {
  auto src = MakeCluster("validate-lent");
  ASSERT_TRUE(src);
  ASSERT_TRUE(src->Psql("create database other").ok());
  ASSERT_TRUE(src->Psql("create extension pg_trgm", "other").ok());
  auto replica = TestReplica::Create(*src, {});
  ASSERT_TRUE(replica.ok()) << replica.status().ToString();
  auto s = Connect(src->Conninfo());
  auto t = Connect((*replica)->Conninfo());
  ASSERT_TRUE(s && t);
  // The replica's sessions stand in for the source's databases: its catalogs
  // are the source's.
  std::map<std::string, std::unique_ptr<PgConn>> lent;
  std::vector<std::string> asked;
  CheckOptions opts;
  opts.source_databases = [&](const std::string& db) -> Result<PgConn*> {
    asked.push_back(db);
    auto& c = lent[db];
    if (!c) {
      auto opened = ConnectSameServer(*t, db);
      if (!opened.ok()) return opened.status();
      c = std::move(*opened);
    }
    return c.get();
  };
  auto findings = RunValidate(*s, *t, TargetPlan{}, opts);
  ASSERT_TRUE(findings.ok()) << findings.status().ToString();
  EXPECT_EQ(asked, (std::vector<std::string>{"other", "postgres", "template1"}));
  EXPECT_FALSE(AnyBlocking(*findings)) << Dump(*findings);
  const Finding* ext = Find(*findings, "extensions", "");
  ASSERT_NE(ext, nullptr) << Dump(*findings);
  EXPECT_NE(ext->message.find("all 2 extension(s)"), std::string::npos) << ext->message;
  // What the lent sessions report is what the source has.
  auto direct = ReadInstalledExtensions(*s);
  auto via_replica = ReadInstalledExtensions(*s, opts.source_databases);
  ASSERT_TRUE(direct.ok() && via_replica.ok());
  ASSERT_EQ(direct->size(), via_replica->size());
  for (size_t i = 0; i < direct->size(); ++i) {
    EXPECT_EQ((*direct)[i].name, (*via_replica)[i].name);
    EXPECT_EQ((*direct)[i].databases, (*via_replica)[i].databases);
  }
}

// Reverse replication subscribes the source in each of its databases: with
// three of them (postgres and two more) two apply workers are too few.
TEST(Preflight, NamesTheSettingTooLowForAReverseSubscriptionPerDatabase) {
  auto src = MakeCluster("reverse_capacity", {{"max_logical_replication_workers", "2"}});
  ASSERT_TRUE(src);
  auto conn = Connect(src->Conninfo());
  ASSERT_TRUE(conn);
  for (const char* db : {"one", "two"}) {
    ASSERT_TRUE(conn->Exec(std::string("create database ") + db).ok());
  }
  auto findings = RunPreflight(*conn, TargetPlan{});
  ASSERT_TRUE(findings.ok()) << findings.status().ToString();
  const Finding* workers =
      Find(*findings, "reverse_replication", "source:max_logical_replication_workers");
  ASSERT_NE(workers, nullptr) << Dump(*findings);
  EXPECT_EQ(workers->severity, Severity::kWarning) << workers->ToJson().dump();
  EXPECT_EQ(workers->threshold["min"], 3) << workers->ToJson().dump();
  EXPECT_NE(workers->remedy.find("max_logical_replication_workers >= 3"), std::string::npos)
      << workers->remedy;
  const Finding* procs = Find(*findings, "reverse_replication", "source:max_worker_processes");
  ASSERT_NE(procs, nullptr) << Dump(*findings);
  EXPECT_EQ(procs->severity, Severity::kOk) << procs->ToJson().dump();
  EXPECT_FALSE(AnyBlocking(*findings))
      << "a rollback asks, the migration goes on: " << Dump(*findings);
}

}  // namespace
}  // namespace pgshift::checks
