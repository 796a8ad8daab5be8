// The state store's disk fills up under a running migration: the engine
// stops moving it on rather than lose its state, and goes on from where it
// stood once space returns. A real SqliteStateStore on a small tmpfs that
// the test fills (mounting needs root, as the integration tests run here),
// driven in-process against FakeWorld.
#include <fcntl.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/os.h"
#include "workflow/engine_test_util.h"

namespace pgshift {
namespace {

using json = nlohmann::json;
using testing_util::AllMainPhases;
using testing_util::FakeClock;
using testing_util::Spec;

constexpr const char* kTmpfsOptions = "size=4m";

// Writes `path` until the file system has no byte left for it.
Status FillUp(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) return Internal("open " + path + ": " + std::strerror(errno));
  std::string chunk(64 * 1024, 'x');
  for (size_t n = chunk.size(); n > 0; n /= 2) {
    while (::write(fd, chunk.data(), n) == static_cast<ssize_t>(n)) {
    }
  }
  const int err = errno;
  ::close(fd);
  if (err != ENOSPC) return Internal("filling " + path + ": " + std::strerror(err));
  return Status::OK();
}

class DiskFullTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = MakeTempDir("pgshift-disk-full");
    ASSERT_TRUE(dir.ok()) << dir.status().ToString();
    dir_ = *dir;
    if (::mount("tmpfs", dir_.c_str(), "tmpfs", 0, kTmpfsOptions) != 0) {
      GTEST_SKIP() << "cannot mount a tmpfs on " << dir_ << " (" << std::strerror(errno)
                   << "): this test needs root with CAP_SYS_ADMIN";
    }
    mounted_ = true;
    OpenStore();
  }
  void TearDown() override {
    engine_.reset();
    store_.reset();
    if (mounted_) {
      EXPECT_EQ(::umount2(dir_.c_str(), MNT_DETACH), 0) << std::strerror(errno);
    }
    (void)RemoveTree(dir_);
  }
  // Opens the state file as a restarted pgshiftd would, with a new engine.
  void OpenStore() {
    engine_.reset();
    store_.reset();
    auto store = SqliteStateStore::Open(dir_ + "/state.db");
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(store).value();
    engine_ = std::make_unique<Engine>(*store_, factory_, clock_);
    engine_->set_autostart(false);
  }
  std::string Filler() const { return dir_ + "/filler"; }

  std::string dir_;
  bool mounted_ = false;
  FakeClock clock_;
  std::shared_ptr<FakeWorld> world_ = std::make_shared<FakeWorld>();
  FakeEnvFactory factory_{world_};
  std::unique_ptr<SqliteStateStore> store_;
  std::unique_ptr<Engine> engine_;
};

TEST_F(DiskFullTest, TheEngineRefusesToAdvanceOnAFullDiskAndResumesWhenSpaceReturns) {
  auto created = engine_->Create(Spec(false, true));
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  const std::string id = (*created)["id"];
  ASSERT_TRUE(engine_->RunUntilSettled(id).ok());
  ASSERT_EQ(engine_->Get(id)->at("phase"), "ready");
  ASSERT_TRUE(engine_->Act(id, "cutover", json::object()).ok());
  const size_t events_before = engine_->Events(id)->size();

  ASSERT_TRUE(FillUp(Filler()).ok());
  // Every step's commit fails: the migration stays where it was recorded,
  // with the operator's request still queued, and nothing of the cutover
  // happens (ready's first commit, its lag sample, precedes the hold).
  EXPECT_EQ(engine_->RunUntilSettled(id, 20).code(), Code::kTimeout);
  json m = engine_->Get(id).value();
  EXPECT_EQ(m["phase"], "ready");
  EXPECT_EQ(m["pending_actions"], (json{"cutover"}));
  EXPECT_EQ(engine_->Events(id)->size(), events_before);
  EXPECT_FALSE(world_->held);
  EXPECT_FALSE(world_->fenced);
  // An operator's request is refused with the store's reason, not half-taken.
  auto refused = engine_->Act(id, "rollback", json::object());
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("full"), std::string::npos)
      << refused.status().ToString();
  EXPECT_EQ(engine_->Get(id)->at("pending_actions"), (json{"cutover"}));

  // pgshiftd restarted on the full disk reads its state and still does not move on.
  OpenStore();
  EXPECT_EQ(engine_->RunUntilSettled(id, 20).code(), Code::kTimeout);
  EXPECT_EQ(engine_->Get(id)->at("phase"), "ready");
  EXPECT_FALSE(world_->held);

  ASSERT_EQ(::unlink(Filler().c_str()), 0);
  ASSERT_TRUE(engine_->RunUntilSettled(id).ok());
  // Durable: a fresh open of the file shows the whole migration, once.
  OpenStore();
  m = engine_->Get(id).value();
  EXPECT_EQ(m["phase"], "finalized");
  EXPECT_TRUE(m["pending_actions"].empty());
  std::vector<std::string> phases;
  const json events = engine_->Events(id).value();
  for (const auto& e : events) {
    if (phases.empty() || phases.back() != e["phase"]) phases.push_back(e["phase"]);
  }
  EXPECT_EQ(phases, AllMainPhases());
  EXPECT_EQ(world_->timeline, 2) << "promoted exactly once";
  EXPECT_EQ(world_->routed, world_->target_ep);
  EXPECT_TRUE(world_->retired);
}

// An operator's request applied while the disk is full: its commit (the
// record, its event and the request's removal in one transaction) fails at
// COMMIT. The request stays queued, the record unchanged even as this
// connection reads it, and both go on once space returns.
TEST_F(DiskFullTest, ARequestWhoseCommitFailsOnAFullDiskStaysQueued) {
  world_->preflight.push_back({.id = "unlogged_tables",
                               .severity = checks::Severity::kBlocking,
                               .subject = "public.cache",
                               .message = "unlogged table with rows"});
  auto created = engine_->Create(Spec(true, true));
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  const std::string id = (*created)["id"];
  ASSERT_TRUE(engine_->RunUntilSettled(id).ok());
  ASSERT_EQ(engine_->Get(id)->at("state"), "blocked");
  ASSERT_TRUE(
      engine_->Act(id, "override", {{"finding", "unlogged_tables"}, {"reason", "rebuilt"}}).ok());

  ASSERT_TRUE(FillUp(Filler()).ok());
  EXPECT_EQ(engine_->RunUntilSettled(id, 20).code(), Code::kTimeout);
  json m = engine_->Get(id).value();
  EXPECT_EQ(m["state"], "blocked");
  EXPECT_EQ(m["phase"], "preflight");
  EXPECT_EQ(m["pending_actions"], (json{"override"}));
  EXPECT_TRUE(world_->slots.empty()) << "nothing is built on an unrecorded override";

  ASSERT_EQ(::unlink(Filler().c_str()), 0);
  ASSERT_TRUE(engine_->RunUntilSettled(id).ok());
  OpenStore();
  m = engine_->Get(id).value();
  EXPECT_EQ(m["phase"], "finalized");
  EXPECT_TRUE(m["pending_actions"].empty());
}

}  // namespace
}  // namespace pgshift
