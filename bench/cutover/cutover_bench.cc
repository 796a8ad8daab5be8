// bench-cutover: the client-visible cost of a cutover. For each router, a
// fresh sandbox runs pgbench tpcb through the router at a fixed rate while
// pgshiftd migrates the database; we report the worst transaction latency
// and the failed transactions, from the same run for every router. The
// routers are compared with the same client transport (plain text, as the
// PgBouncer sandbox has); one more run shows the proxy with mutual TLS.
// Each run also prints the worst latency by migration phase.
//
// The "direct" run is the floor this machine sets: pgbench connects straight
// to the source at the same rate while pgshiftd builds and streams the same
// replica (base backup, WAL streaming, checks), with no router and no
// cutover; it stops in `ready` and keeps the load on for as long as a
// cutover and its verify window take. A router's worst latency can only be
// read against it: schedule lag that the box builds without any router is
// carried into the cutover.
//
// One more proxy run cuts over, lets pgbench write on the target, then rolls
// back with reverse replication: rollback_max_latency_ms is the worst
// latency of the transactions scheduled while rolling back (its hold),
// beside the cutover's (rollback_cutover_max_latency_ms: those scheduled in
// the same run's cutover hold).
//
// One more proxy run carries a CDC consumer (pg_recvlogical, test_decoding,
// through the proxy) across the cutover: the drain waits until it confirmed
// the final LSN. cdc_hold_extra_ms is that run's hold minus the plain proxy
// run's.
//
// Last line:
//   BENCH cutover {"proxy_max_latency_ms":X,"pgbouncer_max_latency_ms":X,
//                  "proxy_failed_txns":N,"pgbouncer_failed_txns":N,"prepared_failed_txns":N,
//                  ...,"cdc_hold_extra_ms":N,"rollback_max_latency_ms":X,...}
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <map>
#include <thread>

#include "common/clock.h"
#include "demo/sandbox.h"
#include "load/cdc_consumer.h"
#include "load/pgbench_load.h"

namespace pgshift {
namespace {

using json = nlohmann::json;

// What every run shares.
struct BenchSettings {
  int rate = 0;
  int clients = 0;
  int chunk_seconds = 0;
  int64_t basebackup_kbps = 0;
  bool keep = false;
  bool parity = true;
};

// One run: a router and how its clients reach it.
struct RunSpec {
  std::string router;
  std::string protocol = "simple";
  bool client_tls = false;
  bool cdc = false;  // a CDC consumer streams a slot through the router
  // After verify, roll back with writes on the target (reverse replication)
  // instead of finalizing.
  bool rollback = false;
};

// Where the rollback run waits with writes on the target before rolling back.
constexpr int kWritesOnTargetSeconds = 3;

constexpr char kCdcSlot[] = "bench_cdc";

struct RunResult {
  bool finalized = false;
  double max_latency_ms = 0;
  double max_service_ms = 0;
  int64_t failed = 0;
  int64_t transactions = 0;
  int64_t hold_ms = 0;
  int64_t rollback_hold_ms = 0;
  double rollback_max_latency_ms = 0;  // transactions scheduled while rolling back
  // Transactions scheduled in the cutover's hold (quiesce to switch): the
  // figure to read the rollback's against, from the same run.
  double cutover_max_latency_ms = 0;
};

// The phases of the cutover's hold.
constexpr const char* kHoldPhases[] = {"quiesce",  "drain",        "promote",
                                       "snapshot", "cdc_recreate", "switch"};

// The worst latency of the transactions scheduled to start in each phase
// ("-" before the migration began), and the phases in the order entered.
std::map<std::string, double> WorstLatencyByPhase(const std::vector<load::TxnRecord>& txns,
                                                  const json& events,
                                                  std::vector<std::string>* order) {
  std::vector<std::pair<double, std::string>> starts;  // phase entered at (epoch ms)
  for (const auto& e : events) starts.emplace_back(e.value("at_ms", 0.0), e.value("phase", ""));
  std::map<std::string, double> worst;
  for (const auto& t : txns) {
    const double start = t.end_epoch_ms - t.latency_ms;
    std::string phase = "-";
    for (const auto& [at, p] : starts) {
      if (at <= start) phase = p;
    }
    if (!worst.count(phase)) order->push_back(phase);
    worst[phase] = std::max(worst[phase], t.latency_ms);
  }
  std::sort(order->begin(), order->end(), [&](const std::string& a, const std::string& b) {
    auto first = [&](const std::string& p) {
      for (size_t i = 0; i < starts.size(); ++i)
        if (starts[i].second == p) return static_cast<int>(i);
      return -1;
    };
    return first(a) < first(b);
  });
  return worst;
}

// The same as one line, so a number says where it came from.
std::string WorstByPhase(const std::map<std::string, double>& worst,
                         const std::vector<std::string>& order) {
  std::string out;
  for (const auto& p : order) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "%s%s=%.0f", out.empty() ? "" : " ", p.c_str(), worst.at(p));
    out += buf;
  }
  return out;
}

RunResult RunOne(const RunSpec& run, const BenchSettings& b) {
  RunResult out;
  const std::string& router = run.router;
  const std::string& protocol = run.protocol;
  const bool direct = router == "direct";
  auto sb = demo::Sandbox::Start({.router = direct ? "none" : router,
                                  .pgshiftd_path = PGSHIFTD_PATH,
                                  .proxy_path = PGSHIFT_PROXY_PATH,
                                  .pgbench_scale = 4,
                                  .client_tls = run.client_tls,
                                  .keep = b.keep});
  if (!sb.ok()) {
    std::cerr << router << ": sandbox failed: " << sb.status().message() << "\n";
    out.failed = -1;
    return out;
  }
  std::unique_ptr<load::CdcConsumer> consumer;
  if (run.cdc) {
    Status st = (*sb)->CreateCdcSlot(kCdcSlot, load::CdcPlugin::kTestDecoding);
    if (st.ok()) {
      consumer = (*sb)->CdcConsumerFor(kCdcSlot, load::CdcPlugin::kTestDecoding);
      st = consumer->Start();
    }
    if (!st.ok()) {
      std::cerr << router << ": CDC consumer failed: " << st.message() << "\n";
      out.failed = -1;
      return out;
    }
  }
  if (run.rollback) {
    // pgbench_history has no key: with a replica identity the target can
    // publish it back to the source.
    Status st =
        (*sb)->source().Psql("alter table pgbench_history replica identity full", "app").status();
    if (!st.ok()) {
      std::cerr << router << ": " << st.message() << "\n";
      out.failed = -1;
      return out;
    }
  }
  load::PgbenchLoad pgbench({.conninfo = (*sb)->AppConninfo(),
                             .clients = b.clients,
                             .threads = 2,
                             .chunk_seconds = b.chunk_seconds,
                             .protocol = protocol,
                             .rate = b.rate,
                             .log_dir = (*sb)->dir() + "/pgbench-logs",
                             .per_transaction_log = true});
  pgbench.Start();
  std::this_thread::sleep_for(std::chrono::seconds(3));
  auto created = (*sb)->Api("POST", "/v1/migrations",
                            (*sb)
                                ->MigrationSpec({{"auto_cutover", !direct},
                                                 {"auto_finalize", !run.rollback},
                                                 {"sustain_seconds", 3},
                                                 {"verify_seconds", 2},
                                                 {"poll_ms", 50},
                                                 {"parity", b.parity},
                                                 {"basebackup_max_rate_kbps", b.basebackup_kbps}})
                                .dump());
  std::string id;
  if (created.ok() && (*created)["status"] == 201) {
    id = (*created)["body"]["id"];
    auto m = (*sb)->WaitFor(
        id,
        [direct, &run](const json& m) {
          return m["phase"] == "finalized" || m["phase"] == "rolled_back" ||
                 m["state"] == "failed" || m["state"] == "blocked" ||
                 (direct && m["phase"] == "ready") ||
                 (run.rollback && m["phase"] == "verify" && m["state"] == "waiting");
        },
        300000);
    if (m.ok() && run.rollback && (*m)["phase"] == "verify") {
      out.hold_ms = (*m)["result"].value("hold_ms", 0);
      std::this_thread::sleep_for(std::chrono::seconds(kWritesOnTargetSeconds));
      auto asked = (*sb)->Api("POST", "/v1/migrations/" + id + "/rollback", "{}");
      if (!asked.ok() || (*asked)["status"] != 202) {
        std::cerr << router << ": rollback refused: "
                  << (asked.ok() ? asked->dump() : asked.status().message()) << "\n";
      }
      m = (*sb)->WaitFor(
          id,
          [](const json& m) {
            return m["phase"] == "rolled_back" || m["state"] == "failed" || m["state"] == "blocked";
          },
          300000);
      out.finalized = m.ok() && (*m)["phase"] == "rolled_back";
      if (m.ok()) out.rollback_hold_ms = (*m)["result"].value("rollback_hold_ms", 0);
    } else if (m.ok() && direct) {
      out.finalized = (*m)["phase"] == "ready";
      // About what a cutover, its verify window and finalize take.
      std::this_thread::sleep_for(std::chrono::seconds(10));
    } else if (m.ok()) {
      out.finalized = (*m)["phase"] == "finalized";
      out.hold_ms = (*m)["result"].value("hold_ms", 0);
    }
  } else {
    std::cerr << router << ": create failed: "
              << (created.ok() ? (*created)["body"].dump() : created.status().message()) << "\n";
  }
  std::this_thread::sleep_for(std::chrono::seconds(3));
  pgbench.Stop();
  auto st = pgbench.Stats();
  out.max_latency_ms = st.max_latency_ms;
  out.max_service_ms = st.max_service_latency_ms;
  out.failed = st.failed;
  out.transactions = st.transactions;
  const std::string label = router + (router == "proxy" && run.client_tls ? "+mTLS" : "") +
                            (run.cdc ? "+CDC" : "") + (run.rollback ? "+RB" : "");
  if (consumer) {
    const load::CdcLog log = consumer->Log();
    std::printf("%-10s CDC consumer of %s: %d stream(s), %d reconnect(s)\n", label.c_str(),
                kCdcSlot, log.streams_started, log.disconnects);
    (void)consumer->Stop();
  }
  for (const auto& e : st.errors) std::cerr << label << "/" << protocol << ": " << e << "\n";
  if (!id.empty()) {
    auto events = (*sb)->Api("GET", "/v1/migrations/" + id + "/events", "");
    if (events.ok() && (*events)["status"] == 200) {
      std::vector<std::string> order;
      const auto worst = WorstLatencyByPhase(load::ReadTxnLogs((*sb)->dir() + "/pgbench-logs"),
                                             (*events)["body"]["events"], &order);
      std::printf("%-10s -M %-9s worst latency (ms) by phase of scheduled start: %s\n",
                  label.c_str(), protocol.c_str(), WorstByPhase(worst, order).c_str());
      if (auto it = worst.find("rolling_back"); it != worst.end()) {
        out.rollback_max_latency_ms = it->second;
      }
      for (const char* p : kHoldPhases) {
        if (auto it = worst.find(p); it != worst.end()) {
          out.cutover_max_latency_ms = std::max(out.cutover_max_latency_ms, it->second);
        }
      }
    }
  }
  std::printf(
      "%-10s -M %-9s %s=%s txns=%lld failed=%lld max_latency=%.1f ms (incl. -R schedule "
      "lag) max_service=%.1f ms hold=%lld ms\n",
      label.c_str(), protocol.c_str(), direct ? "in_sync" : "finalized",
      out.finalized ? "yes" : "NO", static_cast<long long>(out.transactions),
      static_cast<long long>(out.failed), out.max_latency_ms, out.max_service_ms,
      static_cast<long long>(out.hold_ms));
  std::fflush(stdout);
  return out;
}

}  // namespace
}  // namespace pgshift

int main(int argc, char** argv) {
  CLI::App app{"pgshift cutover benchmark"};
  // One pgbench run spans the whole migration: no reconnects in between, and
  // no backlog of late transactions dropped at the end of a short run.
  int rate = 2000, clients = 8, chunk_seconds = 45;
  // The base backup shares this 2-core host with the 2000 tps it must not
  // disturb: unthrottled it takes ~1 core for a second or two and pgbench
  // falls behind its schedule (see the per-phase line).
  int64_t basebackup_kbps = 8192;
  bool keep = false;
  bool parity = true;
  bool mtls = true;
  bool cdc = true;
  bool prepared = true;
  bool rollback = true;
  std::vector<std::string> routers = {"direct", "proxy", "pgbouncer"};
  app.add_option("--rate", rate, "pgbench -R target tps");
  app.add_option("--clients", clients, "pgbench clients");
  app.add_option("--chunk-seconds", chunk_seconds,
                 "length of each pgbench run (its clients reconnect between runs)");
  app.add_option("--routers", routers,
                 "routers to compare; \"direct\" is the no-router, no-cutover baseline");
  app.add_option("--basebackup-max-rate-kbps", basebackup_kbps,
                 "the migration's basebackup_max_rate_kbps (0 = no limit)");
  app.add_option("--parity", parity, "run the post-promotion data parity check (default true)");
  app.add_option("--mtls", mtls,
                 "also run the proxy with mutual TLS clients (default true); the comparison "
                 "runs use plain-text clients on both routers");
  app.add_option("--cdc", cdc,
                 "also run the proxy with a CDC consumer and report cdc_hold_extra_ms "
                 "(default true)");
  app.add_option("--prepared", prepared,
                 "also run the proxy with pgbench -M prepared (default true)");
  app.add_option("--rollback", rollback,
                 "also run the proxy with a rollback after writes on the target and report "
                 "rollback_max_latency_ms (default true)");
  app.add_flag("--keep", keep, "keep each sandbox (pgbench logs, pgshiftd log) for inspection");
  CLI11_PARSE(app, argc, argv);

  const pgshift::BenchSettings settings{.rate = rate,
                                        .clients = clients,
                                        .chunk_seconds = chunk_seconds,
                                        .basebackup_kbps = basebackup_kbps,
                                        .keep = keep,
                                        .parity = parity};
  nlohmann::ordered_json line;
  bool ok = true;
  for (const auto& router : routers) {
    auto r = pgshift::RunOne({.router = router}, settings);
    ok = ok && r.finalized;
    line[router + "_max_latency_ms"] = r.max_latency_ms;
    line[router + "_failed_txns"] = r.failed;
    line[router + "_max_service_ms"] = r.max_service_ms;
    if (router != "direct") line[router + "_hold_ms"] = r.hold_ms;
  }
  if (line.contains("direct_max_latency_ms") && line["direct_max_latency_ms"].get<double>() > 0) {
    const double floor = line["direct_max_latency_ms"].get<double>();
    for (const auto& router : routers) {
      if (router == "direct") continue;
      line[router + "_vs_direct_max_latency"] =
          std::round(line[router + "_max_latency_ms"].get<double>() / floor * 100) / 100;
    }
  }
  for (const auto& router : routers) {
    if (router != "proxy")
      continue;  // direct has no cutover; PgBouncer's transaction pooling cannot carry -M prepared
    pgshift::RunResult r;
    if (prepared) {
      r = pgshift::RunOne({.router = router, .protocol = "prepared"}, settings);
      ok = ok && r.finalized;
      line["prepared_failed_txns"] = r.failed;
      line["prepared_max_latency_ms"] = r.max_latency_ms;
    }
    if (cdc) {
      // The plain proxy run again, with a CDC consumer: what carrying it adds to the hold.
      r = pgshift::RunOne({.router = router, .cdc = true}, settings);
      ok = ok && r.finalized;
      line["proxy_cdc_hold_ms"] = r.hold_ms;
      line["proxy_cdc_failed_txns"] = r.failed;
      line["cdc_hold_extra_ms"] = r.hold_ms - line["proxy_hold_ms"].get<int64_t>();
    }
    // Cut over, write on the target, roll back: the rollback's hold as
    // clients see it, beside the cutover's.
    if (rollback) {
      r = pgshift::RunOne({.router = router, .rollback = true}, settings);
      ok = ok && r.finalized;
      line["rollback_cutover_max_latency_ms"] = r.cutover_max_latency_ms;
      line["rollback_max_latency_ms"] = r.rollback_max_latency_ms;
      line["rollback_hold_ms"] = r.rollback_hold_ms;
      line["rollback_failed_txns"] = r.failed;
    }
    if (!mtls) continue;
    // The product's default posture: clients with certificates, SCRAM upstream.
    r = pgshift::RunOne({.router = router, .client_tls = true}, settings);
    ok = ok && r.finalized;
    line["proxy_mtls_max_latency_ms"] = r.max_latency_ms;
    line["proxy_mtls_failed_txns"] = r.failed;
  }
  line["rate_tps"] = rate;
  line["basebackup_max_rate_kbps"] = basebackup_kbps;
  nlohmann::ordered_json ordered;
  for (const char* k : {"proxy_max_latency_ms",
                        "pgbouncer_max_latency_ms",
                        "proxy_failed_txns",
                        "pgbouncer_failed_txns",
                        "prepared_failed_txns",
                        "prepared_max_latency_ms",
                        "direct_max_latency_ms",
                        "direct_failed_txns",
                        "proxy_vs_direct_max_latency",
                        "pgbouncer_vs_direct_max_latency",
                        "proxy_max_service_ms",
                        "pgbouncer_max_service_ms",
                        "proxy_hold_ms",
                        "pgbouncer_hold_ms",
                        "proxy_mtls_max_latency_ms",
                        "proxy_mtls_failed_txns",
                        "proxy_cdc_hold_ms",
                        "cdc_hold_extra_ms",
                        "proxy_cdc_failed_txns",
                        "rollback_max_latency_ms",
                        "rollback_cutover_max_latency_ms",
                        "rollback_hold_ms",
                        "rollback_failed_txns",
                        "rate_tps",
                        "basebackup_max_rate_kbps"}) {
    if (line.contains(k)) ordered[k] = line[k];
  }
  std::printf("BENCH cutover %s\n", ordered.dump().c_str());
  return ok ? 0 : 1;
}
