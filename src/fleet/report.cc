#include "fleet/report.h"

#include <algorithm>
#include <sstream>

#include "common/clock.h"

namespace pgshift::fleet {

using nlohmann::json;

namespace {

// Time spent in each phase, in the order entered, from the event timeline
// (a phase lasts until the next event of another phase; the last one until
// `end_ms`).
json PhaseTimings(const json& events, int64_t end_ms) {
  json out = json::array();
  std::string phase;
  int64_t since = 0;
  auto close = [&](int64_t at) {
    if (!phase.empty()) out.push_back({{"phase", phase}, {"ms", std::max<int64_t>(0, at - since)}});
  };
  for (const auto& e : events) {
    const std::string p = e.value("phase", "");
    const int64_t at = e.value("at_ms", int64_t{0});
    if (p == phase) continue;
    close(at);
    phase = p;
    since = at;
  }
  close(end_ms);
  return out;
}

std::string TimeOrNull(int64_t ms) { return ms ? FormatTimeMs(ms) : ""; }

}  // namespace

json BuildReport(const FleetRun& run, MigrationService& svc) {
  json dbs = json::array();
  int64_t max_hold = 0;
  std::map<std::string, int> counts;
  for (const auto& d : run.dbs) {
    ++counts[DbStatusName(d.status)];
    json r = {{"name", d.name},
              {"wave", run.plan.waves[d.wave].name},
              {"status", DbStatusName(d.status)},
              {"migration_id", d.migration_id},
              {"phase", ""},
              {"state", ""},
              {"error", d.error},
              {"cutover", d.cutover},
              {"started_at", TimeOrNull(d.started_ms)},
              {"ended_at", TimeOrNull(d.ended_ms)},
              {"duration_ms", d.started_ms && d.ended_ms ? d.ended_ms - d.started_ms : 0},
              {"phases", json::array()},
              {"findings", json::array()},
              {"hold_ms", nullptr},
              {"rolled_back", d.status == DbStatus::kRolledBack}};
    if (!d.migration_id.empty()) {
      if (auto m = svc.Get(d.migration_id); m.ok()) {
        r["phase"] = m->value("phase", "");
        r["state"] = m->value("state", "");
        if (r["error"].get<std::string>().empty()) r["error"] = m->value("error", "");
        r["findings"] = m->value("findings", json::array());
        const json result = m->value("result", json::object());
        if (result.contains("hold_ms") && result["hold_ms"].is_number_integer()) {
          r["hold_ms"] = result["hold_ms"];
          max_hold = std::max(max_hold, result["hold_ms"].get<int64_t>());
        }
        if (result.contains("rolled_back_at_ms")) r["rolled_back"] = true;
      }
      if (auto ev = svc.Events(d.migration_id); ev.ok()) {
        json events = ev->is_object() ? ev->value("events", json::array()) : *ev;
        r["phases"] = PhaseTimings(events, d.ended_ms ? d.ended_ms : DefaultClock().NowMs());
      }
    }
    dbs.push_back(std::move(r));
  }
  json summary = {{"databases", run.dbs.size()}, {"max_hold_ms", max_hold}};
  for (const char* k : {"succeeded", "failed", "rolled_back", "running", "pending"}) {
    summary[k] = counts[k];
  }
  summary["running"] = counts["running"] + counts["starting"];
  return {{"summary", summary}, {"databases", dbs}};
}

std::string RenderRunText(const json& run) {
  std::ostringstream out;
  out << "fleet run " << run.value("id", "") << ": " << run.value("status", "");
  if (!run.value("reason", "").empty()) out << " — " << run.value("reason", "");
  out << "\n";
  const json report = run.value("report", json::object());
  const json s = report.value("summary", json::object());
  out << "  " << s.value("databases", 0) << " databases: " << s.value("succeeded", 0)
      << " succeeded, " << s.value("failed", 0) << " failed, " << s.value("rolled_back", 0)
      << " rolled back, " << s.value("running", 0) << " running, " << s.value("pending", 0)
      << " not started; worst cutover hold " << s.value("max_hold_ms", 0) << " ms\n";
  for (const auto& d : report.value("databases", json::array())) {
    out << "  [" << d.value("wave", "") << "] " << d.value("name", "") << "  "
        << d.value("status", "");
    if (!d.value("migration_id", "").empty()) {
      out << "  " << d.value("migration_id", "") << " (" << d.value("phase", "") << ", "
          << d.value("state", "") << ")";
    }
    if (d.value("duration_ms", int64_t{0}) > 0) out << "  " << d["duration_ms"] << " ms";
    if (d["hold_ms"].is_number()) out << "  hold " << d["hold_ms"] << " ms";
    if (d.value("rolled_back", false)) out << "  rolled back";
    out << "\n";
    if (!d.value("cutover", "").empty()) out << "      cutover: " << d.value("cutover", "") << "\n";
    if (!d.value("error", "").empty()) out << "      error: " << d.value("error", "") << "\n";
    std::string phases;
    for (const auto& p : d.value("phases", json::array())) {
      phases += (phases.empty() ? "" : ", ") + p.value("phase", "") + " " +
                std::to_string(p.value("ms", int64_t{0})) + " ms";
    }
    if (!phases.empty()) out << "      phases: " << phases << "\n";
    for (const auto& f : d.value("findings", json::array())) {
      out << "      finding " << f.value("severity", "") << " " << f.value("id", "") << ": "
          << f.value("message", "") << "\n";
    }
  }
  return out.str();
}

}  // namespace pgshift::fleet
