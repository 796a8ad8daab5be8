#include "provider/local/local_env.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <regex>
#include <thread>

#include "common/clock.h"
#include "common/os.h"

namespace pgshift {
namespace {

ClusterSpec TargetClusterSpec(const MigrationSpec& spec) {
  return ClusterSpec{.data_dir = spec.target.data_dir,
                     .port = spec.target.port,
                     .bin_dir = spec.target.bin_dir,
                     .os_user = spec.target.os_user,
                     .settings = spec.target.settings};
}

// The target's login when the source conninfo names no user.
constexpr const char* kDefaultUser = "postgres";

// Stops a cluster that no longer carries traffic (a retired source, a
// discarded target) after lowering its CPU priority: on a shared host its
// shutdown checkpoint and backend exits otherwise take the CPU from the
// server that now carries the traffic (a 200 ms stall at 1000 tps measured).
Status StopGivingWay(LocalCluster& cluster) {
  auto lowered = cluster.LowerPriority();
  if (!lowered.ok()) spdlog::info("stopping at normal priority: {}", lowered.status().message());
  return cluster.Stop("fast");
}

}  // namespace

LocalEnv::LocalEnv(std::string migration_id, MigrationSpec spec, std::unique_ptr<Router> router,
                   ProcessRunner& runner, LocalEnvOptions options,
                   std::shared_ptr<const std::atomic<bool>> stop)
    : id_(std::move(migration_id)),
      spec_(std::move(spec)),
      router_(std::move(router)),
      runner_(runner),
      options_(options),
      credentials_(std::make_unique<ConninfoCredentials>(spec_.source_conninfo)),
      target_(TargetClusterSpec(spec_), runner, options_.cluster),
      fence_("migration " + id_, options_.fence),
      monitor_(checks::SyncMonitor::Options{
          .lag_threshold_bytes = static_cast<uint64_t>(spec_.options.lag_threshold_bytes),
          .lag_threshold_seconds = spec_.options.lag_threshold_seconds,
          .sustain_ms = spec_.options.sustain_ms}),
      factory_stop_(std::move(stop)) {
  // LocalEnvFactory::Make refuses a conninfo that does not resolve.
  if (auto t = ResolveConnTarget(spec_.source_conninfo); t.ok()) {
    source_ep_ = {t->Address(), t->port};
  }
}

LocalEnv::~LocalEnv() {
  RequestStop();
  if (parity_) {
    parity_->cancel = true;
    if (parity_->thread.joinable()) parity_->thread.join();
  }
}

ProviderCapabilities LocalEnv::Capabilities() const {
  // Logical slots are not synced to a PostgreSQL 15 standby.
  return ProviderCapabilities{.fence_exempts_held_sessions = true,
                              .source_host_access = true,
                              .basebackup_rate_limit = true,
                              .sessions_survive_promotion = true,
                              .promotes_within_hold = true,
                              .logical_slots_on_target = true,
                              .failover_slot_sync = false,
                              .reverse_replication = true};
}

Result<std::string> LocalEnv::SourceConninfo(const std::string& dbname) const {
  PGSHIFT_ASSIGN_OR_RETURN(Credentials creds, credentials_->Get());
  PGSHIFT_ASSIGN_OR_RETURN(std::string ci, WithCredentials(spec_.source_conninfo, creds));
  if (dbname.empty()) return ci;
  return WithConninfo(ci, {{"dbname", dbname}});
}

Result<std::string> LocalEnv::ReplicationConninfo() const {
  PGSHIFT_ASSIGN_OR_RETURN(Credentials creds, credentials_->Get());
  PGSHIFT_ASSIGN_OR_RETURN(std::string ci, spec_.ReplicationConninfo());
  return WithCredentials(ci, creds);
}

Result<std::string> LocalEnv::TargetConninfo(const std::string& dbname) const {
  PGSHIFT_ASSIGN_OR_RETURN(Credentials creds, credentials_->Get());
  PGSHIFT_ASSIGN_OR_RETURN(std::string ci, WithCredentials(spec_.source_conninfo, creds));
  return WithConninfo(ci, {{"host", kTargetHost},
                           {"hostaddr", kTargetHost},
                           {"port", std::to_string(spec_.target.port)},
                           {"dbname", dbname.empty() ? "postgres" : dbname},
                           {"user", creds.user.empty() ? kDefaultUser : creds.user},
                           {"application_name", "pgshiftd"}});
}

bool LocalEnv::SourceUp() const {
  auto ci = SourceConninfo();
  if (!ci.ok()) return false;
  auto probe = WithConninfo(*ci, {{"connect_timeout", std::to_string(options_.connect_timeout_s)}});
  return probe.ok() && PQping(probe->c_str()) == PQPING_OK;
}

Result<std::unique_ptr<PgConn>> LocalEnv::OpenSession(const std::string& conninfo) const {
  PGSHIFT_ASSIGN_OR_RETURN(std::string named,
                           WithConninfo(conninfo, {{"application_name", "pgshiftd"}}));
  PGSHIFT_ASSIGN_OR_RETURN(std::string ci, WithSessionTimeouts(named, options_.session));
  return PgConn::Connect(ci, options_.connect_timeout_s);
}

bool LocalEnv::StopRequested() const {
  return stop_requested_ || (factory_stop_ && *factory_stop_);
}

Result<PgConn*> LocalEnv::Source() {
  if (!source_ || !source_->Healthy()) {
    source_.reset();
    PGSHIFT_ASSIGN_OR_RETURN(std::string ci, SourceConninfo());
    auto c = OpenSession(ci);
    if (!c.ok()) return c.status().Wrap("source");
    source_ = std::move(c).value();
  }
  return source_.get();
}

Result<PgConn*> LocalEnv::Target() {
  if (!target_conn_ || !target_conn_->Healthy()) {
    target_conn_.reset();
    PGSHIFT_ASSIGN_OR_RETURN(std::string ci, TargetConninfo());
    auto c = OpenSession(ci);
    if (!c.ok()) return c.status().Wrap("target");
    target_conn_ = std::move(c).value();
  }
  return target_conn_.get();
}

Result<SourceInfo> LocalEnv::InspectSource() {
  return OnSource<SourceInfo>([](PgConn& c) -> Result<SourceInfo> {
    PGSHIFT_ASSIGN_OR_RETURN(Rows r,
                             c.Query("select current_setting('server_version_num')::int as v, "
                                     "current_setting('wal_level') as wl, "
                                     "current_setting('max_wal_senders')::int as mws, "
                                     "current_setting('max_replication_slots')::int as mrs, "
                                     "(select count(*) from pg_replication_slots) as used, "
                                     "pg_is_in_recovery() as rec"));
    return SourceInfo{static_cast<int>(r.Int(0, "v")),    r.Str(0, "wl"),
                      static_cast<int>(r.Int(0, "mws")),  static_cast<int>(r.Int(0, "mrs")),
                      static_cast<int>(r.Int(0, "used")), r.Bool(0, "rec")};
  });
}

Status LocalEnv::EnsurePhysicalSlot(const std::string& slot) {
  return OnSource<bool>([&](PgConn& c) -> Result<bool> {
           PGSHIFT_ASSIGN_OR_RETURN(
               Rows r,
               c.Query("select slot_type from pg_replication_slots where slot_name = $1", {slot}));
           if (!r.empty()) {
             if (r.Str(0, "slot_type") != "physical") {
               return FailedPrecondition("slot " + slot +
                                         " exists on the source but is not physical");
             }
             return true;
           }
           PGSHIFT_RETURN_IF_ERROR(
               c.Exec("select pg_create_physical_replication_slot($1, true)", {slot}));
           return true;
         })
      .status();
}

Status LocalEnv::DropSlot(const std::string& slot) {
  if (target_.Exists() && !SourceUp()) {
    // A retired source has no slots left to hold WAL.
    return Status::OK();
  }
  const int64_t deadline = MonotonicMs() + options_.slot_release_timeout_ms;
  while (true) {
    auto r = OnSource<Rows>([&](PgConn& c) {
      return c.Query("select active_pid from pg_replication_slots where slot_name = $1", {slot});
    });
    PGSHIFT_RETURN_IF_ERROR(r.status());
    if (r->empty()) return Status::OK();
    if (r->Get(0, "active_pid")) {
      PGSHIFT_RETURN_IF_ERROR(
          source_->Exec("select pg_terminate_backend($1::int)", {r->Str(0, "active_pid")}));
    } else {
      Status st = source_->Exec("select pg_drop_replication_slot($1)", {slot});
      if (st.ok()) return st;
    }
    if (MonotonicMs() > deadline) {
      return Timeout("replication slot " + slot + " stayed in use on the source for " +
                     std::to_string(options_.slot_release_timeout_ms) + " ms");
    }
    DefaultClock().SleepMs(options_.slot_release_poll_ms);
  }
}

Status LocalEnv::DropInactiveSlot(const std::string& slot) {
  return OnSource<bool>([&](PgConn& c) -> Result<bool> {
           PGSHIFT_ASSIGN_OR_RETURN(
               Rows r,
               c.Query("select active from pg_replication_slots where slot_name = $1", {slot}));
           if (r.empty()) return NotFound("no replication slot '" + slot + "' on the source");
           if (r.Bool(0, "active")) {
             return FailedPrecondition("slot '" + slot +
                                       "' is in use by a consumer; stop it first");
           }
           PGSHIFT_RETURN_IF_ERROR(c.Exec("select pg_drop_replication_slot($1)", {slot}));
           return true;
         })
      .status();
}

Result<ReplicationLag> LocalEnv::Lag(const std::string& slot) {
  auto src = OnSource<Rows>([&](PgConn& c) {
    return c.Query(
        "select pg_current_wal_lsn()::text as cur, coalesce(extract(epoch from ("
        "select r.replay_lag from pg_stat_replication r join pg_replication_slots s "
        "on s.active_pid = r.pid where s.slot_name = $1)), 0) as lag_s, "
        "(select active from pg_replication_slots where slot_name = $1) as active",
        {slot});
  });
  PGSHIFT_RETURN_IF_ERROR(src.status());
  PGSHIFT_RETURN_IF_ERROR(GuardTablespaces());
  PGSHIFT_ASSIGN_OR_RETURN(PgConn * t, Target());
  auto rep = t->Query("select coalesce(pg_last_wal_replay_lsn(), '0/0')::text as rep");
  if (!rep.ok()) {
    target_conn_.reset();
    return rep.status().Wrap("target");
  }
  ReplicationLag lag;
  PGSHIFT_ASSIGN_OR_RETURN(lag.source_lsn, Lsn::Parse(src->Str(0, "cur")));
  PGSHIFT_ASSIGN_OR_RETURN(lag.replay_lsn, Lsn::Parse(rep->Str(0, "rep")));
  lag.bytes = LsnDiff(lag.source_lsn, lag.replay_lsn);
  // Feed the validation suite's monitor from the same moment (slot health,
  // WAL rate vs replay rate); its failure must not stop the gate.
  if (!monitor_.Sample(*source_, *t, MonotonicMs()).ok()) monitor_.MarkGap();
  lag.seconds = src->Double(0, "lag_s");
  if (!src->Bool(0, "active")) {
    // Not streaming: the reported lag would be stale; count it as unbounded.
    lag.seconds = 1e9;
  }
  return lag;
}

Status LocalEnv::RetireSource() {
  if (!SourceUp()) return Status::OK();
  PGSHIFT_ASSIGN_OR_RETURN(PgConn * c, Source());
  // Only the server pgshiftd talks to is stopped, not another cluster whose
  // data directory happens to have the same path here.
  auto local = LocalDataDirectory(*c);
  if (!local.ok()) return local.status().Wrap("stop the source by hand to retire it");
  const std::string dir = *local;
  // pg_ctl runs as the data directory's owner, whoever runs the target.
  PGSHIFT_ASSIGN_OR_RETURN(const std::string owner, OwnerName(dir));
  // Sessions still open on the source (a router's old connections waiting to
  // be closed) end one at a time: a fast shutdown ends them all at once, and
  // that many backend exits together stall a shared host for ~200 ms.
  PGSHIFT_ASSIGN_OR_RETURN(
      Rows left, c->Query("select pid from pg_stat_activity where backend_type = 'client backend' "
                          "and pid <> pg_backend_pid()"));
  const int64_t spacing =
      left.empty()
          ? 0
          : std::clamp<int64_t>(options_.retire_budget_ms / static_cast<int64_t>(left.size()),
                                options_.retire_min_spacing_ms, options_.retire_spacing_ms);
  for (size_t i = 0; i < left.size(); ++i) {
    (void)c->Query("select pg_terminate_backend($1::int)", {left.Str(i, "pid")});
    DefaultClock().SleepMs(spacing);
  }
  source_.reset();
  ClusterSpec cs{
      .data_dir = dir, .port = source_ep_.port, .bin_dir = spec_.target.bin_dir, .os_user = owner};
  LocalCluster source(cs, runner_, options_.cluster);
  return StopGivingWay(source);
}

Status LocalEnv::CreateReplica(const std::string& slot, std::function<void(int)> progress) {
  const std::string& dir = spec_.target.data_dir;
  if (target_.Exists()) {
    auto marker = ReadFile(dir + kMarkerFile);
    if (!marker.ok() || *marker != id_) {
      return FailedPrecondition("target.data_dir " + dir +
                                " already holds a PostgreSQL cluster that this migration did not "
                                "create; choose an empty directory");
    }
    return target_.Start();
  }
  if (StopRequested()) return Aborted("not building the replica: pgshiftd is stopping");
  const std::string partial = dir + ".partial";
  PGSHIFT_RETURN_IF_ERROR(RemoveTree(partial));
  PGSHIFT_RETURN_IF_ERROR(RemoveTree(TablespaceDir()));
  PGSHIFT_RETURN_IF_ERROR(
      MakeDirOwnedBy(std::filesystem::path(dir).parent_path(), spec_.target.os_user, 0755));
  PGSHIFT_ASSIGN_OR_RETURN(std::vector<std::string> mappings, TablespaceMappings());
  if (!mappings.empty()) {
    PGSHIFT_RETURN_IF_ERROR(MakeDirOwnedBy(TablespaceDir(), spec_.target.os_user, 0700));
  }
  static const std::regex kPct(R"(\((\d+)%\))");
  std::string carry;
  auto on_output = [&](const std::string& chunk) {
    carry += chunk;
    int pct = -1;
    for (std::sregex_iterator it(carry.begin(), carry.end(), kPct), end; it != end; ++it) {
      pct = std::stoi((*it)[1]);
    }
    if (pct >= 0) progress(pct);
    if (carry.size() > 256) carry.erase(0, carry.size() - 64);
  };
  PGSHIFT_ASSIGN_OR_RETURN(std::string source_ci, ReplicationConninfo());
  std::vector<std::string> argv = {target_.Bin("pg_basebackup"),
                                   "-D",
                                   partial,
                                   "-d",
                                   source_ci,
                                   "-X",
                                   "stream",
                                   "-S",
                                   slot,
                                   "-R",
                                   "-P",
                                   "-c",
                                   "fast"};
  argv.insert(argv.end(), mappings.begin(), mappings.end());
  if (spec_.options.basebackup_max_rate_kbps > 0) {
    argv.push_back("--max-rate=" + std::to_string(spec_.options.basebackup_max_rate_kbps) + "k");
  }
  // pg_basebackup has no deadline (a large or rate-limited copy takes hours):
  // a stop request kills it instead, and the next attempt discards `partial`.
  PGSHIFT_RETURN_IF_ERROR(RunChecked(runner_, {.argv = argv,
                                               .run_as = spec_.target.os_user,
                                               .on_output = on_output,
                                               .stop = [this] { return StopRequested(); },
                                               .kill_group_on_exit = true})
                              .status()
                              .Wrap("base backup from the source into " + partial));
  std::string auto_conf = partial + "/postgresql.auto.conf";
  PGSHIFT_ASSIGN_OR_RETURN(std::string conf, ReadFile(auto_conf));
  conf += "\n# pgshift target settings\nport = " + std::to_string(spec_.target.port) +
          "\nlisten_addresses = '" + kTargetHost + "'\nunix_socket_directories = '" +
          std::filesystem::path(dir).parent_path().string() + "'\n" + kInPlaceTablespaces +
          " = 'on'\n";
  for (const auto& [k, v] : spec_.target.settings) conf += k + " = '" + v + "'\n";
  PGSHIFT_RETURN_IF_ERROR(WriteFileAtomic(auto_conf, conf));
  PGSHIFT_RETURN_IF_ERROR(WriteFileAtomic(partial + kMarkerFile, id_));
  PGSHIFT_RETURN_IF_ERROR(ChownRecursive(partial, spec_.target.os_user));
  std::error_code ec;
  std::filesystem::rename(partial, dir, ec);
  if (ec) return Internal("cannot move the finished base backup into " + dir + ": " + ec.message());
  progress(100);
  return target_.Start();
}

Result<TargetState> LocalEnv::InspectTarget() {
  TargetState t;
  t.exists = target_.Exists();
  if (!t.exists) return t;
  auto conn = Target();
  if (!conn.ok()) {
    t.running = target_.Running();
    if (t.running) return conn.status();  // up but not answering: retry later
    return t;
  }
  t.running = true;
  auto r = (*conn)->Query(
      std::string("select pg_is_in_recovery() as rec, coalesce(pg_last_wal_replay_lsn(), "
                  "'0/0')::text as rep, case when pg_is_in_recovery() then (select timeline_id "
                  "from pg_control_checkpoint()) else ") +
      kPrimaryTimeline + " end as tli");
  if (!r.ok()) {
    target_conn_.reset();
    return r.status().Wrap("target");
  }
  t.in_recovery = r->Bool(0, "rec");
  PGSHIFT_ASSIGN_OR_RETURN(t.replay_lsn, Lsn::Parse(r->Str(0, "rep")));
  t.timeline = static_cast<int>(r->Int(0, "tli"));
  return t;
}

Status LocalEnv::StopTarget() {
  target_conn_.reset();
  if (!target_.Exists()) return Status::OK();
  return StopGivingWay(target_);
}

Result<std::unique_ptr<MigrationEnv>> LocalEnvFactory::Make(const std::string& migration_id,
                                                            const MigrationSpec& spec) {
  // Runs when a migration is created: a source conninfo that does not name
  // exactly one server is refused then, not at the fence.
  if (auto t = ResolveConnTarget(spec.source_conninfo); !t.ok()) {
    return InvalidArgument("source.conninfo: " + t.status().message());
  }
  if (!spec.replication_conninfo.empty()) {
    PGSHIFT_ASSIGN_OR_RETURN(std::string ci, spec.ReplicationConninfo());
    if (auto t = ResolveConnTarget(ci); !t.ok()) {
      return InvalidArgument("source.replication_conninfo: " + t.status().message());
    }
  }
  // <data_dir>.partial and .tblspc are named after it: "/srv/new/" would put
  // them inside the target's own directory.
  const std::string& dir = spec.target.data_dir;
  std::string plain = std::filesystem::path(dir).lexically_normal().string();
  while (plain.size() > 1 && plain.back() == '/') plain.pop_back();
  if (plain != dir) {
    return InvalidArgument("target.data_dir '" + dir +
                           "' must be a plain absolute path, without a trailing '/', '.', '..' "
                           "or '//': " +
                           plain);
  }
  PGSHIFT_ASSIGN_OR_RETURN(auto router, MakeRouter(spec.router));
  return std::unique_ptr<MigrationEnv>(
      new LocalEnv(migration_id, spec, std::move(router), DefaultRunner(), options_, stop_));
}

}  // namespace pgshift
