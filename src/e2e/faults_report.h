// The `make e2e-faults` report: every scenario of the faults_e2e_test process
// (whichever source file runs it) adds its line and counts here, and the
// report file named by PGSHIFT_E2E_FAULTS_REPORT is rewritten after each one,
// ending with the `E2E faults {...}` summary line.
//
// Thread-compatible: scenarios run one after another on gtest's thread.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace pgshift::e2e {

// Where `make e2e-faults` wants the report (each scenario, then the summary).
inline constexpr const char* kFaultsReportEnv = "PGSHIFT_E2E_FAULTS_REPORT";

struct FaultsTotals {
  int scenarios = 0;
  int passed = 0;
  int64_t lost_rows = 0;
  int64_t duplicated_rows = 0;
  // Migration events (a phase's transition) missing, and ledger rows a CDC
  // consumer did not receive; rows it received twice.
  int64_t lost_events = 0;
  int64_t duplicated_events = 0;
  std::vector<std::string> lines;

  // One scenario's outcome; `note` says why it failed.
  void AddScenario(const std::string& name, bool ok, const std::string& note = "") {
    ++scenarios;
    passed += ok;
    lines.push_back("scenario " + name + ": " +
                    (ok ? "passed" : "FAILED" + (note.empty() ? "" : " (" + note + ")")));
  }

  void Write() const {
    const char* path = std::getenv(kFaultsReportEnv);
    if (path == nullptr || *path == '\0') return;
    std::ofstream out(path, std::ios::trunc);
    for (const auto& l : lines) out << l << "\n";
    out << "E2E faults "
        << nlohmann::ordered_json{{"scenarios", scenarios},
                                  {"passed", passed},
                                  {"lost_rows", lost_rows},
                                  {"duplicated_rows", duplicated_rows},
                                  {"lost_events", lost_events},
                                  {"duplicated_events", duplicated_events}}
               .dump()
        << "\n";
  }
};

inline FaultsTotals& TheFaultsTotals() {
  static FaultsTotals t;
  return t;
}

}  // namespace pgshift::e2e
