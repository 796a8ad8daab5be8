#include "demo/demo.h"

#include <cstdio>
#include <ostream>
#include <thread>

#include "common/clock.h"
#include "demo/sandbox.h"
#include "load/cdc_consumer.h"
#include "load/ledger.h"
#include "load/pgbench_load.h"

namespace pgshift::demo {

using json = nlohmann::json;

nlohmann::ordered_json DemoResult(const DemoNumbers& n) {
  auto round1 = [](double v) {
    return static_cast<double>(static_cast<int64_t>(v * 10 + 0.5)) / 10;
  };
  nlohmann::ordered_json r;  // keeps the documented key order
  r["state"] = n.state;
  r["router"] = n.router;
  r["committed_txns"] = n.committed;
  r["failed_txns"] = n.failed;
  r["lost_rows"] = n.lost;
  r["duplicated_rows"] = n.duplicated;
  r["max_txn_latency_ms"] = round1(n.max_latency_ms);
  r["cutover_stall_ms"] = round1(n.stall_ms);
  r["cdc_events"] = n.cdc_events;
  r["cdc_lost"] = n.cdc_lost;
  r["cdc_duplicated"] = n.cdc_duplicated;
  return r;
}

namespace {

// Prints events not printed yet, with their time since the demo started.
class Timeline {
 public:
  Timeline(const Sandbox& sb, std::ostream& out)
      : sb_(sb), out_(out), t0_(DefaultClock().NowMs()) {}
  void Note(const std::string& what) { Line(DefaultClock().NowMs(), "demo", what); }
  void Poll(const std::string& id) {
    auto r = sb_.Api("GET", "/v1/migrations/" + id + "/events");
    if (!r.ok() || (*r)["status"] != 200) return;
    const json& events = (*r)["body"]["events"];
    for (size_t i = printed_; i < events.size(); ++i) {
      const json& e = events[i];
      Line(e.value("at_ms", int64_t{0}), e.value("phase", ""),
           (e.value("kind", "") == "info" ? "" : e.value("kind", "") + ": ") +
               e.value("message", ""));
    }
    printed_ = events.size();
  }

 private:
  void Line(int64_t at_ms, const std::string& phase, const std::string& msg) {
    char head[64];
    std::snprintf(head, sizeof head, "  +%6.2fs  %-13s ", (at_ms - t0_) / 1000.0, phase.c_str());
    out_ << head << msg << "\n" << std::flush;
  }
  const Sandbox& sb_;
  std::ostream& out_;
  int64_t t0_;
  size_t printed_ = 0;
};

constexpr char kCdcSlot[] = "demo_cdc";
// After the load stops, how long the consumer may take to receive the rest
// (it reconnects to the target within 5 s, then catches up).
constexpr int64_t kCdcCatchUpMs = 60000;

// The consumer's proof: every row a ledger writer saw acknowledged reached it
// exactly once. Adds to `n`; prints what it found.
void CheckConsumer(load::CdcConsumer& consumer,
                   const std::vector<std::unique_ptr<load::LedgerWriter>>& writers, DemoNumbers& n,
                   std::ostream& out, std::ostream& err) {
  for (const auto& w : writers) {
    Status st = consumer.WaitDelivered(w->writer_id(), w->Acknowledged(), kCdcCatchUpMs);
    if (!st.ok()) err << "demo: CDC consumer: " << st.message() << "\n";
  }
  auto changes = consumer.Changes();
  if (!changes.ok()) {
    err << "demo: cannot read the CDC consumer's output: " << changes.status().message() << "\n";
  }
  const std::vector<load::LedgerChange> got =
      changes.ok() ? *changes : std::vector<load::LedgerChange>{};
  for (const auto& w : writers) {
    const load::CdcCheck c = load::CheckCdc(got, w->writer_id(), w->Acknowledged());
    n.cdc_lost += c.lost;
    n.cdc_duplicated += c.duplicated;
  }
  n.cdc_events = static_cast<int64_t>(got.size());
  const load::CdcLog log = consumer.Log();
  out << "cdc: pg_recvlogical (test_decoding) on slot " << kCdcSlot
      << " through the router: " << n.cdc_events << " ledger changes received, " << n.cdc_lost
      << " lost, " << n.cdc_duplicated << " duplicated; " << log.streams_started << " stream(s), "
      << log.disconnects << " reconnect(s)\n";
  (void)consumer.Stop();
}

}  // namespace

int RunDemo(const DemoOptions& opts, std::ostream& out, std::ostream& err) {
  const bool cdc = opts.cdc && opts.router == "proxy";
  out << "pgshift demo: a live PostgreSQL database under write load moves onto a new cluster\n"
      << "through " << opts.router << "; every acknowledged write is then looked up on the "
      << "new primary" << (cdc ? " and in a CDC consumer's stream" : "") << ".\n\n";
  DemoNumbers n{.state = "error", .router = opts.router};
  auto sbr = Sandbox::Start({.router = opts.router,
                             .pgbench_scale = opts.pgbench_scale,
                             .keep = opts.keep,
                             .inventory = true});
  if (!sbr.ok()) {
    err << "demo: could not build the sandbox: " << sbr.status().message() << "\n";
    out << "DEMO RESULT " << DemoResult(n).dump() << "\n";
    return 1;
  }
  Sandbox& sb = **sbr;
  Timeline tl(sb, out);
  tl.Note("sandbox up in " + sb.dir() + ": source PostgreSQL 15, " + opts.router +
          ", pgshiftd at " + sb.ApiUrl());

  std::unique_ptr<load::CdcConsumer> consumer;
  if (cdc) {
    Status st = sb.CreateCdcSlot(kCdcSlot, load::CdcPlugin::kTestDecoding);
    if (st.ok()) {
      consumer = sb.CdcConsumerFor(kCdcSlot, load::CdcPlugin::kTestDecoding);
      st = consumer->Start();
    }
    if (!st.ok()) {
      err << "demo: could not start the CDC consumer: " << st.message() << "\n";
      out << "DEMO RESULT " << DemoResult(n).dump() << "\n";
      return 1;
    }
    tl.Note(std::string("CDC consumer streaming logical slot ") + kCdcSlot +
            " through the router (pg_recvlogical, test_decoding, role app)");
  }

  std::vector<std::unique_ptr<load::LedgerWriter>> writers;
  for (int w = 1; w <= 2; ++w) {
    writers.push_back(std::make_unique<load::LedgerWriter>(sb.AppConninfo(), w));
    writers.back()->Start();
  }
  load::PgbenchLoad pgbench({.conninfo = sb.AppConninfo(),
                             .clients = opts.pgbench_clients,
                             .threads = 2,
                             .chunk_seconds = 3,
                             .log_dir = sb.dir() + "/pgbench-logs"});
  pgbench.Start();
  tl.Note("load started through the router: pgbench tpcb (" + std::to_string(opts.pgbench_clients) +
          " clients) + 2 ledger writers");
  std::this_thread::sleep_for(std::chrono::seconds(2));

  // By name: pgshiftd takes the source, target and router from its inventory.
  json options = {{"auto_cutover", true},
                  {"auto_finalize", true},
                  {"sustain_seconds", opts.sustain_seconds},
                  {"verify_seconds", opts.verify_seconds},
                  {"poll_ms", 100}};
  auto created = sb.Api("POST", "/v1/databases/app/migrations", json{{"options", options}}.dump());
  std::string id, state = "error";
  json final_m;
  if (!created.ok() || (*created)["status"] != 201) {
    err << "demo: pgshiftd refused the migration: "
        << (created.ok() ? (*created)["body"].dump() : created.status().message()) << "\n";
  } else {
    id = (*created)["body"]["id"];
    tl.Note("migration " + id + " of app created (POST /v1/databases/app/migrations)");
    const int64_t deadline = MonotonicMs() + 300000;
    while (MonotonicMs() < deadline) {
      tl.Poll(id);
      auto m = sb.Api("GET", "/v1/migrations/" + id);
      if (m.ok() && (*m)["status"] == 200) {
        final_m = (*m)["body"];
        const std::string phase = final_m.value("phase", "");
        if (phase == "finalized" || phase == "rolled_back" ||
            final_m.value("state", "") == "failed" || final_m.value("state", "") == "blocked") {
          break;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    tl.Poll(id);
    state = final_m.value("state", "timeout");
    if (final_m.value("phase", "") != "finalized" && state != "failed")
      state = final_m.value("phase", state);
  }
  // Keep writing for a moment on the new primary, then stop.
  std::this_thread::sleep_for(std::chrono::seconds(1));
  for (auto& w : writers) w->Stop();
  pgbench.Stop();
  tl.Note("load stopped");

  n.state = state;
  const std::string check_on = state == "finalized" ? sb.TargetConninfo() : sb.SourceConninfo();
  for (auto& w : writers) {
    auto st = w->Stats();
    n.committed += st.committed;
    n.failed += st.failed + st.uncertain;
    n.max_latency_ms = std::max(n.max_latency_ms, st.max_latency_us / 1000.0);
    for (const auto& e : st.errors) err << "ledger writer " << w->writer_id() << ": " << e << "\n";
    auto check = load::CheckLedger(check_on, w->writer_id(), w->Acknowledged());
    if (!check.ok()) {
      err << "demo: ledger check failed: " << check.status().message() << "\n";
      n.lost += st.committed;
      continue;
    }
    n.lost += check->lost;
    n.duplicated += check->duplicated;
  }
  auto pb = pgbench.Stats();
  n.committed += pb.transactions;
  n.failed += pb.failed;
  n.max_latency_ms = std::max(n.max_latency_ms, pb.max_latency_ms);
  for (const auto& e : pb.errors) err << "pgbench: " << e << "\n";
  n.stall_ms = final_m["result"].value("hold_ms", 0.0);

  out << "\nledger: " << n.committed << " committed transactions (" << pb.transactions
      << " pgbench, " << n.committed - pb.transactions << " ledger rows), " << n.lost << " lost, "
      << n.duplicated << " duplicated, " << n.failed << " failed\n";
  if (consumer) CheckConsumer(*consumer, writers, n, out, err);
  if (!final_m.is_null() && final_m.contains("result")) {
    const json& r = final_m["result"];
    out << "cutover: final LSN " << r.value("final_lsn", "?") << ", timeline "
        << r.value("timeline", 0) << ", traffic held " << r.value("hold_ms", 0) << " ms\n";
  }
  if (opts.keep) out << "sandbox kept in " << sb.dir() << "\n";
  out << "DEMO RESULT " << DemoResult(n).dump() << "\n" << std::flush;
  const bool ok = state == "finalized" && n.failed == 0 && n.lost == 0 && n.duplicated == 0 &&
                  n.cdc_lost == 0 && n.cdc_duplicated == 0;
  return ok ? 0 : 1;
}

}  // namespace pgshift::demo
