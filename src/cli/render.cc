#include "cli/render.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "model/phase.h"
#include "model/state.h"

namespace pgshift::cli {
namespace {

using nlohmann::json;

// Field access that never throws: "" / null for missing or mistyped fields.
std::string Str(const json& j, const char* key) {
  if (!j.is_object() || !j.contains(key)) return "";
  const json& v = j[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return "";
  return v.dump();
}
bool HasNumber(const json& j, const char* key) {
  return j.is_object() && j.contains(key) && j[key].is_number();
}
double Num(const json& j, const char* key) { return HasNumber(j, key) ? j[key].get<double>() : 0; }
const json& Obj(const json& j, const char* key) {
  static const json kEmpty = json::object();
  if (j.is_object() && j.contains(key) && j[key].is_object()) return j[key];
  return kEmpty;
}
json ArrayOf(const json& j, const char* key) {
  if (j.is_array()) return j;
  if (j.is_object() && j.contains(key) && j[key].is_array()) return j[key];
  return json::array();
}

std::string Fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string Pad(const std::string& s, size_t width) {
  return s.size() >= width ? s : s + std::string(width - s.size(), ' ');
}

// A table with a header row; columns as wide as their widest cell, the last
// column unpadded.
std::string Table(const std::vector<std::vector<std::string>>& rows, const std::string& indent) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line = indent;
    for (size_t i = 0; i < row.size(); ++i) {
      line += (i + 1 == row.size()) ? row[i] : Pad(row[i], widths[i]) + "  ";
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  }
  return out;
}

std::string NextStep(const json& m) {
  const std::string id = Str(m, "id");
  const std::string state = Str(m, "state");
  const std::string pending = Str(m, "pending_action");
  if (state == StateName(MigrationState::kWaiting)) {
    if (pending == "finalize") {
      return "verified; retire the source with `pgshift migration finalize " + id +
             "` (or roll back with `pgshift migration rollback " + id +
             (Str(m, "rollback_path") == "reverse_replication" ? "`, keeping the target's writes)"
                                                               : " --discard-target-writes`)");
    }
    if (pending.empty() || pending == "cutover") {
      return "ready; approve the cutover with `pgshift migration cutover " + id + "`";
    }
    return "waiting for " + pending + ": `pgshift migration " + pending + " " + id + "`";
  }
  if (state == StateName(MigrationState::kBlocked)) {
    return "blocked by findings; fix them, or override one with `pgshift migration override " + id +
           " --finding ID --reason TEXT`";
  }
  if (state == StateName(MigrationState::kFailed)) {
    return "failed; read the error and events (`pgshift migration events " + id + "`)";
  }
  return "";
}

std::string SeverityCell(const json& f) {
  std::string sev = Str(f, "severity");
  if (f.is_object() && f.value("overridden", false) == true) sev += " (overridden)";
  return sev;
}

}  // namespace

bool IsTerminalState(const std::string& state) {
  return state == StateName(MigrationState::kFinalized) ||
         state == StateName(MigrationState::kRolledBack) ||
         state == StateName(MigrationState::kFailed);
}

std::string HumanBytes(double bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  double v = bytes;
  while (std::abs(v) >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  return u == 0 ? Fixed(v, 0) + " B" : Fixed(v, 1) + " " + kUnits[u];
}

std::string HumanMillis(double ms) {
  if (ms < 1000) return Fixed(ms, 0) + " ms";
  double s = ms / 1000;
  if (s < 60) return Fixed(s, 1) + " s";
  long total = static_cast<long>(std::lround(s));
  char buf[64];
  if (total < 3600) {
    std::snprintf(buf, sizeof buf, "%ldm%02lds", total / 60, total % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", total / 3600, (total % 3600) / 60);
  }
  return buf;
}

std::string ProgressBar(double pct, size_t cells) {
  pct = std::clamp(pct, 0.0, 100.0);
  size_t filled = static_cast<size_t>(std::lround(pct / 100.0 * static_cast<double>(cells)));
  return "[" + std::string(filled, '#') + std::string(cells - filled, '-') + "] " + Fixed(pct, 0) +
         "%";
}

std::string RenderPhaseLine(const std::string& phase, const std::string& state, size_t width,
                            const std::string& indent) {
  // The branch the phase is on (an unknown phase, from a newer server: the
  // main path, nothing marked). [x] done, [>] current, [!] current and
  // failed, [ ] to come; a terminal phase is done.
  const auto current = ParsePhase(phase);
  const bool failed = state == StateName(MigrationState::kFailed);
  std::vector<std::string> items;
  for (const auto& info : PhasesOf(current ? InfoOf(*current).branch : PhaseBranch::kMain)) {
    std::string mark = "[ ]";
    if (current && info.phase == *current) {
      mark = IsTerminal(info.phase) ? "[x]" : (failed ? "[!]" : "[>]");
    } else if (current && PhaseOrder(info.phase) < PhaseOrder(*current)) {
      mark = "[x]";
    }
    items.push_back(mark + " " + info.name);
  }
  std::string out, line;
  for (const auto& item : items) {
    if (!line.empty() && indent.size() + line.size() + 2 + item.size() > width) {
      out += indent + line + "\n";
      line.clear();
    }
    line += (line.empty() ? "" : "  ") + item;
  }
  if (!line.empty()) out += indent + line + "\n";
  return out;
}

// One row per logical slot pgshift carries (result.cdc_slots): its consumer
// and the positions recorded, drained and recreated on the target.
std::string RenderCdcSlots(const json& slots, const std::string& indent) {
  std::vector<std::vector<std::string>> rows = {{"SLOT", "PLUGIN", "DATABASE", "CONSUMER", "STATE",
                                                 "RECORDED", "DRAINED", "RECREATED", "ON TARGET"}};
  auto lsn = [](const json& s, const char* key) {
    return Str(s, key).empty() ? std::string("-") : Str(s, key);
  };
  for (const auto& s : slots) {
    const json& c = Obj(s, "consumer");
    std::string consumer = "not connected";
    if (HasNumber(c, "pid") && Num(c, "pid") > 0) {
      consumer = (Str(c, "application_name").empty() ? "pid " + Fixed(Num(c, "pid"), 0)
                                                     : Str(c, "application_name")) +
                 (c.value("through_router", false) ? " via router"
                                                   : " direct from " + Str(c, "client_addr"));
    }
    rows.push_back({Str(s, "name"), Str(s, "plugin"), Str(s, "database"), consumer, Str(s, "state"),
                    lsn(s, "recorded_lsn"), lsn(s, "drained_lsn"), lsn(s, "recreated_lsn"),
                    lsn(s, "target_confirmed_lsn")});
  }
  return Table(rows, indent);
}

namespace {

// A TrafficSample (model/traffic.h) on one line: rate, errors, latency.
std::string TrafficLine(const json& t) {
  std::string s = Fixed(Num(t, "transactions"), 0) + " txns, " + Fixed(Num(t, "tps"), 1) + "/s";
  if (HasNumber(t, "error_rate")) s += ", errors " + Fixed(Num(t, "error_rate") * 100, 2) + "%";
  if (HasNumber(t, "p99_ms")) {
    s += ", p50/p95/p99 " + Fixed(Num(t, "p50_ms"), 1) + "/" + Fixed(Num(t, "p95_ms"), 1) + "/" +
         Fixed(Num(t, "p99_ms"), 1) + " ms";
  } else if (HasNumber(t, "avg_ms")) {
    s += ", avg " + Fixed(Num(t, "avg_ms"), 1) + " ms";
  }
  if (Num(t, "timed_transactions") < Num(t, "transactions"))
    s += " (" + Fixed(Num(t, "timed_transactions"), 0) + " timed)";
  return s;
}

// The baseline and the post-cutover health report, or "".
std::string RenderTraffic(const json& baseline, const json& health, const std::string& indent) {
  std::ostringstream out;
  if (!baseline.empty()) out << indent << Pad("Baseline", 14) << TrafficLine(baseline) << "\n";
  if (health.empty()) return out.str();
  if (!Obj(health, "window").empty())
    out << indent << Pad("After cutover", 14) << TrafficLine(Obj(health, "window")) << "\n";
  std::string verdict = "not judged yet";
  if (health.contains("matched_baseline"))
    verdict = health.value("matched_baseline", false) ? "matched the baseline"
                                                      : "did not match the baseline";
  if (!Str(health, "anomaly").empty())
    verdict += ": " + Str(health, "anomaly") + " (" + Str(health, "action") + ")";
  else if (!Str(health, "note").empty())
    verdict += " (" + Str(health, "note") + ")";
  out << indent << Pad("Health", 14) << verdict << "\n";
  return out.str();
}

// Each instance of a route served by several (progress.route_instances), or "".
std::string RenderRouteInstances(const json& progress, const json& result,
                                 const std::string& indent) {
  const json list = ArrayOf(progress.value("route_instances", json::array()), "route_instances");
  if (list.empty()) return "";
  std::vector<std::vector<std::string>> rows = {
      {"INSTANCE", "REACHABLE", "UPSTREAM", "HELD", "NOTE"}};
  for (const auto& i : list) {
    const bool reachable = i.is_object() && i.value("reachable", false) == true;
    const bool held = i.is_object() && i.value("held", false) == true;
    rows.push_back({Str(i, "name"), reachable ? "yes" : "no",
                    Str(i, "upstream").empty() ? "-" : Str(i, "upstream"),
                    reachable ? (held ? "yes" : "no") : "-", Str(i, "error")});
  }
  std::string head;
  if (HasNumber(result, "route_repoints"))
    head = indent + Fixed(Num(result, "route_repoints"), 0) + " repointed by pgshiftd\n";
  return head + Table(rows, indent);
}

}  // namespace

std::string RenderStatus(const json& m, const json& events_json, const StatusViewOptions& opt) {
  std::ostringstream out;
  const std::string id = Str(m, "id");
  const std::string phase = Str(m, "phase");
  const std::string state = Str(m, "state");
  const std::string label_indent = "  ";
  const std::string value_indent = "  " + std::string(12, ' ');

  out << "Migration " << (Str(m, "name").empty() ? "(unnamed)" : Str(m, "name")) << "  (" << id
      << ")\n";
  out << label_indent << Pad("Phase", 12) << (phase.empty() ? "?" : phase) << "\n";
  out << RenderPhaseLine(phase, state, opt.width, value_indent);
  out << label_indent << Pad("State", 12) << (state.empty() ? "?" : state);
  if (!Str(m, "pending_action").empty()) out << " (awaiting " << Str(m, "pending_action") << ")";
  out << "\n";
  if (!Str(m, "created_at").empty())
    out << label_indent << Pad("Created", 12) << Str(m, "created_at") << "\n";
  if (!Str(m, "updated_at").empty())
    out << label_indent << Pad("Updated", 12) << Str(m, "updated_at") << "\n";
  if (!Str(m, "rollback_path").empty() && Str(m, "rollback_path") != "none") {
    out << label_indent << Pad("Rollback", 12) << Str(m, "rollback_path") << "\n";
  }

  const json& p = Obj(m, "progress");
  const json& options = Obj(Obj(m, "spec"), "options");
  std::ostringstream prog;
  if (HasNumber(p, "basebackup_pct")) {
    prog << label_indent << Pad("Base backup", 14) << ProgressBar(Num(p, "basebackup_pct")) << "\n";
  }
  if (HasNumber(p, "lag_bytes") || HasNumber(p, "lag_seconds")) {
    prog << label_indent << Pad("Lag", 14);
    if (HasNumber(p, "lag_bytes")) {
      double b = Num(p, "lag_bytes");
      prog << HumanBytes(b);
      if (b >= 1024) prog << " (" << Fixed(b, 0) << " bytes)";
    }
    if (HasNumber(p, "lag_seconds")) {
      prog << (HasNumber(p, "lag_bytes") ? ", " : "") << Fixed(Num(p, "lag_seconds"), 1)
           << " s behind";
    }
    prog << "\n";
  }
  if (HasNumber(p, "in_sync_ms")) {
    prog << label_indent << Pad("In sync", 14) << HumanMillis(Num(p, "in_sync_ms"));
    if (HasNumber(options, "sustain_seconds")) {
      double need = Num(options, "sustain_seconds");
      prog << " of " << HumanMillis(need * 1000) << " required";
      if (Num(p, "in_sync_ms") >= need * 1000) prog << " (met)";
    }
    if (HasNumber(options, "lag_threshold_bytes")) {
      prog << ", lag threshold " << HumanBytes(Num(options, "lag_threshold_bytes"));
    }
    prog << "\n";
  }
  if (HasNumber(p, "source_wal_bps") || HasNumber(p, "replay_bps")) {
    prog << label_indent << Pad("WAL rate", 14) << "source " << HumanBytes(Num(p, "source_wal_bps"))
         << "/s, replay " << HumanBytes(Num(p, "replay_bps")) << "/s\n";
  }
  if (!prog.str().empty()) out << "\nProgress\n" << prog.str();

  json findings =
      m.is_object() ? ArrayOf(m.value("findings", json::array()), "findings") : json::array();
  if (!findings.empty()) {
    out << "\nFindings\n";
    std::vector<std::vector<std::string>> rows = {{"ID", "SEVERITY", "SUBJECT", "MESSAGE"}};
    for (const auto& f : findings) {
      rows.push_back({Str(f, "id"), SeverityCell(f),
                      Str(f, "subject").empty() ? "-" : Str(f, "subject"), Str(f, "message")});
    }
    std::string table = Table(rows, label_indent);
    // Remedies go under their finding's row, for findings that are not ok.
    std::istringstream lines(table);
    std::string line;
    size_t row = 0;
    while (std::getline(lines, line)) {
      out << line << "\n";
      if (row > 0) {
        const json& f = findings[row - 1];
        if (Str(f, "severity") != "ok" && !Str(f, "remedy").empty()) {
          out << label_indent << "  remedy: " << Str(f, "remedy") << "\n";
        }
        if (f.is_object() && f.value("overridden", false) == true &&
            !Str(f, "override_reason").empty()) {
          out << label_indent << "  override reason: " << Str(f, "override_reason") << "\n";
        }
      }
      ++row;
    }
  }

  const std::string traffic =
      RenderTraffic(Obj(p, "baseline"), Obj(Obj(m, "result"), "health"), label_indent);
  if (!traffic.empty()) out << "\nTraffic through the router\n" << traffic;

  const std::string instances = RenderRouteInstances(p, Obj(m, "result"), label_indent);
  if (!instances.empty()) out << "\nRoute instances\n" << instances;

  const json cdc = ArrayOf(Obj(m, "result").value("cdc_slots", json::array()), "cdc_slots");
  if (!cdc.empty()) out << "\nCDC slots\n" << RenderCdcSlots(cdc, label_indent);

  if (!events_json.is_null()) {
    json events = ArrayOf(events_json, "events");
    if (!events.empty()) {
      size_t n = std::min(opt.max_events, events.size());
      out << "\nRecent events (last " << n << " of " << events.size() << ")\n";
      std::vector<std::vector<std::string>> rows;
      for (size_t i = events.size() - n; i < events.size(); ++i) {
        const json& e = events[i];
        rows.push_back({Str(e, "at"), Str(e, "phase"), Str(e, "kind"), Str(e, "message")});
      }
      out << Table(rows, label_indent);
    }
  }

  const json& result = Obj(m, "result");
  if (!result.empty()) {
    out << "\nResult\n";
    std::vector<std::vector<std::string>> rows;
    for (const auto& [k, v] : result.items()) {
      if (k == "cdc_slots" || k == "health") continue;  // their own sections above
      rows.push_back({k, v.is_string() ? v.get<std::string>() : v.dump()});
    }
    out << Table(rows, label_indent);
  }

  if (!Str(m, "error").empty()) out << "\nError: " << Str(m, "error") << "\n";
  std::string next = NextStep(m);
  if (!next.empty()) out << "\nNext: " << next << "\n";
  return out.str();
}

std::string RenderRollbackPlan(const json& answer) {
  const json& plan = Obj(answer, "rollback");
  std::ostringstream out;
  out << "Rollback of " << Str(answer, "id") << " (dry run, phase " << Str(plan, "phase")
      << "): path " << Str(plan, "path") << "\n";
  if (!Str(plan, "refused").empty()) out << "  refused: " << Str(plan, "refused") << "\n";
  for (const char* key : {"moves_back", "would_lose", "obstacles"}) {
    const json items = ArrayOf(plan.value(key, json::array()), key);
    if (items.empty()) continue;
    std::string label = key;
    std::replace(label.begin(), label.end(), '_', ' ');
    out << "  " << label << ":\n";
    for (const auto& x : items)
      out << "    - " << (x.is_string() ? x.get<std::string>() : x.dump()) << "\n";
  }
  out << "  expected hold: "
      << (HasNumber(plan, "expected_hold_ms")
              ? HumanMillis(Num(plan, "expected_hold_ms")) + " (as long as the cutover's)"
              : std::string("none beyond routing back"))
      << "\n";
  if (HasNumber(plan, "apply_lag_bytes")) {
    out << "  source behind the target by " << HumanBytes(Num(plan, "apply_lag_bytes")) << "\n";
  }
  if (plan.value("needs_confirmation", false) == true) {
    out << "  the target's writes would be lost: confirm with --discard-target-writes\n";
  }
  return out.str();
}

std::string RenderList(const json& list) {
  json ms = ArrayOf(list, "migrations");
  if (ms.empty()) {
    return "No migrations. Create one with `pgshift migration create --name NAME --source CONNINFO "
           "--target-dir DIR --target-port PORT`.\n";
  }
  std::vector<std::vector<std::string>> rows = {{"ID", "NAME", "PHASE", "STATE", "UPDATED"}};
  for (const auto& m : ms) {
    rows.push_back(
        {Str(m, "id"), Str(m, "name"), Str(m, "phase"), Str(m, "state"), Str(m, "updated_at")});
  }
  return Table(rows, "");
}

std::string RenderEvents(const json& events_json) {
  json events = ArrayOf(events_json, "events");
  if (events.empty()) return "No events yet.\n";
  std::vector<std::vector<std::string>> rows = {{"AT", "PHASE", "KIND", "MESSAGE"}};
  for (const auto& e : events) {
    rows.push_back({Str(e, "at"), Str(e, "phase"), Str(e, "kind"), Str(e, "message")});
  }
  return Table(rows, "");
}

}  // namespace pgshift::cli
