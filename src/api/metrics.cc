#include "api/metrics.h"

#include <algorithm>
#include <map>
#include <sstream>
#include <vector>

namespace pgshift::api {
namespace {

using nlohmann::json;

using Labels = std::vector<std::pair<std::string, std::string>>;

// Collects samples per metric so each family prints HELP/TYPE once.
class Exposition {
 public:
  void Family(const std::string& name, const char* type, const char* help) {
    if (!families_.count(name)) {
      order_.push_back(name);
      families_[name] = {type, help, {}};
    }
  }
  void Sample(const std::string& name, const Labels& labels, double value) {
    std::ostringstream line;
    line << name;
    if (!labels.empty()) {
      line << "{";
      for (size_t i = 0; i < labels.size(); ++i) {
        line << (i ? "," : "") << labels[i].first << "=\"" << EscapeLabel(labels[i].second) << "\"";
      }
      line << "}";
    }
    line << " " << value;
    families_[name].samples.push_back(line.str());
  }
  std::string Text() const {
    std::ostringstream o;
    for (const auto& name : order_) {
      const auto& f = families_.at(name);
      o << "# HELP " << name << " " << f.help << "\n# TYPE " << name << " " << f.type << "\n";
      for (const auto& s : f.samples) o << s << "\n";
    }
    return o.str();
  }

 private:
  struct Fam {
    std::string type, help;
    std::vector<std::string> samples;
  };
  std::vector<std::string> order_;
  std::map<std::string, Fam> families_;
};

std::string Str(const json& j, const char* key) {
  return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : "";
}

void PhaseDurations(Exposition& x, const json& m, const Labels& base, int64_t now_ms) {
  const json result = m.value("result", json::object());
  if (!result.contains("phase_started_ms") || !result["phase_started_ms"].is_object()) return;
  std::vector<std::pair<int64_t, std::string>> starts;
  for (const auto& [phase, at] : result["phase_started_ms"].items()) {
    if (at.is_number()) starts.emplace_back(at.get<int64_t>(), phase);
  }
  std::sort(starts.begin(), starts.end());
  const std::string current = Str(m, "phase");
  for (size_t i = 0; i < starts.size(); ++i) {
    int64_t end = i + 1 < starts.size() ? starts[i + 1].first : now_ms;
    // A phase re-entered later (e.g. ready after an aborted cutover) keeps its last start.
    if (i + 1 == starts.size() && starts[i].second != current) continue;
    Labels l = base;
    l.emplace_back("phase", starts[i].second);
    x.Sample("pgshift_phase_duration_seconds", l,
             std::max<int64_t>(0, end - starts[i].first) / 1000.0);
  }
}

}  // namespace

std::string EscapeLabel(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string RenderMetrics(const json& migrations, int64_t now_ms) {
  Exposition x;
  x.Family("pgshift_migrations", "gauge", "Migrations in each phase and state.");
  x.Family("pgshift_migrations_created_total", "counter", "Migrations created.");
  x.Family("pgshift_migration_info", "gauge", "One series per migration (always 1).");
  x.Family("pgshift_replication_lag_bytes", "gauge", "Source LSN minus the target's replay LSN.");
  x.Family("pgshift_replication_lag_seconds", "gauge",
           "Replay lag the source's walsender reports.");
  x.Family("pgshift_source_wal_bytes_per_second", "gauge", "WAL the source writes, per second.");
  x.Family("pgshift_replay_bytes_per_second", "gauge", "WAL the target replays, per second.");
  x.Family("pgshift_basebackup_progress_ratio", "gauge", "Base backup progress (0 to 1).");
  x.Family("pgshift_phase_duration_seconds", "gauge",
           "Time spent in each phase; the current phase counts up.");
  x.Family("pgshift_cutover_hold_seconds", "gauge", "How long traffic was held at the cutover.");
  x.Family("pgshift_cutover_attempts_total", "counter", "Cutovers started (aborted ones too).");
  x.Family("pgshift_rollbacks_total", "counter",
           "Migrations that rolled back (or are rolling back).");
  x.Family("pgshift_findings", "gauge", "Standing (not overridden) findings by severity.");

  std::map<std::pair<std::string, std::string>, int> by_phase_state;
  int rollbacks = 0;
  const json list = migrations.is_array() ? migrations : json::array();
  for (const auto& m : list) {
    const std::string id = Str(m, "id"), phase = Str(m, "phase"), state = Str(m, "state");
    const std::string db = Str(m, "database");
    by_phase_state[{phase, state}]++;
    if (phase == "rolling_back" || phase == "rolled_back") rollbacks++;
    const Labels base = {{"migration", id}, {"database", db}};
    x.Sample("pgshift_migration_info",
             {{"migration", id},
              {"name", Str(m, "name")},
              {"database", db},
              {"phase", phase},
              {"state", state}},
             1);
    const json progress = m.value("progress", json::object());
    const std::pair<const char*, const char*> gauges[] = {
        {"lag_bytes", "pgshift_replication_lag_bytes"},
        {"lag_seconds", "pgshift_replication_lag_seconds"},
        {"source_wal_bps", "pgshift_source_wal_bytes_per_second"},
        {"replay_bps", "pgshift_replay_bytes_per_second"}};
    for (const auto& [field, metric] : gauges) {
      if (progress.contains(field) && progress[field].is_number()) {
        x.Sample(metric, base, progress[field].get<double>());
      }
    }
    if (progress.contains("basebackup_pct") && progress["basebackup_pct"].is_number()) {
      x.Sample("pgshift_basebackup_progress_ratio", base,
               progress["basebackup_pct"].get<double>() / 100.0);
    }
    PhaseDurations(x, m, base, now_ms);
    const json result = m.value("result", json::object());
    if (result.contains("hold_ms") && result["hold_ms"].is_number()) {
      x.Sample("pgshift_cutover_hold_seconds", base, result["hold_ms"].get<double>() / 1000.0);
    }
    x.Sample("pgshift_cutover_attempts_total", base, result.value("cutover_attempts", 0));
    std::map<std::string, int> severities = {{"blocking", 0}, {"warning", 0}};
    for (const auto& f : m.value("findings", json::array())) {
      const std::string sev = f.value("severity", "");
      if (severities.count(sev) && !f.value("overridden", false)) severities[sev]++;
    }
    for (const auto& [sev, n] : severities) {
      Labels l = base;
      l.emplace_back("severity", sev);
      x.Sample("pgshift_findings", l, n);
    }
  }
  for (const auto& [ps, n] : by_phase_state) {
    x.Sample("pgshift_migrations", {{"phase", ps.first}, {"state", ps.second}}, n);
  }
  x.Sample("pgshift_migrations_created_total", {}, static_cast<double>(list.size()));
  x.Sample("pgshift_rollbacks_total", {}, rollbacks);
  return x.Text();
}

}  // namespace pgshift::api
