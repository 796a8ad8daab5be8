// bench-fleet: pgshift's reference fleet on one host. N small source
// clusters (bench/fleet/fleet_env.h), each with a ledger writer committing a
// few transactions a second through one pgshift-proxy, are migrated in waves
// by one pgshiftd through a fleet run (`pgshift fleet run`'s API) with a
// global and a per-wave concurrency limit. When the host cannot hold N, the
// fleet is as large as it could make and the bench names what ran out.
//
// Prints one line per migration (status, total and per-phase time, cutover
// hold, the writer's longest wait), then the ledgers checked on each new
// primary, pgshiftd's own CPU time and peak RSS, and last:
//   BENCH fleet {"migrations":N,"succeeded":N,"lost_rows":N,"duplicated_rows":N,"wall_s":X,
//                "pgshiftd_cpu_s":X,"pgshiftd_rss_mb":X,"max_cutover_hold_ms":X}
// Exits non-zero unless every migration finalized with nothing lost or doubled.
#include <signal.h>
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <map>
#include <thread>

#include "bench/fleet/fleet_env.h"
#include "bench/fleet/parallel.h"
#include "bench/fleet/resources.h"
#include "common/clock.h"
#include "load/ledger.h"

namespace pgshift::bench {
namespace {

using json = nlohmann::json;

std::atomic<bool> g_interrupted{false};
void OnSignal(int) { g_interrupted = true; }

constexpr int64_t kPollMs = 2000;       // fleet run status
constexpr int64_t kProgressMs = 30000;  // a progress line
constexpr int64_t kWarmupMs = 3000;     // writers running before the run starts
constexpr int64_t kTailMs = 2000;       // writers running after the run ended
constexpr int kStopThreads = 32;        // writers stopped at once
constexpr int kInterruptedExit = 130;

struct BenchFlags {
  int n = 400;
  int max_concurrent = 16;
  int wave_concurrency = 16;
  int stop_after = 0;  // 0: the wave size (never stop: every failure is reported)
  double rate = 2;     // ledger transactions per second per database
  int sustain_seconds = 3;
  int verify_seconds = 2;
  int timeout_min = 120;
  FleetEnvOptions env;
};

// Samples pgshiftd's usage; keeps the last good one.
struct PgshiftdSampler {
  pid_t pid;
  ProcUsage last;
  double max_rss_mb = 0;
  void Sample() {
    if (auto u = ReadProcUsage(pid); u.ok()) {
      last = *u;
      max_rss_mb = std::max(max_rss_mb, u->hwm_mb);
    }
  }
};

std::string PhasesText(const json& phases) {
  std::string out;
  for (const auto& p : phases) {
    out += (out.empty() ? "" : " ") + p.value("phase", "?") + "=" +
           std::to_string(p.value("ms", int64_t{0}));
  }
  return out;
}

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * (v.size() - 1) + 0.5))];
}

int Run(const BenchFlags& f) {
  std::printf("bench-fleet: %d databases asked; %s\n", f.n, UptimeLine().c_str());
  const int64_t setup_start = MonotonicMs();
  auto env = FleetEnv::Create(f.env);
  if (!env.ok()) {
    std::fprintf(stderr, "bench-fleet: %s\n", env.status().ToString().c_str());
    return 1;
  }
  FleetEnv& e = **env;
  const HostUsage before = ReadHostUsage(e.dir());
  if (Status st = e.AddSources(f.n); !st.ok()) {
    std::fprintf(stderr, "bench-fleet: %s\n", st.ToString().c_str());
    return 1;
  }
  if (g_interrupted) return kInterruptedExit;  // FleetEnv cleans up
  const int n = static_cast<int>(e.sources().size());
  const HostUsage after = ReadHostUsage(e.dir());
  std::printf("%d source clusters up in %.0f s (%.1f MB of MemAvailable each); %s\n", n,
              (MonotonicMs() - setup_start) / 1000.0,
              (before.mem_available_mb - after.mem_available_mb) / std::max(1, n),
              Describe(after).c_str());
  if (!e.limit().empty()) std::printf("fleet limited to %d: %s\n", n, e.limit().c_str());
  for (Status st : {e.StartProxy(), e.StartPgshiftd()}) {
    if (!st.ok()) {
      std::fprintf(stderr, "bench-fleet: %s\n", st.ToString().c_str());
      return 1;
    }
  }
  PgshiftdSampler pgshiftd{.pid = e.pgshiftd_pid()};
  pgshiftd.Sample();
  const ProcUsage idle = pgshiftd.last;

  // The load: one writer per database through the proxy.
  const int pause_us = static_cast<int>(1e6 / std::max(0.1, f.rate));
  std::vector<std::unique_ptr<load::LedgerWriter>> writers;
  for (int i = 0; i < n; ++i) {
    writers.push_back(
        std::make_unique<load::LedgerWriter>(e.AppConninfo(e.sources()[i].name), i + 1, pause_us));
    writers.back()->Start();
  }
  // Each sleeps up to 1/rate between commits: all at once, not in turn.
  auto stop_writers = [&] {
    ForEach(writers.size(), kStopThreads, [&](size_t i) { writers[i]->Stop(); });
  };
  DefaultClock().SleepMs(kWarmupMs);
  int writing = 0;
  for (const auto& w : writers) writing += w->Stats().committed > 0;
  std::printf("%d/%d ledger writers committing through the proxy (%.1f tps each)\n", writing, n,
              f.rate);

  const int wave_size = std::max(1, f.env.wave_size);
  const json request = {
      {"by", "tag"},
      {"max_concurrent", f.max_concurrent},
      {"wave_concurrency", f.wave_concurrency},
      {"stop_after", f.stop_after > 0 ? f.stop_after : std::min(wave_size, 256)},
      {"approve_outside_window", true},
      {"options", {{"sustain_seconds", f.sustain_seconds}, {"verify_seconds", f.verify_seconds}}}};
  const int64_t run_start = MonotonicMs();
  auto created = e.Api("POST", "/v1/fleet/runs", request.dump());
  if (!created.ok() || (*created)["status"] != 201) {
    std::fprintf(stderr, "bench-fleet: fleet run refused: %s\n",
                 created.ok() ? created->dump().c_str() : created.status().ToString().c_str());
    return 1;
  }
  const std::string run_id = (*created)["body"].value("id", "");
  std::printf(
      "fleet run %s: %d databases in waves of %d, max_concurrent %d, "
      "wave_concurrency %d, pgshiftd --workers %d\n",
      run_id.c_str(), n, wave_size, f.max_concurrent, f.wave_concurrency, f.env.workers);
  std::fflush(stdout);
  std::string status = "running";
  int64_t last_progress = run_start;
  const int64_t deadline = run_start + int64_t{f.timeout_min} * 60000;
  while ((status == "running" || status == "paused") && !g_interrupted &&
         MonotonicMs() < deadline) {
    DefaultClock().SleepMs(kPollMs);
    pgshiftd.Sample();
    auto runs = e.Api("GET", "/v1/fleet/runs");
    if (!runs.ok() || (*runs)["status"] != 200) continue;
    const json& body = (*runs)["body"];
    for (const auto& r : body.is_object() ? body.value("runs", json::array()) : body) {
      if (r.value("id", "") != run_id) continue;
      status = r.value("status", "");
      if (MonotonicMs() - last_progress >= kProgressMs || status != "running") {
        last_progress = MonotonicMs();
        std::map<std::string, int> counts;
        for (const auto& d : r["databases"]) ++counts[d.value("status", "")];
        std::string c;
        for (const auto& [k, v] : counts) c += " " + k + "=" + std::to_string(v);
        std::printf("  %4.0f s:%s | pgshiftd cpu %.1f s rss %.0f MB | %s\n",
                    (MonotonicMs() - run_start) / 1000.0, c.c_str(), pgshiftd.last.cpu_s,
                    pgshiftd.last.rss_mb, Describe(ReadHostUsage(e.dir())).c_str());
        std::fflush(stdout);
      }
    }
  }
  const double wall_s = (MonotonicMs() - run_start) / 1000.0;
  if (g_interrupted) {
    std::printf("interrupted: stopping and cleaning up %s\n", e.dir().c_str());
    stop_writers();
    return kInterruptedExit;  // FleetEnv cleans up
  }
  if (status == "running") std::printf("fleet run still running at the deadline\n");
  DefaultClock().SleepMs(kTailMs);
  stop_writers();
  pgshiftd.Sample();

  auto got = e.Api("GET", "/v1/fleet/runs/" + run_id);
  pgshiftd.Sample();
  if (!got.ok() || (*got)["status"] != 200) {
    std::fprintf(stderr, "bench-fleet: no fleet report\n");
    return 1;
  }
  const json& report = (*got)["body"]["report"];
  std::printf("fleet run %s: %s %s\n", run_id.c_str(), (*got)["body"].value("status", "").c_str(),
              (*got)["body"].value("reason", "").c_str());

  // Per migration, and its ledger on whatever is now its primary: the target
  // for a finalized migration (straight, as superuser), else through the proxy.
  struct Row {
    std::string line;
    int64_t lost = 0, dup = 0, uncertain = 0, acked = 0;
    bool succeeded = false, checked = false;
    double duration_s = 0;
  };
  std::vector<Row> rows(n);
  std::map<std::string, json> by_name;
  for (const auto& d : report["databases"]) by_name[d.value("name", "")] = d;
  ForEach(n, 8, [&](size_t i) {
    const std::string& name = e.sources()[i].name;
    const json d = by_name.count(name) ? by_name[name] : json::object();
    Row& r = rows[i];
    r.succeeded = d.value("status", "") == "succeeded";
    r.duration_s = d.value("duration_ms", int64_t{0}) / 1000.0;
    std::string conninfo = e.AppConninfo(name);
    const std::string id = d.value("migration_id", "");
    if (!id.empty()) {
      auto m = e.Api("GET", "/v1/migrations/" + id);
      if (m.ok() && (*m)["status"] == 200 && (*m)["body"].value("phase", "") == "finalized") {
        conninfo = FleetEnv::AdminConninfo((*m)["body"]["spec"]["target"].value("port", 0), name);
      }
    }
    const load::LedgerStats ws = writers[i]->Stats();
    r.uncertain = ws.uncertain;
    auto check = load::CheckLedger(conninfo, static_cast<int>(i + 1), writers[i]->Acknowledged());
    if (check.ok()) {
      r.checked = true;
      r.lost = check->lost;
      r.dup = check->duplicated;
      r.acked = check->acknowledged;
    }
    char buf[512];
    std::snprintf(buf, sizeof buf,
                  "%s %s %-9s %6.1f s hold=%s ms max_write_wait=%.0f ms acked=%lld lost=%lld "
                  "dup=%lld uncertain=%lld failed=%lld%s | %s%s%s",
                  name.c_str(), d.value("wave", "?").c_str(), d.value("status", "?").c_str(),
                  r.duration_s, d["hold_ms"].is_number() ? d["hold_ms"].dump().c_str() : "-",
                  ws.max_gap_us / 1000.0, static_cast<long long>(r.acked),
                  static_cast<long long>(r.lost), static_cast<long long>(r.dup),
                  static_cast<long long>(ws.uncertain), static_cast<long long>(ws.failed),
                  check.ok() ? "" : " LEDGER UNCHECKED",
                  PhasesText(d.value("phases", json::array())).c_str(),
                  d.value("error", "").empty() ? "" : " | error: ", d.value("error", "").c_str());
    r.line = buf;
  });
  int succeeded = 0, unchecked = 0;
  int64_t lost = 0, dup = 0, uncertain = 0, acked = 0;
  std::vector<double> durations;
  for (const auto& r : rows) {
    std::printf("%s\n", r.line.c_str());
    succeeded += r.succeeded;
    unchecked += !r.checked;
    lost += r.lost;
    dup += r.dup;
    uncertain += r.uncertain;
    acked += r.acked;
    if (r.succeeded) durations.push_back(r.duration_s);
  }
  const int64_t max_hold = report["summary"].value("max_hold_ms", int64_t{0});
  std::printf("migration time (s, finalized ones): p50 %.1f p95 %.1f max %.1f\n",
              Percentile(durations, 0.5), Percentile(durations, 0.95), Percentile(durations, 1));
  std::printf(
      "ledgers: %lld acknowledged rows, %lld lost, %lld duplicated, %lld uncertain "
      "(connection lost mid-commit, not counted as acknowledged), %d unchecked\n",
      static_cast<long long>(acked), static_cast<long long>(lost), static_cast<long long>(dup),
      static_cast<long long>(uncertain), unchecked);
  std::printf(
      "pgshiftd: cpu %.1f s (%.1f s before the run; children %.1f s), peak rss %.0f MB "
      "(%.0f MB idle), %d threads, %d fds\n",
      pgshiftd.last.cpu_s, idle.cpu_s, pgshiftd.last.children_cpu_s, pgshiftd.max_rss_mb,
      idle.rss_mb, pgshiftd.last.threads, pgshiftd.last.fds);
  std::printf("host: %s; %s\n", Describe(ReadHostUsage(e.dir())).c_str(), UptimeLine().c_str());
  if (n < f.n) std::printf("fleet of %d instead of %d: %s\n", n, f.n, e.limit().c_str());
  nlohmann::ordered_json line;
  line["migrations"] = n;
  line["succeeded"] = succeeded;
  line["lost_rows"] = lost;
  line["duplicated_rows"] = dup;
  line["wall_s"] = std::round(wall_s * 10) / 10;
  line["pgshiftd_cpu_s"] = std::round(pgshiftd.last.cpu_s * 10) / 10;
  line["pgshiftd_rss_mb"] = std::round(pgshiftd.max_rss_mb * 10) / 10;
  line["max_cutover_hold_ms"] = max_hold;
  std::printf("cleaning up %s\n", e.dir().c_str());
  std::fflush(stdout);
  env->reset();
  std::printf("BENCH fleet %s\n", line.dump().c_str());
  return succeeded == n && lost == 0 && dup == 0 && unchecked == 0 ? 0 : 1;
}

}  // namespace
}  // namespace pgshift::bench

int main(int argc, char** argv) {
  pgshift::bench::BenchFlags f;
  f.env.pgshiftd_path = PGSHIFTD_PATH;
  f.env.proxy_path = PGSHIFT_PROXY_PATH;
  CLI::App app{"pgshift fleet benchmark"};
  app.add_option("-n,--databases", f.n, "source clusters to make and migrate");
  app.add_option("--max-concurrent", f.max_concurrent, "the fleet run's global limit");
  app.add_option("--wave-concurrency", f.wave_concurrency, "the fleet run's per-wave limit");
  app.add_option("--wave-size", f.env.wave_size, "databases per wave");
  app.add_option("--stop-after", f.stop_after,
                 "failures in a wave that stop the run (0: the wave size, so every failure "
                 "is reported)");
  app.add_option("--workers", f.env.workers, "pgshiftd --workers");
  app.add_option("--rate", f.rate, "ledger transactions per second per database");
  app.add_option("--sustain-seconds", f.sustain_seconds, "migration option sustain_seconds");
  app.add_option("--verify-seconds", f.verify_seconds, "migration option verify_seconds");
  app.add_option("--mem-reserve-mb", f.env.mem_reserve_mb,
                 "stop adding clusters when MemAvailable falls below this");
  app.add_option("--disk-reserve-mb", f.env.disk_reserve_mb,
                 "stop adding clusters when the disk has less free");
  app.add_option("--setup-threads", f.env.setup_threads, "clusters made at once");
  app.add_option("--timeout-min", f.timeout_min, "give up on the fleet run after this long");
  app.add_flag("--keep", f.env.keep, "keep the directory (logs, data) for inspection");
  CLI11_PARSE(app, argc, argv);
  f.env.interrupted = &pgshift::bench::g_interrupted;
  struct sigaction sa = {};
  sa.sa_handler = pgshift::bench::OnSignal;
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaction(sig, &sa, nullptr);
  // One socket per writer here and two per session in the proxy (which
  // inherits the limit): raise the soft limit to the hard one.
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    (void)setrlimit(RLIMIT_NOFILE, &rl);
  }
  try {
    return pgshift::bench::Run(f);
  } catch (const std::exception& ex) {  // unwinds: FleetEnv cleans up on the way
    std::fprintf(stderr, "bench-fleet: %s\n", ex.what());
    return 1;
  }
}
