// The phase table, the state names and their JSON forms.
#include "model/phase.h"

#include <gtest/gtest.h>

#include "model/state.h"

namespace pgshift {
namespace {

TEST(PhaseTable, NamesRoundTripAndOrderFollowsTheWorkflow) {
  for (const auto& info : kPhaseTable) {
    EXPECT_EQ(ParsePhase(info.name), info.phase) << info.name;
    EXPECT_EQ(PhaseName(info.phase), std::string(info.name));
  }
  EXPECT_EQ(ParsePhase("reverse_sync"), std::nullopt);
  EXPECT_LT(PhaseOrder(Phase::kReady), PhaseOrder(Phase::kQuiesce));
  EXPECT_LT(PhaseOrder(Phase::kSwitch), PhaseOrder(Phase::kVerify));
}

TEST(PhaseTable, HoldChainsTerminalAndAfterSwitch) {
  std::vector<std::string> hold, chains, terminal, after;
  for (const auto& info : kPhaseTable) {
    if (InHold(info.phase)) hold.push_back(info.name);
    if (ChainsInto(info.phase)) chains.push_back(info.name);
    if (IsTerminal(info.phase)) terminal.push_back(info.name);
    if (AfterSwitch(info.phase)) after.push_back(info.name);
  }
  EXPECT_EQ(hold, (std::vector<std::string>{"quiesce", "drain", "promote", "snapshot",
                                            "cdc_recreate", "switch"}));
  EXPECT_EQ(chains, (std::vector<std::string>{"promote", "snapshot", "cdc_recreate"}));
  EXPECT_EQ(terminal, (std::vector<std::string>{"finalized", "rolled_back"}));
  EXPECT_EQ(after, (std::vector<std::string>{"verify", "finalize", "finalized"}));
}

TEST(PhaseTable, BranchesSplitTheTable) {
  auto main = PhasesOf(PhaseBranch::kMain);
  auto rollback = PhasesOf(PhaseBranch::kRollback);
  ASSERT_EQ(main.size() + rollback.size(), kPhaseCount);
  EXPECT_EQ(main.front().phase, Phase::kPreflight);
  EXPECT_EQ(main.back().phase, Phase::kFinalized);
  ASSERT_EQ(rollback.size(), 2u);
  EXPECT_EQ(rollback[0].phase, Phase::kRollingBack);
  EXPECT_EQ(rollback[1].phase, Phase::kRolledBack);
}

TEST(PhaseTable, JsonListsEveryPhaseInOrder) {
  nlohmann::json j = PhaseTableJson();
  ASSERT_EQ(j.size(), kPhaseCount);
  for (size_t i = 0; i < j.size(); ++i) {
    EXPECT_EQ(j[i]["order"], i);
    EXPECT_EQ(j[i]["name"], kPhaseTable[i].name);
  }
  EXPECT_EQ(j[6], (nlohmann::json{{"name", "quiesce"},
                                  {"order", 6},
                                  {"branch", "main"},
                                  {"in_hold", true},
                                  {"terminal", false}}));
  EXPECT_EQ(j[16]["name"], "rolled_back");
  EXPECT_EQ(j[16]["branch"], "rollback");
  EXPECT_EQ(j[16]["terminal"], true);
}

TEST(MigrationStateNames, RoundTripAndStayTheStoredStrings) {
  const std::pair<MigrationState, const char*> all[] = {
      {MigrationState::kRunning, "running"},     {MigrationState::kWaiting, "waiting"},
      {MigrationState::kBlocked, "blocked"},     {MigrationState::kFailed, "failed"},
      {MigrationState::kFinalized, "finalized"}, {MigrationState::kRolledBack, "rolled_back"},
  };
  for (const auto& [state, name] : all) {
    EXPECT_EQ(StateName(state), std::string(name));
    EXPECT_EQ(ParseState(name), state);
  }
  EXPECT_EQ(ParseState("paused"), std::nullopt);
  EXPECT_TRUE(AwaitsOperator(MigrationState::kWaiting));
  EXPECT_TRUE(AwaitsOperator(MigrationState::kBlocked));
  EXPECT_TRUE(AwaitsOperator(MigrationState::kFailed));
  EXPECT_FALSE(AwaitsOperator(MigrationState::kRunning));
  EXPECT_FALSE(AwaitsOperator(MigrationState::kFinalized));
}

}  // namespace
}  // namespace pgshift
