#include "checks/finding.h"

namespace pgshift::checks {

const char* SeverityName(Severity s) {
  switch (s) {
    case Severity::kOk: return "ok";
    case Severity::kWarning: return "warning";
    case Severity::kBlocking: return "blocking";
  }
  return "ok";
}

Result<Severity> ParseSeverity(const std::string& s) {
  if (s == "ok") return Severity::kOk;
  if (s == "warning") return Severity::kWarning;
  if (s == "blocking") return Severity::kBlocking;
  return InvalidArgument("unknown severity '" + s + "' (expected ok, warning or blocking)");
}

nlohmann::json Finding::ToJson() const {
  nlohmann::json j = {{"id", id},           {"severity", SeverityName(severity)},
                      {"subject", subject}, {"value", value},
                      {"threshold", threshold}, {"message", message},
                      {"remedy", remedy}};
  if (overridden) {
    j["overridden"] = true;
    j["override_reason"] = override_reason;
  }
  return j;
}

Result<Finding> Finding::FromJson(const nlohmann::json& j) {
  if (!j.is_object()) return InvalidArgument("a finding must be a JSON object");
  Finding f;
  f.id = j.value("id", "");
  PGSHIFT_ASSIGN_OR_RETURN(f.severity, ParseSeverity(j.value("severity", "ok")));
  f.subject = j.value("subject", "");
  f.value = j.value("value", nlohmann::json());
  f.threshold = j.value("threshold", nlohmann::json());
  f.message = j.value("message", "");
  f.remedy = j.value("remedy", "");
  f.overridden = j.value("overridden", false);
  f.override_reason = j.value("override_reason", "");
  return f;
}

nlohmann::json FindingsToJson(const std::vector<Finding>& findings) {
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& f : findings) arr.push_back(f.ToJson());
  return {{"findings", arr}};
}

}  // namespace pgshift::checks
