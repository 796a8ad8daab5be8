// Tablespaces on a real source (issue 17). Before: a tablespace with its own
// directory made pg_basebackup fail on the same host ("exists but is not
// empty"), an in-place one made the standby PANIC at its next start, and one
// created during sync was silently replayed as a link into the source's own
// directory. Now: preflight names each; the base backup gives each its own
// copy under <target>.tblspc/<oid>; in-place ones are copied with the data
// directory and the target allows them; one created during sync in its own
// directory stops the standby with a blocking finding saying what to do.
#include <gtest/gtest.h>

#include <filesystem>
#include <thread>

#include "checks/checks.h"
#include "common/clock.h"
#include "pg/conn.h"
#include "provider/local/local_env_testing.h"

namespace pgshift {
namespace {

using local_testing::EnvFor;
using local_testing::SocketConninfo;
using local_testing::SpecFor;
using local_testing::TargetStopper;

bool WaitFor(const std::function<bool()>& cond, int64_t timeout_ms) {
  const int64_t deadline = MonotonicMs() + timeout_ms;
  while (MonotonicMs() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return cond();
}

class LocalEnvTablespaceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pg = testing::TestCluster::Create({.name = "tblspc"});
    ASSERT_TRUE(pg.ok()) << pg.status().ToString();
    pg_ = std::move(pg).value();
    auto admin = PgConn::Connect(pg_->Conninfo());
    ASSERT_TRUE(admin.ok()) << admin.status().ToString();
    admin_ = std::move(admin).value();
    spec_ = SpecFor(*pg_, SocketConninfo(*pg_), "tblspc");
  }

  // CREATE TABLESPACE runs outside a transaction; in place only with the
  // developer setting, set for this session alone (the source's
  // configuration, which the target inherits, does not have it).
  int64_t CreateInPlace(const std::string& name) {
    EXPECT_TRUE(admin_->Exec("set allow_in_place_tablespaces = on").ok());
    Status st = admin_->Exec("create tablespace " + name + " location ''");
    EXPECT_TRUE(st.ok()) << st.ToString();
    return Oid(name);
  }
  int64_t CreateInDirectory(const std::string& name) {
    const std::string dir = pg_->dir() + "/" + name;
    EXPECT_TRUE(MakeDirOwnedBy(dir, "postgres", 0700).ok());
    Status st = admin_->Exec("create tablespace " + name + " location '" + dir + "'");
    EXPECT_TRUE(st.ok()) << st.ToString();
    return Oid(name);
  }
  int64_t Oid(const std::string& name) {
    auto r =
        admin_->Query("select oid::bigint as oid from pg_tablespace where spcname = $1", {name});
    return r.ok() && !r->empty() ? r->Int(0, "oid") : 0;
  }
  // A table of `rows` rows in tablespace `ts`, on the source.
  void Fill(const std::string& table, const std::string& ts, int rows) {
    Status st = admin_->Exec("create table " + table + " tablespace " + ts +
                             " as select generate_series(1, " + std::to_string(rows) + ") k");
    ASSERT_TRUE(st.ok()) << st.ToString();
  }
  std::string Count(const std::string& conninfo, const std::string& table) {
    auto c = PgConn::Connect(conninfo);
    if (!c.ok()) return c.status().ToString();
    auto r = (*c)->Query("select count(*) as n from " + table);
    return r.ok() ? r->Str(0, "n") : r.status().ToString();
  }
  std::string TargetCi(LocalEnv& env) {
    auto ci = env.TargetConninfo();
    EXPECT_TRUE(ci.ok());
    return ci.ok() ? *ci : "";
  }
  const checks::Finding* Find(const std::vector<checks::Finding>& fs, const std::string& id,
                              const std::string& subject) {
    for (const auto& f : fs) {
      if (f.id == id && f.subject == subject) return &f;
    }
    return nullptr;
  }

  std::unique_ptr<testing::TestCluster> pg_;
  std::unique_ptr<PgConn> admin_;
  MigrationSpec spec_;
};

TEST_F(LocalEnvTablespaceTest, BaseBackupGivesEveryTablespaceItsOwnCopy) {
  const int64_t in_place = CreateInPlace("inplace");
  const int64_t own_dir = CreateInDirectory("owndir");
  Fill("a", "inplace", 1000);
  Fill("b", "owndir", 2000);
  auto env = EnvFor(spec_, "m-tblspc");
  ASSERT_TRUE(env);
  TargetStopper stopper(env.get());
  const std::string mapped = spec_.target.data_dir + ".tblspc/" + std::to_string(own_dir);

  // Preflight names both and what happens to each.
  auto preflight = env->PreflightFindings();
  ASSERT_TRUE(preflight.ok()) << preflight.status().ToString();
  EXPECT_FALSE(checks::AnyBlocking(*preflight)) << checks::RenderFindingsTable(*preflight);
  const checks::Finding* fi = Find(*preflight, "tablespaces", "inplace");
  ASSERT_NE(fi, nullptr) << checks::RenderFindingsTable(*preflight);
  EXPECT_EQ(fi->severity, checks::Severity::kOk) << fi->message;
  const checks::Finding* fd = Find(*preflight, "tablespaces", "owndir");
  ASSERT_NE(fd, nullptr) << checks::RenderFindingsTable(*preflight);
  EXPECT_EQ(fd->severity, checks::Severity::kOk) << fd->message;
  EXPECT_NE(fd->message.find(mapped), std::string::npos) << fd->message;
  EXPECT_EQ(Find(*preflight, "params", "allow_in_place_tablespaces"), nullptr)
      << "the target's own setting is not a difference to report";

  const std::string slot = SlotNameFor("m-tblspc");
  ASSERT_TRUE(env->EnsurePhysicalSlot(slot).ok());
  Status built = env->CreateReplica(slot, [](int) {});
  ASSERT_TRUE(built.ok()) << built.ToString();
  const std::string tblspc = spec_.target.data_dir + "/pg_tblspc/";
  EXPECT_EQ(std::filesystem::read_symlink(tblspc + std::to_string(own_dir)).string(), mapped);
  EXPECT_TRUE(std::filesystem::is_directory(tblspc + std::to_string(in_place)));
  EXPECT_FALSE(std::filesystem::is_symlink(tblspc + std::to_string(in_place)));
  EXPECT_FALSE(std::filesystem::is_empty(mapped)) << "the copy holds the tablespace's files";
  EXPECT_EQ(Count(TargetCi(*env), "a"), "1000");
  EXPECT_EQ(Count(TargetCi(*env), "b"), "2000");
  auto lag = env->Lag(slot);
  ASSERT_TRUE(lag.ok()) << lag.status().ToString();

  // The standby restarts with an in-place tablespace (it stopped with a PANIC before).
  ASSERT_TRUE(env->StopTarget().ok());
  Status restarted = env->CreateReplica(slot, [](int) {});
  ASSERT_TRUE(restarted.ok()) << restarted.ToString();
  EXPECT_EQ(Count(TargetCi(*env), "a"), "1000");

  auto validate = env->ValidateFindings();
  ASSERT_TRUE(validate.ok()) << validate.status().ToString();
  const checks::Finding* drift = Find(*validate, checks::kTablespaceCreatedDuringSync, "");
  ASSERT_NE(drift, nullptr) << checks::RenderFindingsTable(*validate);
  EXPECT_EQ(drift->severity, checks::Severity::kOk);
  EXPECT_EQ(Find(*validate, "params", "allow_in_place_tablespaces"), nullptr)
      << checks::RenderFindingsTable(*validate);
}

TEST_F(LocalEnvTablespaceTest, TablespaceCreatedDuringSyncIsCaughtAndStopsTheStandby) {
  auto env = EnvFor(spec_, "m-tblspc");
  ASSERT_TRUE(env);
  TargetStopper stopper(env.get());
  const std::string slot = SlotNameFor("m-tblspc");
  ASSERT_TRUE(env->EnsurePhysicalSlot(slot).ok());
  Status built = env->CreateReplica(slot, [](int) {});
  ASSERT_TRUE(built.ok()) << built.ToString();
  ASSERT_TRUE(env->Lag(slot).ok());

  // In place during sync: replayed inside the standby's own data directory; harmless.
  CreateInPlace("late_inplace");
  Fill("c", "late_inplace", 300);
  EXPECT_TRUE(WaitFor([&] { return Count(TargetCi(*env), "c") == "300"; }, 30000));
  auto lag = env->Lag(slot);
  ASSERT_TRUE(lag.ok()) << lag.status().ToString();
  ASSERT_TRUE(env->StopTarget().ok());
  ASSERT_TRUE(env->CreateReplica(slot, [](int) {}).ok()) << "restart with an in-place tablespace";

  // In its own directory during sync: the standby would write into the source's files.
  const int64_t late = CreateInDirectory("late_dir");
  Fill("d", "late_dir", 400);
  auto caught = env->Lag(slot);
  ASSERT_FALSE(caught.ok()) << "a tablespace created during sync went unnoticed";
  EXPECT_EQ(caught.status().code(), Code::kFailedPrecondition);
  const std::string msg = caught.status().message();
  EXPECT_NE(msg.find("late_dir"), std::string::npos) << msg;
  EXPECT_NE(msg.find("after the base backup"), std::string::npos) << msg;
  EXPECT_NE(msg.find("roll back"), std::string::npos) << msg;
  std::printf("Lag: %s\n", msg.c_str());
  auto t = env->InspectTarget();
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_FALSE(t->running) << "the standby must stop before it writes into the source's files";

  const auto findings = env->SyncFindings();
  const checks::Finding* f = Find(findings, checks::kTablespaceCreatedDuringSync, "late_dir");
  ASSERT_NE(f, nullptr);
  EXPECT_TRUE(f->Blocks());
  EXPECT_EQ(f->value["oid"], late);
  EXPECT_NE(f->remedy.find(spec_.target.data_dir + ".tblspc/" + std::to_string(late)),
            std::string::npos)
      << f->remedy;
  // The source is unharmed and keeps working in its tablespace.
  EXPECT_EQ(Count(pg_->Conninfo(), "d"), "400");
  ASSERT_TRUE(admin_->Exec("insert into d select generate_series(1, 100)").ok());
  EXPECT_EQ(Count(pg_->Conninfo(), "d"), "500");
  // Promotion checks too (a cutover that passed the last sync sample):
  // started again, the standby is refused promotion and stopped.
  ASSERT_TRUE(env->CreateReplica(slot, [](int) {}).ok());
  auto promoted = env->PromoteTarget();
  ASSERT_FALSE(promoted.ok()) << "promoted a target without its own copy of late_dir";
  EXPECT_NE(promoted.status().message().find("late_dir"), std::string::npos)
      << promoted.status().ToString();
  auto after = env->InspectTarget();
  ASSERT_TRUE(after.ok()) << after.status().ToString();
  EXPECT_FALSE(after->running);
}

}  // namespace
}  // namespace pgshift
