// Leases: the pure rules (lease.h), and the SQLite store's fencing and file
// lock. The PostgreSQL store's are in pg_state_store_test.cc.
#include "store/lease.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/os.h"
#include "store/state_store.h"

namespace pgshift {
namespace {

constexpr int64_t kTtl = 1000;

TEST(NextLease, TakesAFreeLeaseWithTheNextToken) {
  auto l = NextLease({}, "a", 100, kTtl);
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->owner, "a");
  EXPECT_EQ(l->token, 1);
  EXPECT_EQ(l->expires_at_ms, 100 + kTtl);
}

TEST(NextLease, ExtendsItsOwnLeaseUnderTheSameToken) {
  auto l = NextLease({"a", 4, 500}, "a", 400, kTtl);
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->token, 4);
  EXPECT_EQ(l->expires_at_ms, 400 + kTtl);
  // Even once expired, while nobody took it.
  l = NextLease({"a", 4, 500}, "a", 900, kTtl);
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->token, 4);
}

TEST(NextLease, RefusesAnotherOwnersStandingLease) {
  auto l = NextLease({"a", 4, 500}, "b", 499, kTtl);
  EXPECT_EQ(l.status().code(), Code::kFailedPrecondition);
  EXPECT_NE(l.status().message().find("driven by a"), std::string::npos) << l.status().message();
}

TEST(NextLease, TakesOverAnExpiredLeaseWithTheNextToken) {
  auto l = NextLease({"a", 4, 500}, "b", 500, kTtl);
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->owner, "b");
  EXPECT_EQ(l->token, 5);
}

TEST(NextLease, NeedsAnOwnerAndADuration) {
  EXPECT_EQ(NextLease({}, "", 0, kTtl).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(NextLease({}, "a", 0, 0).status().code(), Code::kInvalidArgument);
}

TEST(RenewedLease, ExtendsOnlyTheLeaseStillStored) {
  const Lease held{"a", 4, 500};
  auto r = RenewedLease({"a", 4, 500}, held, 450, kTtl);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->expires_at_ms, 450 + kTtl);
  EXPECT_EQ(r->token, 4);
  // Expired but not taken: still ours.
  EXPECT_TRUE(RenewedLease({"a", 4, 500}, held, 900, kTtl).ok());
  // Taken over: lost, whatever the clock says.
  auto lost = RenewedLease({"b", 5, 1500}, held, 450, kTtl);
  EXPECT_TRUE(IsLeaseLost(lost.status()));
  EXPECT_NE(lost.status().message().find("driven by b"), std::string::npos);
}

MigrationRecord Sample(const std::string& id) {
  MigrationRecord m;
  m.id = id;
  m.name = "app";
  m.phase = "sync";
  m.state = "running";
  m.created_at_ms = 1;
  return m;
}

TEST(SqliteLeases, AWriteUnderALostLeaseIsRefusedAndChangesNothing) {
  auto store = SqliteStateStore::Open(":memory:");
  ASSERT_TRUE(store.ok());
  auto& s = **store;
  ASSERT_TRUE(s.Insert(Sample("m-1")).ok());
  auto a = s.AcquireLease("m-1", "a", 60000);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->token, 1);
  // Another owner of this store must wait for the lease to expire.
  EXPECT_EQ(s.AcquireLease("m-1", "b", 60000).status().code(), Code::kFailedPrecondition);
  auto m = s.Get("m-1");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->lease.owner, "a");
  m->phase = "validate";
  ASSERT_TRUE(s.Update(*m).ok());
  ASSERT_TRUE(s.AppendEvent("m-1", {0, 1, "validate", "info", "by a", "a"}, a->token).ok());

  // a lets it go; b takes it over with the next token.
  ASSERT_TRUE(s.ReleaseLease("m-1", *a).ok());
  auto b = s.AcquireLease("m-1", "b", 60000);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(b->token, 2);

  // Every write of a's is refused now, and leaves nothing behind.
  m->phase = "ready";
  EXPECT_TRUE(IsLeaseLost(s.Update(*m)));
  EXPECT_TRUE(IsLeaseLost(s.UpdateWithEvents(*m, {{0, 2, "ready", "info", "late", "a"}}, {})));
  EXPECT_TRUE(IsLeaseLost(s.AppendEvent("m-1", {0, 3, "ready", "info", "late", "a"}, a->token)));
  EXPECT_TRUE(IsLeaseLost(s.RenewLease("m-1", *a, 60000).status()));
  auto now = s.Get("m-1");
  ASSERT_TRUE(now.ok());
  EXPECT_EQ(now->phase, "validate");
  auto events = s.Events("m-1");
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 1u);
  EXPECT_EQ((*events)[0].owner, "a");
  // The API's unfenced note is taken.
  EXPECT_TRUE(s.AppendEvent("m-1", {0, 4, "validate", "info", "cutover requested"}, kNoFence).ok());

  // b writes under its own token; renewing keeps it.
  now->phase = "ready";
  ASSERT_TRUE(s.Update(*now).ok());
  auto renewed = s.RenewLease("m-1", *b, 60000);
  ASSERT_TRUE(renewed.ok());
  EXPECT_EQ(renewed->token, 2);
  EXPECT_EQ(s.AcquireLease("nope", "b", 60000).status().code(), Code::kNotFound);
}

TEST(SqliteLeases, ALeaseLeftByAnEarlierProcessIsFreeAtOnce) {
  auto dir = MakeTempDir("pgshift-lease");
  ASSERT_TRUE(dir.ok());
  const std::string path = *dir + "/state.db";
  {
    auto store = SqliteStateStore::Open(path);
    ASSERT_TRUE(store.ok());
    ASSERT_TRUE((*store)->Insert(Sample("m-1")).ok());
    ASSERT_TRUE((*store)->AcquireLease("m-1", "host:100", 600000).ok());
  }
  // Restarted (a new pid): the file lock proves the old owner gone.
  auto store = SqliteStateStore::Open(path);
  ASSERT_TRUE(store.ok());
  auto l = (*store)->AcquireLease("m-1", "host:200", 600000);
  ASSERT_TRUE(l.ok()) << l.status().ToString();
  EXPECT_EQ(l->token, 2);
  (void)RemoveTree(*dir);
}

TEST(SqliteStateStore, AFileFromBeforeLeasesIsMigratedInPlace) {
  auto dir = MakeTempDir("pgshift-upgrade");
  ASSERT_TRUE(dir.ok());
  const std::string path = *dir + "/state.db";
  {
    // The version-1 tables as an older pgshiftd left them, with a migration.
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    const char* kOld = R"sql(
CREATE TABLE migrations (id TEXT PRIMARY KEY, name TEXT NOT NULL, spec TEXT NOT NULL,
  phase TEXT NOT NULL, state TEXT NOT NULL, progress TEXT NOT NULL, result TEXT NOT NULL,
  findings TEXT NOT NULL, error TEXT NOT NULL, created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL, pending_action TEXT NOT NULL DEFAULT '',
  action_body TEXT NOT NULL DEFAULT '{}');
CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, migration_id TEXT NOT NULL,
  at INTEGER NOT NULL, phase TEXT NOT NULL, kind TEXT NOT NULL, message TEXT NOT NULL);
INSERT INTO migrations VALUES ('m-old', 'app', '{}', 'sync', 'running', '{}', '{}', '[]', '',
  1, 2, '', '{}');
INSERT INTO events (migration_id, at, phase, kind, message) VALUES ('m-old', 1, 'sync', 'info', 'x');
)sql";
    ASSERT_EQ(sqlite3_exec(db, kOld, nullptr, nullptr, nullptr), SQLITE_OK);
    sqlite3_close(db);
  }
  for (int open = 0; open < 2; ++open) {  // migrated once, then current
    auto store = SqliteStateStore::Open(path);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    auto m = (*store)->Get("m-old");
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    EXPECT_EQ(m->phase, open == 0 ? "sync" : "validate");
    auto events = (*store)->Events("m-old");
    ASSERT_TRUE(events.ok());
    ASSERT_EQ(events->size(), 1u + open);
    EXPECT_EQ((*events)[0].owner, "");
    EXPECT_TRUE((*store)->ListFleetRuns().ok()) << "the fleet runs' table was added";
    EXPECT_TRUE((*store)->MigrationWithKey("f-1/app").ok()) << "the links gained their keys";
    auto l = (*store)->AcquireLease("m-old", "host:1", 60000);
    ASSERT_TRUE(l.ok()) << l.status().ToString();
    m->lease = *l;
    m->phase = "validate";
    EXPECT_TRUE((*store)->Update(*m).ok());
    EXPECT_TRUE(
        (*store)->AppendEvent("m-old", {0, 2, "validate", "info", "y", "host:1"}, l->token).ok());
  }
  (void)RemoveTree(*dir);
}

TEST(SqliteStateStore, ASecondProcessOnTheSameFileIsRefused) {
  auto dir = MakeTempDir("pgshift-lock");
  ASSERT_TRUE(dir.ok());
  const std::string path = *dir + "/state.db";
  auto store = SqliteStateStore::Open(path);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  // Another process: what a second pgshiftd does at start.
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto second = SqliteStateStore::Open(path);
    const bool refused =
        !second.ok() && second.status().code() == Code::kFailedPrecondition &&
        second.status().message().find("in use by another pgshiftd") != std::string::npos;
    _exit(refused ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "the second process opened a locked state file";
  // Once the first closes it, the file opens again.
  store->reset();
  EXPECT_TRUE(SqliteStateStore::Open(path).ok());
  (void)RemoveTree(*dir);
}

}  // namespace
}  // namespace pgshift
