#include "model/phase.h"

namespace pgshift {

std::optional<Phase> ParsePhase(std::string_view name) {
  for (const auto& info : kPhaseTable) {
    if (name == info.name) return info.phase;
  }
  return std::nullopt;
}

std::span<const PhaseInfo> PhasesOf(PhaseBranch branch) {
  // The table lists each branch as one run.
  size_t begin = 0;
  while (begin < kPhaseCount && kPhaseTable[begin].branch != branch) ++begin;
  size_t end = begin;
  while (end < kPhaseCount && kPhaseTable[end].branch == branch) ++end;
  return std::span<const PhaseInfo>(kPhaseTable).subspan(begin, end - begin);
}

const char* BranchName(PhaseBranch b) {
  switch (b) {
    case PhaseBranch::kMain:
      return "main";
    case PhaseBranch::kRollback:
      return "rollback";
  }
  return "unknown";
}

nlohmann::json PhaseTableJson() {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& info : kPhaseTable) {
    out.push_back({{"name", info.name},
                   {"order", PhaseOrder(info.phase)},
                   {"branch", BranchName(info.branch)},
                   {"in_hold", info.in_hold},
                   {"terminal", info.terminal}});
  }
  return out;
}

}  // namespace pgshift
