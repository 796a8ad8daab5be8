// Finding: one result of a validation check (preflight, sync, validate,
// parity). Plain value type; thread-compatible.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace pgshift::checks {

enum class Severity { kOk, kWarning, kBlocking };
const char* SeverityName(Severity s);  // "ok" | "warning" | "blocking"
Result<Severity> ParseSeverity(const std::string& s);

struct Finding {
  std::string id;        // slot_health, wal_rate, lag_sustained, params, extensions, ...
  Severity severity = Severity::kOk;
  std::string subject;   // the slot, table, setting or extension concerned ("" = whole cluster)
  nlohmann::json value;  // what was measured
  nlohmann::json threshold;
  std::string message;   // one line: what was found
  std::string remedy;    // what to do about it
  // Set by the workflow when an operator overrides a blocking finding.
  bool overridden = false;
  std::string override_reason;

  nlohmann::json ToJson() const;
  static Result<Finding> FromJson(const nlohmann::json& j);
  // True when this finding stops a cutover (blocking and not overridden).
  bool Blocks() const { return severity == Severity::kBlocking && !overridden; }
};

nlohmann::json FindingsToJson(const std::vector<Finding>& findings);

}  // namespace pgshift::checks
