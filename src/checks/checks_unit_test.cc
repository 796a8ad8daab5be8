// Unit tests for the checks' pure logic: setting normalisation and
// comparison, extension version reachability and parity, slot evaluation,
// version/architecture comparison, overrides and rendering.
#include <gtest/gtest.h>

#include "checks/checks.h"
#include "checks/extensions.h"
#include "checks/install.h"
#include "checks/params.h"
#include "common/os.h"

namespace pgshift::checks {
namespace {

SettingInfo Def(const std::string& name, const std::string& value, const std::string& vartype,
                const std::string& unit = "", const std::string& boot = "") {
  return SettingInfo{name, value, boot.empty() ? value : boot, unit, vartype, "postmaster"};
}

Settings SourceSettings() {
  Settings s;
  for (const auto& d :
       {Def("max_connections", "100", "integer"), Def("max_worker_processes", "8", "integer"),
        Def("max_wal_senders", "10", "integer"), Def("max_prepared_transactions", "0", "integer"),
        Def("max_locks_per_transaction", "64", "integer"),
        Def("max_replication_slots", "10", "integer"), Def("wal_level", "logical", "enum", "",
                                                           "replica"),
        Def("shared_buffers", "8192", "integer", "8kB", "16384"),
        Def("work_mem", "4096", "integer", "kB"), Def("port", "5432", "integer"),
        Def("fsync", "on", "bool")}) {
    s[d.name] = d;
  }
  return s;
}

const Finding* Find(const std::vector<Finding>& fs, const std::string& subject) {
  for (const Finding& f : fs) {
    if (f.subject == subject) return &f;
  }
  return nullptr;
}

TEST(NormalizeSettingValue, ConvertsUnitsBooleansAndQuotes) {
  const SettingInfo sb = Def("shared_buffers", "16384", "integer", "8kB");
  EXPECT_EQ(*NormalizeSettingValue(sb, "64MB"), "8192");
  EXPECT_EQ(*NormalizeSettingValue(sb, "1GB"), "131072");
  EXPECT_EQ(*NormalizeSettingValue(sb, "'128MB'"), "16384");
  EXPECT_EQ(*NormalizeSettingValue(sb, "100"), "100");
  const SettingInfo timeout = Def("statement_timeout", "0", "integer", "ms");
  EXPECT_EQ(*NormalizeSettingValue(timeout, "2min"), "120000");
  EXPECT_EQ(*NormalizeSettingValue(timeout, "1.5s"), "1500");
  const SettingInfo b = Def("fsync", "on", "bool");
  EXPECT_EQ(*NormalizeSettingValue(b, "true"), "on");
  EXPECT_EQ(*NormalizeSettingValue(b, "OFF"), "off");
  EXPECT_EQ(*NormalizeSettingValue(b, "0"), "off");
  EXPECT_EQ(*NormalizeSettingValue(Def("wal_level", "replica", "enum"), "'Logical'"), "logical");
  EXPECT_EQ(*NormalizeSettingValue(Def("search_path", "", "string"), "'a, ''b'''"), "a, 'b'");

  EXPECT_FALSE(NormalizeSettingValue(sb, "64 parsecs").ok());
  EXPECT_FALSE(NormalizeSettingValue(sb, "10s").ok());  // time unit for a memory setting
  EXPECT_FALSE(NormalizeSettingValue(Def("max_connections", "100", "integer"), "20MB").ok());
  EXPECT_FALSE(NormalizeSettingValue(b, "maybe").ok());
  auto bad = NormalizeSettingValue(Def("max_connections", "100", "integer"), "many");
  EXPECT_NE(bad.status().message().find("max_connections"), std::string::npos);
}

TEST(CompareParams, LowerStandbyMinimumBlocksAndEqualPasses) {
  const Settings src = SourceSettings();
  std::vector<Finding> problems;
  Settings tgt = PlanTargetSettings(src, {{"max_connections", "20"}}, &problems);
  EXPECT_TRUE(problems.empty());
  auto fs = CompareParams(src, tgt, 0);
  const Finding* mc = Find(fs, "max_connections");
  ASSERT_NE(mc, nullptr);
  EXPECT_EQ(mc->severity, Severity::kBlocking);
  EXPECT_EQ(mc->value["source"], 100);
  EXPECT_EQ(mc->value["target"], 20);
  EXPECT_EQ(Find(fs, "max_worker_processes")->severity, Severity::kOk);

  tgt = PlanTargetSettings(src, {{"max_connections", "200"}}, &problems);
  fs = CompareParams(src, tgt, 0);
  EXPECT_EQ(Find(fs, "max_connections")->severity, Severity::kOk);
  EXPECT_FALSE(AnyBlocking(fs));
}

TEST(CompareParams, CdcSlotsNeedLogicalWalLevelAndCapacityAfterPromotion) {
  const Settings src = SourceSettings();
  std::vector<Finding> problems;
  Settings tgt = PlanTargetSettings(
      src, {{"wal_level", "replica"}, {"max_replication_slots", "2"}}, &problems);
  auto fs = CompareParams(src, tgt, 3);
  EXPECT_EQ(Find(fs, "wal_level")->severity, Severity::kBlocking);
  EXPECT_EQ(Find(fs, "max_replication_slots")->severity, Severity::kBlocking);
  EXPECT_EQ(Find(fs, "max_wal_senders")->severity, Severity::kOk);  // the standby minimum, 10
  // Without CDC slots, wal_level replica is just a difference (a warning).
  fs = CompareParams(src, tgt, 0);
  EXPECT_EQ(Find(fs, "wal_level")->severity, Severity::kWarning);
}

TEST(CompareParams, OtherDifferencesAreWarningsAndPerInstanceOnesAreIgnored) {
  const Settings src = SourceSettings();
  std::vector<Finding> problems;
  Settings tgt = PlanTargetSettings(
      src, {{"work_mem", "8MB"}, {"shared_buffers", "64MB"}, {"port", "6543"}}, &problems);
  ASSERT_TRUE(problems.empty());
  auto fs = CompareParams(src, tgt, 0);
  const Finding* wm = Find(fs, "work_mem");
  ASSERT_NE(wm, nullptr);
  EXPECT_EQ(wm->severity, Severity::kWarning);
  EXPECT_EQ(wm->value["target"], 8192);
  EXPECT_EQ(Find(fs, "shared_buffers"), nullptr);  // 64MB is the source's value already
  EXPECT_EQ(Find(fs, "port"), nullptr);
}

TEST(PlanTargetSettings, UnknownOrInvalidOverridesBlock) {
  std::vector<Finding> problems;
  PlanTargetSettings(SourceSettings(),
                     {{"max_conections", "20"}, {"fsync", "perhaps"}, {"pg_stat_x.track", "1"}},
                     &problems);
  ASSERT_EQ(problems.size(), 2u);
  for (const Finding& f : problems) EXPECT_EQ(f.severity, Severity::kBlocking);
  EXPECT_NE(Find(problems, "max_conections"), nullptr);
  EXPECT_NE(Find(problems, "fsync"), nullptr);
}

TEST(SourceCapacity, NeedsAFreeSlotAndTwoFreeSenders) {
  Settings src = SourceSettings();
  auto fs = SourceCapacity(src, 10, 0);
  EXPECT_EQ(Find(fs, "source:max_replication_slots")->severity, Severity::kBlocking);
  fs = SourceCapacity(src, 9, 9);
  EXPECT_EQ(Find(fs, "source:max_replication_slots")->severity, Severity::kOk);
  EXPECT_EQ(Find(fs, "source:max_wal_senders")->severity, Severity::kBlocking);
  src["wal_level"].value = "minimal";
  EXPECT_EQ(Find(SourceCapacity(src, 0, 0), "source:wal_level")->severity, Severity::kBlocking);
}

TEST(ReverseReplicationCapacity, NamesEachSettingShortOfASubscriptionPerDatabase) {
  Settings src = SourceSettings();
  src["max_logical_replication_workers"] = Def("max_logical_replication_workers", "4", "integer");
  // Five databases: the default four apply workers cannot serve them.
  ReverseReplicationLoad load{
      .databases = 5, .subscriptions = 0, .origins = 0, .background_workers = 1};
  auto fs = ReverseReplicationCapacity(src, load, Severity::kWarning);
  ASSERT_EQ(fs.size(), 3u);
  const Finding* workers = Find(fs, "source:max_logical_replication_workers");
  ASSERT_NE(workers, nullptr);
  EXPECT_EQ(workers->id, "reverse_replication");
  EXPECT_EQ(workers->severity, Severity::kWarning);
  EXPECT_EQ(workers->threshold["min"], 5);
  EXPECT_NE(workers->remedy.find("max_logical_replication_workers >= 5"), std::string::npos)
      << workers->remedy;
  EXPECT_EQ(Find(fs, "source:max_worker_processes")->severity, Severity::kOk);   // 8 >= 1 + 5
  EXPECT_EQ(Find(fs, "source:max_replication_slots")->severity, Severity::kOk);  // 10 >= 0 + 5
  // What the source runs already counts: two more subscriptions, seven
  // origins, four background workers.
  load = {.databases = 4, .subscriptions = 2, .origins = 7, .background_workers = 5};
  fs = ReverseReplicationCapacity(src, load, Severity::kBlocking);
  EXPECT_EQ(Find(fs, "source:max_logical_replication_workers")->severity, Severity::kBlocking);
  const Finding* procs = Find(fs, "source:max_worker_processes");
  EXPECT_EQ(procs->severity, Severity::kBlocking);
  EXPECT_NE(procs->message.find("9 needed"), std::string::npos) << procs->message;
  const Finding* origins = Find(fs, "source:max_replication_slots");
  EXPECT_EQ(origins->severity, Severity::kBlocking);
  EXPECT_NE(origins->remedy.find("max_replication_slots >= 11"), std::string::npos);
  load = {.databases = 2, .subscriptions = 0, .origins = 0, .background_workers = 1};
  for (const Finding& f : ReverseReplicationCapacity(src, load, Severity::kBlocking)) {
    EXPECT_EQ(f.severity, Severity::kOk) << f.subject << ": " << f.message;
  }
}

TEST(ExtensionVersions, InstallScriptsAndReachableUpdatesAreAvailable) {
  const std::vector<std::string> files = {
      "hstore.control",        "hstore--1.4.sql", "hstore--1.4--1.5.sql", "hstore--1.5--1.6.sql",
      "hstore--1.2--1.3.sql",  // 1.2 has no install script: neither 1.2 nor 1.3 is reachable
      "hstore_plperl--1.0.sql"};
  auto v = ExtensionVersionsFromFiles("hstore", files);
  EXPECT_EQ(v, (std::set<std::string>{"1.4", "1.5", "1.6"}));
}

TEST(CompareExtensions, MissingOrWrongVersionBlocks) {
  ExtensionCatalog cat;
  cat.origin = "/x/extension";
  cat.versions["plpgsql"] = {"1.0"};
  cat.versions["pg_trgm"] = {"1.5", "1.6"};
  cat.versions["citext"] = {"1.6"};
  cat.missing_module["citext"] = "/x/lib/citext.so";
  std::vector<InstalledExtension> installed = {{"plpgsql", "1.0", {"postgres"}},
                                               {"pg_trgm", "1.4", {"app"}},
                                               {"hstore", "1.8", {"app", "postgres"}},
                                               {"citext", "1.6", {"app"}}};
  auto fs = CompareExtensions(installed, cat);
  EXPECT_EQ(Find(fs, "plpgsql"), nullptr);
  ASSERT_NE(Find(fs, "pg_trgm"), nullptr);
  EXPECT_EQ(Find(fs, "pg_trgm")->severity, Severity::kBlocking);
  ASSERT_NE(Find(fs, "hstore"), nullptr);
  EXPECT_EQ(Find(fs, "hstore")->value["databases"].size(), 2u);
  ASSERT_NE(Find(fs, "citext"), nullptr);
  EXPECT_NE(Find(fs, "citext")->message.find("citext.so"), std::string::npos);

  fs = CompareExtensions({{"plpgsql", "1.0", {"postgres"}}}, cat);
  ASSERT_EQ(fs.size(), 1u);
  EXPECT_EQ(fs[0].severity, Severity::kOk);
}

TEST(EvaluateSlots, InactiveRetainingSlotIsNamedLostBlocksSummaryHasOldest) {
  SlotSnapshot snap;
  snap.current_lsn = Lsn{100u << 20};
  SlotInfo active{"replica",    "physical",     "",          "", true, "reserved",
                  std::nullopt, Lsn{99u << 20}, std::nullopt};
  SlotInfo stale{"old_cdc",  "logical",    "pgoutput",     "app",         false,
                 "extended", std::nullopt, Lsn{10u << 20}, Lsn{12u << 20}};
  SlotInfo fresh{"new_cdc",      "logical",  "pgoutput",   "app",
                 false,          "reserved", std::nullopt, Lsn{(100u << 20) - 100},
                 Lsn{100u << 20}};
  SlotInfo lost{"gone", "logical",    "pgoutput",   "app",       false,
                "lost", std::nullopt, std::nullopt, std::nullopt};
  snap.slots = {active, stale, fresh, lost};
  auto fs = EvaluateSlots(snap, SlotThresholds{.inactive_retained_bytes = 1 << 20});
  const Finding* s = Find(fs, "old_cdc");
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->severity, Severity::kWarning);
  EXPECT_EQ(s->value["retained_bytes"], 90u << 20);
  EXPECT_EQ(s->value["consumer_lag_bytes"], 88u << 20);
  EXPECT_NE(s->message.find(std::to_string(90u << 20)), std::string::npos);
  EXPECT_NE(s->remedy.find("SELECT pg_drop_replication_slot('old_cdc');"), std::string::npos);
  EXPECT_EQ(Find(fs, "replica")->severity, Severity::kOk);
  EXPECT_EQ(Find(fs, "new_cdc")->severity, Severity::kOk);
  EXPECT_EQ(Find(fs, "gone")->severity, Severity::kBlocking);
  const Finding* sum = Find(fs, "");
  ASSERT_NE(sum, nullptr);
  EXPECT_EQ(sum->value["oldest_slot"], "old_cdc");
  EXPECT_EQ(sum->value["oldest_slot_lag_bytes"], 90u << 20);
  EXPECT_EQ(DropSlotStatement("it's"), "SELECT pg_drop_replication_slot('it''s');");
}

TEST(Version, ArchitectureParsingAndMismatch) {
  EXPECT_EQ(
      ArchitectureFromVersionString(
          "PostgreSQL 15.18 (Debian 15.18-0+deb12u1) on x86_64-pc-linux-gnu, compiled by gcc"),
      "x86_64");
  EXPECT_EQ(ArchitectureFromVersionString("PostgreSQL 15.4 on aarch64-unknown-linux-gnu, x"),
            "aarch64");
  EXPECT_EQ(ArchitectureFromVersionString("garbage"), "");
  auto elf = ElfArchitecture(DefaultPgBinDir() + "/postgres");
  ASSERT_TRUE(elf.ok()) << elf.status().ToString();
  EXPECT_FALSE(elf->empty());
  EXPECT_FALSE(ElfArchitecture("/etc/hostname").ok());

  auto same = CompareVersion({15, "x86_64"}, {15, "x86_64"}, "t");
  ASSERT_EQ(same.size(), 1u);
  EXPECT_EQ(same[0].severity, Severity::kOk);
  auto diff = CompareVersion({15, "x86_64"}, {16, "aarch64"}, "t");
  EXPECT_EQ(diff.size(), 2u);
  EXPECT_TRUE(AnyBlocking(diff));
  EXPECT_EQ(CompareVersion({15, ""}, {15, "x86_64"}, "t")[0].severity, Severity::kWarning);
}

std::vector<Finding> Sample() {
  Finding a;
  a.id = "unlogged_tables";
  a.severity = Severity::kBlocking;
  a.subject = "app.public.cache";
  a.message = "table app.public.cache is UNLOGGED";
  a.remedy = "ALTER TABLE cache SET LOGGED";
  Finding b = a;
  b.subject = "app.public.other";
  Finding c;
  c.id = "params";
  c.severity = Severity::kWarning;
  c.subject = "work_mem";
  c.message = "work_mem differs";
  return {a, b, c};
}

TEST(ApplyOverride, MarksOnlyTheNamedBlockingFindingAndRecordsTheReason) {
  auto fs = Sample();
  ASSERT_TRUE(ApplyOverride(fs, "unlogged_tables", "app.public.cache", "cache, rebuilt").ok());
  EXPECT_TRUE(fs[0].overridden);
  EXPECT_EQ(fs[0].override_reason, "cache, rebuilt");
  EXPECT_FALSE(fs[0].Blocks());
  EXPECT_FALSE(fs[1].overridden);
  EXPECT_TRUE(AnyBlocking(fs));
  auto json = fs[0].ToJson();
  EXPECT_EQ(json["overridden"], true);
  auto back = Finding::FromJson(json);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->override_reason, "cache, rebuilt");
  ASSERT_TRUE(ApplyOverride(fs, "unlogged_tables", "app.public.other", "also a cache").ok());
  EXPECT_FALSE(AnyBlocking(fs));
}

TEST(ApplyOverride, RejectsMissingFindingsWarningsAndEmptyReasons) {
  auto fs = Sample();
  Status st = ApplyOverride(fs, "unlogged_tables", "app.public.nope", "x");
  EXPECT_EQ(st.code(), Code::kNotFound);
  EXPECT_NE(st.message().find("app.public.cache"), std::string::npos) << st.message();
  EXPECT_EQ(ApplyOverride(fs, "params", "work_mem", "x").code(), Code::kNotFound);
  EXPECT_EQ(ApplyOverride(fs, "unlogged_tables", "app.public.cache", "  ").code(),
            Code::kInvalidArgument);
  EXPECT_FALSE(fs[0].overridden);
}

TEST(RenderFindingsTable, ShowsEachFindingRemedyOverrideAndCounts) {
  auto fs = Sample();
  ASSERT_TRUE(ApplyOverride(fs, "unlogged_tables", "app.public.cache", "cache").ok());
  const std::string table = RenderFindingsTable(fs);
  EXPECT_NE(table.find("blocking* unlogged_tables"), std::string::npos) << table;
  EXPECT_NE(table.find("overridden: cache"), std::string::npos);
  EXPECT_NE(table.find("remedy: ALTER TABLE cache SET LOGGED"), std::string::npos);
  EXPECT_NE(table.find("3 finding(s): 1 blocking, 1 warning(s)"), std::string::npos) << table;
}

TEST(ResolveInstallation, AcceptsBinOrRootAndRejectsOtherDirs) {
  auto inst = ResolveInstallation("");
  ASSERT_TRUE(inst.ok()) << inst.status().ToString();
  EXPECT_EQ(inst->bin_dir, DefaultPgBinDir());
  auto root = ResolveInstallation(DefaultPgBinDir() + "/..");
  ASSERT_TRUE(root.ok()) << root.status().ToString();
  EXPECT_EQ(root->share_dir, inst->share_dir);
  auto bad = ResolveInstallation("/etc");
  EXPECT_EQ(bad.status().code(), Code::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("/etc"), std::string::npos);
}

}  // namespace
}  // namespace pgshift::checks
