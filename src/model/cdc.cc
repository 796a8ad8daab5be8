#include "model/cdc.h"

namespace pgshift {
namespace {

using json = nlohmann::json;

constexpr std::pair<CdcSlotState, const char*> kStateNames[] = {
    {CdcSlotState::kPlanned, "planned"},   {CdcSlotState::kRecorded, "recorded"},
    {CdcSlotState::kDrained, "drained"},   {CdcSlotState::kRecreated, "recreated"},
    {CdcSlotState::kAdvanced, "advanced"},
};

}  // namespace

const char* CdcSlotStateName(CdcSlotState s) {
  for (const auto& [st, name] : kStateNames) {
    if (st == s) return name;
  }
  return "unknown";
}

Result<CdcSlotState> ParseCdcSlotState(const std::string& s) {
  for (const auto& [st, name] : kStateNames) {
    if (s == name) return st;
  }
  return InvalidArgument("unknown CDC slot state '" + s + "'");
}

json CdcSlot::ToJson() const {
  return {{"name", name},
          {"plugin", plugin},
          {"database", database},
          {"two_phase", two_phase},
          {"consumer",
           {{"pid", consumer.pid},
            {"application_name", consumer.application_name},
            {"client_addr", consumer.client_addr},
            {"through_router", consumer.through_router}}},
          {"state", CdcSlotStateName(state)},
          {"recorded_lsn", recorded_lsn},
          {"restart_lsn", restart_lsn},
          {"drained_lsn", drained_lsn},
          {"drain_ms", drain_ms},
          {"recreated_lsn", recreated_lsn},
          {"target_confirmed_lsn", target_confirmed_lsn}};
}

Result<CdcSlot> CdcSlot::FromJson(const json& j) {
  if (!j.is_object() || !j.contains("name") || !j["name"].is_string()) {
    return InvalidArgument("a CDC slot record needs a name: " + j.dump());
  }
  CdcSlot s;
  try {
    s.name = j["name"].get<std::string>();
    s.plugin = j.value("plugin", "");
    s.database = j.value("database", "");
    s.two_phase = j.value("two_phase", false);
    const json c = j.value("consumer", json::object());
    s.consumer.pid = c.value("pid", 0);
    s.consumer.application_name = c.value("application_name", "");
    s.consumer.client_addr = c.value("client_addr", "");
    s.consumer.through_router = c.value("through_router", false);
    PGSHIFT_ASSIGN_OR_RETURN(s.state, ParseCdcSlotState(j.value("state", "planned")));
    s.recorded_lsn = j.value("recorded_lsn", "");
    s.restart_lsn = j.value("restart_lsn", "");
    s.drained_lsn = j.value("drained_lsn", "");
    s.drain_ms = j.value("drain_ms", int64_t{-1});
    s.recreated_lsn = j.value("recreated_lsn", "");
    s.target_confirmed_lsn = j.value("target_confirmed_lsn", "");
  } catch (const json::exception& e) {
    return InvalidArgument("CDC slot record '" + j.value("name", "") +
                           "' is malformed: " + e.what());
  }
  return s;
}

json CdcSlotsToJson(const std::vector<CdcSlot>& slots) {
  json a = json::array();
  for (const auto& s : slots) a.push_back(s.ToJson());
  return a;
}

Result<std::vector<CdcSlot>> CdcSlotsFromJson(const json& j) {
  std::vector<CdcSlot> out;
  if (j.is_null()) return out;
  if (!j.is_array()) return InvalidArgument("CDC slots must be an array: " + j.dump());
  for (const auto& e : j) {
    PGSHIFT_ASSIGN_OR_RETURN(CdcSlot s, CdcSlot::FromJson(e));
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace pgshift
