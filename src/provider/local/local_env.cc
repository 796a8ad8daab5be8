#include "provider/local/local_env.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

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

constexpr const char* kMarkerFile = "/pgshift.migration";

void SleepMs(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

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
                   ProcessRunner& runner)
    : id_(std::move(migration_id)),
      spec_(std::move(spec)),
      router_(std::move(router)),
      runner_(runner),
      target_(TargetClusterSpec(spec_), runner),
      fence_("migration " + id_),
      monitor_(checks::SyncMonitor::Options{
          .lag_threshold_bytes = static_cast<uint64_t>(spec_.options.lag_threshold_bytes),
          .lag_threshold_seconds = spec_.options.lag_threshold_seconds,
          .sustain_ms = spec_.options.sustain_ms}) {
  auto kv = ParseConninfo(spec_.source_conninfo);
  if (kv.ok()) {
    source_ep_.host = kv->count("host") ? kv->at("host") : "localhost";
    source_ep_.port = kv->count("port") ? std::stoi(kv->at("port")) : 5432;
    source_user_ = kv->count("user") ? kv->at("user") : "postgres";
  }
}

std::string LocalEnv::TargetConninfo() const {
  auto c = WithConninfo(spec_.source_conninfo, {{"host", "127.0.0.1"},
                                                {"hostaddr", "127.0.0.1"},
                                                {"port", std::to_string(spec_.target.port)},
                                                {"dbname", "postgres"},
                                                {"user", source_user_},
                                                {"application_name", "pgshiftd"}});
  return c.ok() ? *c : "";
}

Result<PgConn*> LocalEnv::Source() {
  if (!source_ || !source_->Healthy()) {
    source_.reset();
    PGSHIFT_ASSIGN_OR_RETURN(
        std::string ci, WithConninfo(spec_.source_conninfo, {{"application_name", "pgshiftd"}}));
    auto c = PgConn::Connect(ci);
    if (!c.ok()) return c.status().Wrap("source");
    source_ = std::move(c).value();
  }
  return source_.get();
}

Result<PgConn*> LocalEnv::Target() {
  if (!target_conn_ || !target_conn_->Healthy()) {
    target_conn_.reset();
    auto c = PgConn::Connect(TargetConninfo(), 5);
    if (!c.ok()) return c.status().Wrap("target");
    target_conn_ = std::move(c).value();
  }
  return target_conn_.get();
}

template <typename T>
Result<T> LocalEnv::OnSource(const std::function<Result<T>(PgConn&)>& fn) {
  PGSHIFT_ASSIGN_OR_RETURN(PgConn * c, Source());
  auto r = fn(*c);
  if (!r.ok() && !c->Healthy()) source_.reset();
  return r;
}
// local_cdc.cc uses this one; an optimized build may inline every use here.
template Result<std::vector<LogicalSlot>> LocalEnv::OnSource(
    const std::function<Result<std::vector<LogicalSlot>>(PgConn&)>& fn);

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
  if (!PortOpen(source_ep_.host, source_ep_.port) && target_.Exists()) {
    // A retired source has no slots left to hold WAL.
    return Status::OK();
  }
  const int64_t deadline = MonotonicMs() + 15000;
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
      return Timeout("replication slot " + slot + " stayed in use on the source for 15 s");
    }
    SleepMs(100);
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

Result<FenceResult> LocalEnv::FenceSource(const HeldBackends& held) {
  PGSHIFT_ASSIGN_OR_RETURN(PgConn * c, Source());
  FenceExemption exempt;
  if (held.server == source_ep_) exempt = {.database = held.database, .pids = held.pids};
  PGSHIFT_ASSIGN_OR_RETURN(FenceOutcome out, fence_.Fence(*c, exempt));
  return FenceResult{.terminated = out.terminated, .exempted = out.exempted};
}

Status LocalEnv::UnfenceSource() {
  if (!PortOpen(source_ep_.host, source_ep_.port)) {
    return Unavailable("the source " + source_ep_.ToString() + " is not accepting connections; " +
                       "it must be up to be unfenced");
  }
  PGSHIFT_ASSIGN_OR_RETURN(PgConn * c, Source());
  return fence_.Unfence(*c);
}

Result<Lsn> LocalEnv::WriteFinalMarker(const std::string& text) {
  PGSHIFT_ASSIGN_OR_RETURN(PgConn * c, Source());
  // A transactional message commits, and a synchronous commit flushes the WAL
  // at once instead of at the WAL writer's next cycle (up to 200 ms of held
  // traffic). Its end LSN follows every transaction committed before the fence.
  // One round trip: the setting is in force before the statement commits.
  PGSHIFT_ASSIGN_OR_RETURN(
      Rows r, c->Query("select pg_logical_emit_message(true, 'pgshift', $1)::text as lsn "
                       "from (select set_config('synchronous_commit', 'on', false)) s",
                       {text}));
  PGSHIFT_ASSIGN_OR_RETURN(Lsn lsn, Lsn::Parse(r.Str(0, "lsn")));
  const int64_t deadline = MonotonicMs() + 10000;
  while (true) {
    PGSHIFT_ASSIGN_OR_RETURN(
        Rows f,
        c->Query("select pg_current_wal_flush_lsn() >= $1::pg_lsn as flushed", {lsn.ToString()}));
    if (f.Bool(0, "flushed")) return lsn;
    if (MonotonicMs() > deadline) return Timeout("the source did not flush its final WAL record");
    SleepMs(1);
  }
}

Status LocalEnv::RetireSource() {
  if (!PortOpen(source_ep_.host, source_ep_.port)) return Status::OK();
  PGSHIFT_ASSIGN_OR_RETURN(PgConn * c, Source());
  PGSHIFT_ASSIGN_OR_RETURN(Rows r, c->Query("select current_setting('data_directory') as d"));
  const std::string dir = r.Str(0, "d");
  struct stat st {};
  if (stat(dir.c_str(), &st) != 0) {
    return FailedPrecondition("the source's data directory " + dir +
                              " is not on this host; stop the source by hand to retire it");
  }
  // Sessions still open on the source (a router's old connections waiting to
  // be closed) end one at a time: a fast shutdown ends them all at once, and
  // that many backend exits together stall a shared host for ~200 ms. 100 ms
  // apart (as pgshift-proxy's retire_interval_ms) for a few, at most ~10 s in all.
  PGSHIFT_ASSIGN_OR_RETURN(
      Rows left, c->Query("select pid from pg_stat_activity where backend_type = 'client backend' "
                          "and pid <> pg_backend_pid()"));
  const int64_t spacing = left.empty() ? 0 : std::clamp<int64_t>(10000 / left.size(), 2, 100);
  for (size_t i = 0; i < left.size(); ++i) {
    (void)c->Query("select pg_terminate_backend($1::int)", {left.Str(i, "pid")});
    SleepMs(spacing);
  }
  source_.reset();
  std::string owner = spec_.target.os_user;
  ClusterSpec cs{
      .data_dir = dir, .port = source_ep_.port, .bin_dir = spec_.target.bin_dir, .os_user = owner};
  LocalCluster source(cs, runner_);
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
  const std::string partial = dir + ".partial";
  PGSHIFT_RETURN_IF_ERROR(RemoveTree(partial));
  PGSHIFT_RETURN_IF_ERROR(
      MakeDirOwnedBy(std::filesystem::path(dir).parent_path(), spec_.target.os_user, 0755));
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
  std::vector<std::string> argv = {target_.Bin("pg_basebackup"),
                                   "-D",
                                   partial,
                                   "-d",
                                   spec_.source_conninfo,
                                   "-X",
                                   "stream",
                                   "-S",
                                   slot,
                                   "-R",
                                   "-P",
                                   "-c",
                                   "fast"};
  if (spec_.options.basebackup_max_rate_kbps > 0) {
    argv.push_back("--max-rate=" + std::to_string(spec_.options.basebackup_max_rate_kbps) + "k");
  }
  PGSHIFT_RETURN_IF_ERROR(
      RunChecked(runner_, {.argv = argv, .run_as = spec_.target.os_user, .on_output = on_output})
          .status()
          .Wrap("base backup from the source"));
  std::string auto_conf = partial + "/postgresql.auto.conf";
  PGSHIFT_ASSIGN_OR_RETURN(std::string conf, ReadFile(auto_conf));
  conf += "\n# pgshift target settings\nport = " + std::to_string(spec_.target.port) +
          "\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '" +
          std::filesystem::path(dir).parent_path().string() + "'\n";
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

namespace {

// The timeline a primary writes on: the first 8 hex digits of its current WAL
// file's name (an error during recovery, so always behind a recovery check).
constexpr const char* kPrimaryTimeline =
    "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int";

}  // namespace

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

Result<int> LocalEnv::PromoteTarget() {
  PGSHIFT_ASSIGN_OR_RETURN(TargetState t, InspectTarget());
  if (!t.running) return FailedPrecondition("the target is not running; it cannot be promoted");
  if (t.in_recovery) {
    // pg_promote(wait => true) checks only every 100 ms; traffic is held, so
    // ask without waiting and watch for the end of recovery ourselves.
    PGSHIFT_ASSIGN_OR_RETURN(PgConn * c, Target());
    PGSHIFT_RETURN_IF_ERROR(c->Exec("select pg_promote(false)"));
    const int64_t deadline = MonotonicMs() + 60000;
    // Polled every 2 ms while the target promotes: no pg_control read (as
    // InspectTarget does in recovery), and the new timeline in the same answer.
    const std::string poll =
        std::string("select pg_is_in_recovery() as rec, case when not pg_is_in_recovery() then ") +
        kPrimaryTimeline + " end as tli";
    while (true) {
      PGSHIFT_ASSIGN_OR_RETURN(Rows r, c->Query(poll));
      if (!r.Bool(0, "rec")) {
        t.in_recovery = false;
        t.timeline = static_cast<int>(r.Int(0, "tli"));
        break;
      }
      if (MonotonicMs() > deadline)
        return Timeout("the target did not finish promotion within 60 s");
      SleepMs(2);
    }
  }
  return t.timeline;
}

Status LocalEnv::ProbeTargetWrite() {
  PGSHIFT_ASSIGN_OR_RETURN(PgConn * c, Target());
  Status st = c->Exec("select txid_current()");
  if (!st.ok() && !c->Healthy()) target_conn_.reset();
  return st.Wrap("write probe on the target");
}

Result<std::unique_ptr<MigrationEnv>> LocalEnvFactory::Make(const std::string& migration_id,
                                                            const MigrationSpec& spec) {
  PGSHIFT_ASSIGN_OR_RETURN(auto router, MakeRouter(spec.router));
  return std::unique_ptr<MigrationEnv>(new LocalEnv(migration_id, spec, std::move(router)));
}

}  // namespace pgshift
