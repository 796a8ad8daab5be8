#include "model/cdc.h"

#include "model/json_fields.h"

namespace pgshift {
namespace {

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

std::optional<CdcSlotState> ParseCdcSlotState(const std::string& s) {
  for (const auto& [st, name] : kStateNames) {
    if (s == name) return st;
  }
  return std::nullopt;
}

nlohmann::json CdcSlot::ToJson() const { return json_fields::WriteRecord(*this); }

}  // namespace pgshift
