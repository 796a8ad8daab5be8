#include "api/migration_view.h"

#include "model/migration.h"
#include "model/state.h"
#include "pg/conn.h"

namespace pgshift::api {
namespace {

using nlohmann::json;

bool IsConninfoKey(const std::string& key) { return key == "conninfo" || key == "admin_conninfo"; }

void RedactInPlace(json& j) {
  if (j.is_object()) {
    for (auto& [k, v] : j.items()) {
      if (v.is_string() && IsConninfoKey(k)) {
        v = RedactConninfo(v.get<std::string>());
      } else {
        RedactInPlace(v);
      }
    }
  } else if (j.is_array()) {
    for (auto& v : j) RedactInPlace(v);
  }
}

bool HasSlotFinding(const json& findings) {
  if (!findings.is_array()) return false;
  for (const auto& f : findings) {
    if (f.value("id", "") == "slot_health" && !f.value("subject", "").empty() &&
        f.value("severity", "ok") != "ok" && !f.value("overridden", false)) {
      return true;
    }
  }
  return false;
}

}  // namespace

std::string RedactConninfo(const std::string& conninfo) {
  auto kv = ParseConninfo(conninfo);
  if (!kv.ok()) return kMaskedSecret;  // cannot tell where a password would be
  auto it = kv->find("password");
  if (it == kv->end()) return conninfo;
  it->second = kMaskedSecret;
  return BuildConninfo(*kv);
}

json RedactSpec(const json& spec) {
  json out = spec;
  RedactInPlace(out);
  return out;
}

std::vector<std::string> AvailableActions(const json& m) {
  const auto phase = ParsePhase(m.value("phase", ""));
  if (!phase || IsTerminal(*phase)) return {};
  const auto state = ParseState(m.value("state", ""));
  // Only an operator resolves these; waiting is not stuck.
  const bool stuck =
      state && (*state == MigrationState::kFailed || *state == MigrationState::kBlocked);
  const json findings = m.value("findings", json::array());
  const bool blocking = !BlockingSummary(findings).empty();
  std::vector<std::string> out;
  if (!stuck && static_cast<int>(*phase) <= static_cast<int>(Phase::kReady)) {
    out.push_back("cutover");
  }
  if (*phase != Phase::kFinalize && *phase != Phase::kRollingBack) out.push_back("rollback");
  if (*phase == Phase::kVerify && !blocking) out.push_back("finalize");
  if (blocking) out.push_back("override");
  if (stuck) out.push_back("retry");
  if (HasSlotFinding(findings)) out.push_back("drop_slot");
  return out;
}

json MigrationView(json m, const std::string& database, bool can_act) {
  if (m.contains("spec")) m["spec"] = RedactSpec(m["spec"]);
  m["database"] = database.empty() ? json(nullptr) : json(database);
  m["actions"] = can_act ? AvailableActions(m) : std::vector<std::string>{};
  return m;
}

}  // namespace pgshift::api
