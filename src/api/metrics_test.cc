// The Prometheus exposition: well-formed text (every sample line parses,
// HELP/TYPE once per family) and the values taken from the migrations.
#include "api/metrics.h"

#include <gtest/gtest.h>

#include <map>
#include <regex>
#include <sstream>

namespace pgshift::api {
namespace {

using nlohmann::json;

// name{labels} → value for every sample; fails the test on a malformed line.
std::map<std::string, double> Parse(const std::string& text) {
  static const std::regex kSample(
      R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*"(,[a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*")*)?\})? (-?[0-9.eE+\-]+|NaN|[+-]Inf)$)");
  static const std::regex kMeta(R"(^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) .+$)");
  std::map<std::string, double> out;
  std::map<std::string, int> types;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    std::smatch m;
    if (std::regex_match(line, m, kMeta)) {
      if (m[1] == "TYPE") {
        EXPECT_EQ(++types[m[2]], 1) << "TYPE twice for " << m[2];
      }
      continue;
    }
    if (!std::regex_match(line, m, kSample)) {
      ADD_FAILURE() << "malformed sample line: " << line;
      continue;
    }
    const std::string key = line.substr(0, line.rfind(' '));
    out[key] = std::stod(line.substr(line.rfind(' ') + 1));
  }
  return out;
}

TEST(MetricsTest, SeriesFromMigrations) {
  json migrations = json::array(
      {{{"id", "m-1"},
        {"name", "app"},
        {"database", "app"},
        {"phase", "sync"},
        {"state", "running"},
        {"progress",
         {{"lag_bytes", 4096},
          {"lag_seconds", 0.5},
          {"source_wal_bps", 100.0},
          {"replay_bps", 90.0},
          {"basebackup_pct", 100}}},
        {"result",
         {{"phase_started_ms", {{"preflight", 1000}, {"provision", 3000}, {"sync", 4000}}},
          {"cutover_attempts", 0}}},
        {"findings", json::array({{{"id", "wal_rate"}, {"severity", "warning"}}})}},
       {{"id", "m-2"},
        {"name", "x \"q\""},
        {"database", nullptr},
        {"phase", "rolled_back"},
        {"state", "rolled_back"},
        {"result", {{"hold_ms", 35}, {"cutover_attempts", 1}}}}});
  const std::string text = RenderMetrics(migrations, 10000);
  auto s = Parse(text);
  EXPECT_EQ(s["pgshift_migrations{phase=\"sync\",state=\"running\"}"], 1);
  EXPECT_EQ(s["pgshift_replication_lag_bytes{migration=\"m-1\",database=\"app\"}"], 4096);
  EXPECT_EQ(s["pgshift_replication_lag_seconds{migration=\"m-1\",database=\"app\"}"], 0.5);
  EXPECT_EQ(s["pgshift_source_wal_bytes_per_second{migration=\"m-1\",database=\"app\"}"], 100);
  EXPECT_EQ(s["pgshift_basebackup_progress_ratio{migration=\"m-1\",database=\"app\"}"], 1);
  EXPECT_EQ(
      s["pgshift_phase_duration_seconds{migration=\"m-1\",database=\"app\",phase=\"preflight\"}"],
      2);
  EXPECT_EQ(s["pgshift_phase_duration_seconds{migration=\"m-1\",database=\"app\",phase=\"sync\"}"],
            6);
  EXPECT_EQ(s["pgshift_cutover_hold_seconds{migration=\"m-2\",database=\"\"}"], 0.035);
  EXPECT_EQ(s["pgshift_rollbacks_total"], 1);
  EXPECT_EQ(s["pgshift_migrations_created_total"], 2);
  EXPECT_EQ(s["pgshift_findings{migration=\"m-1\",database=\"app\",severity=\"warning\"}"], 1);
  EXPECT_NE(text.find("name=\"x \\\"q\\\"\""), std::string::npos) << "label values are escaped";
  EXPECT_EQ(Parse(RenderMetrics(json::array(), 0))["pgshift_migrations_created_total"], 0);
}

}  // namespace
}  // namespace pgshift::api
