#include "testing/test_replica.h"

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "common/lsn.h"
#include "common/os.h"
#include "common/process.h"

namespace pgshift::checks::testing {

Result<std::unique_ptr<TestReplica>> TestReplica::Create(pgshift::testing::TestCluster& primary,
                                                         const Options& opts) {
  auto r = std::unique_ptr<TestReplica>(new TestReplica());
  PGSHIFT_ASSIGN_OR_RETURN(r->dir_, pgshift::testing::MakePgOwnedTempDir("pgshift-replica"));
  PGSHIFT_ASSIGN_OR_RETURN(int port, FreePort());
  r->slot_ = "replica_" + std::to_string(port);
  PGSHIFT_RETURN_IF_ERROR(
      primary.Psql("select pg_create_physical_replication_slot('" + r->slot_ + "')").status());
  ClusterSpec spec{.data_dir = r->dir_ + "/data", .port = port, .bin_dir = opts.bin_dir};
  r->cluster_ = std::make_unique<LocalCluster>(spec);
  PGSHIFT_RETURN_IF_ERROR(
      RunChecked(DefaultRunner(),
                 {.argv = {r->cluster_->Bin("pg_basebackup"), "-D", spec.data_dir, "-h",
                           "127.0.0.1", "-p", std::to_string(primary.port()), "-U", "postgres",
                           "-X", "stream", "-S", r->slot_, "-R", "-c", "fast"},
                  .run_as = "postgres",
                  .timeout_ms = 180000})
          .status()
          .Wrap("pg_basebackup"));
  std::map<std::string, std::string> settings = {
      {"port", std::to_string(port)}, {"unix_socket_directories", "'" + r->dir_ + "'"}};
  for (const auto& [k, v] : opts.settings) settings[k] = v;
  PGSHIFT_RETURN_IF_ERROR(r->cluster_->AppendSettings(settings));
  if (opts.start) PGSHIFT_RETURN_IF_ERROR(r->cluster_->Start());
  return r;
}

TestReplica::~TestReplica() {
  if (cluster_) (void)cluster_->Stop("immediate");
  if (!KeepTestDirs() && !dir_.empty()) (void)RemoveTree(dir_);
}

Status TestReplica::WaitCaughtUp(const std::string& primary_conninfo, int timeout_s) {
  PGSHIFT_ASSIGN_OR_RETURN(auto primary, PgConn::Connect(primary_conninfo));
  PGSHIFT_ASSIGN_OR_RETURN(Rows cur, primary->Query("select pg_current_wal_lsn()::text as l"));
  PGSHIFT_ASSIGN_OR_RETURN(Lsn want, Lsn::Parse(cur.Str(0, "l")));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  std::string last = "(not connected)";
  while (std::chrono::steady_clock::now() < deadline) {
    auto replica = PgConn::Connect(Conninfo());
    if (replica.ok()) {
      auto rows = (*replica)->Query("select pg_last_wal_replay_lsn()::text as l");
      if (rows.ok() && rows->Get(0, "l")) {
        auto got = Lsn::Parse(rows->Str(0, "l"));
        if (got.ok() && *got >= want) return Status::OK();
        last = rows->Str(0, "l");
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return Timeout("replica did not replay up to " + want.ToString() + " within " +
                 std::to_string(timeout_s) + " s (at " + last + ")");
}

Result<std::unique_ptr<InstallationCopy>> InstallationCopy::Create(
    const std::vector<std::string>& remove_extensions) {
  namespace fs = std::filesystem;
  const fs::path bin = DefaultPgBinDir();
  PGSHIFT_ASSIGN_OR_RETURN(std::string share_out,
                           RunChecked(DefaultRunner(), {.argv = {(bin / "pg_config").string(),
                                                                 "--sharedir"}}));
  while (!share_out.empty() && (share_out.back() == '\n' || share_out.back() == ' ')) {
    share_out.pop_back();
  }
  // Debian: <prefix>/lib/postgresql/N/{bin,lib} and <prefix>/share/postgresql/N.
  const fs::path version_dir = bin.parent_path();
  const fs::path prefix = version_dir.parent_path().parent_path().parent_path();
  const fs::path share = share_out;
  const fs::path rel_version = fs::relative(version_dir, prefix);
  const fs::path rel_share = fs::relative(share, prefix);
  if (rel_version.empty() || rel_share.empty() || rel_share.string().rfind("..", 0) == 0) {
    return FailedPrecondition("unexpected PostgreSQL layout: bin " + bin.string() + ", share " +
                              share.string());
  }
  auto copy = std::unique_ptr<InstallationCopy>(new InstallationCopy());
  PGSHIFT_ASSIGN_OR_RETURN(copy->root_, pgshift::testing::MakePgOwnedTempDir("pgshift-install"));
  const fs::path root = copy->root_;
  for (const auto& [from, rel] : {std::pair{version_dir, rel_version}, {share, rel_share}}) {
    fs::create_directories((root / rel).parent_path());
    PGSHIFT_RETURN_IF_ERROR(RunChecked(DefaultRunner(), {.argv = {"cp", "-a", from.string(),
                                                                  (root / rel).string()}})
                                .status());
  }
  PGSHIFT_RETURN_IF_ERROR(RunChecked(DefaultRunner(), {.argv = {"chmod", "-R", "a+rX",
                                                                copy->root_}})
                              .status());
  for (const std::string& ext : remove_extensions) {
    std::error_code ec;
    fs::remove(root / rel_share / "extension" / (ext + ".control"), ec);
    if (ec) return Internal("cannot remove " + ext + ".control from the copy: " + ec.message());
  }
  copy->bin_dir_ = (root / rel_version / "bin").string();
  return copy;
}

InstallationCopy::~InstallationCopy() {
  if (!root_.empty()) (void)RemoveTree(root_);
}

}  // namespace pgshift::checks::testing
