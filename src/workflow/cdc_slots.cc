#include "workflow/cdc_slots.h"

#include <algorithm>
#include <functional>
#include <map>
#include <set>

#include "common/faults.h"

namespace pgshift {
namespace {

// Traffic is held while the drain waits: look often.
constexpr int64_t kDrainPollMs = 2;
// A consumer that was busy writing when asked may answer a later request.
constexpr int64_t kFeedbackRepeatMs = 200;

bool Reached(const std::string& lsn, Lsn target) {
  auto l = Lsn::Parse(lsn);
  return l.ok() && *l >= target;
}

CdcSlot FromSource(const LogicalSlot& s, const std::set<int>& router_pids) {
  CdcSlot c;
  c.name = s.name;
  c.plugin = s.plugin;
  c.database = s.database;
  c.two_phase = s.two_phase;
  c.consumer.pid = s.active ? s.active_pid : 0;
  c.consumer.application_name = s.consumer_application_name;
  c.consumer.client_addr = s.consumer_client_addr;
  c.consumer.through_router = s.active && router_pids.count(s.active_pid) > 0;
  c.recorded_lsn = s.confirmed_flush_lsn;
  c.restart_lsn = s.restart_lsn;
  return c;
}

}  // namespace

Result<std::vector<CdcSlot>> PlanCdc(MigrationEnv& env) {
  PGSHIFT_ASSIGN_OR_RETURN(auto slots, env.LogicalSlots());
  std::set<int> router_pids;
  if (!slots.empty()) {
    PGSHIFT_ASSIGN_OR_RETURN(auto sessions, env.router().ReplicationSessions(env.SourceEndpoint()));
    for (const auto& s : sessions) router_pids.insert(s.backend_pid);
  }
  std::vector<CdcSlot> out;
  for (const auto& s : slots) out.push_back(FromSource(s, router_pids));
  return out;
}

std::vector<checks::Finding> CdcFindings(const std::vector<CdcSlot>& slots,
                                         int64_t drain_timeout_ms) {
  std::vector<checks::Finding> out;
  for (const auto& s : slots) {
    checks::Finding f{.id = "cdc_slot", .subject = s.name};
    f.value = s.ToJson();
    if (s.consumer.pid != 0 && !s.consumer.through_router) {
      f.id = "cdc_consumer_bypasses_router";
      f.severity = checks::Severity::kBlocking;
      f.message = "the consumer of logical slot " + s.name + " (" +
                  (s.consumer.application_name.empty() ? "no application_name"
                                                       : s.consumer.application_name) +
                  ", from " +
                  (s.consumer.client_addr.empty() ? "a local socket" : s.consumer.client_addr) +
                  ") connects straight to the source, not through the router: it would go on "
                  "reading the source after the cutover and miss every change made on the target";
      f.remedy =
          "point the consumer at the router, or override this finding with a reason "
          "saying you will repoint it to the target yourself at the cutover";
    } else if (s.consumer.pid == 0) {
      f.severity = checks::Severity::kWarning;
      f.message = "logical slot " + s.name + " (" + s.plugin + ", database " + s.database +
                  ") has no consumer connected; the cutover waits up to " +
                  std::to_string(drain_timeout_ms) +
                  " ms for it to confirm every change, then aborts";
      f.remedy =
          "start the consumer (through the router) before the cutover, or drop the slot "
          "if nothing reads it";
    } else {
      f.severity = checks::Severity::kOk;
      f.message = "logical slot " + s.name + " (" + s.plugin + ", database " + s.database +
                  ") is read through the router; it is drained at the fence and recreated on "
                  "the target before traffic is released";
    }
    out.push_back(std::move(f));
  }
  return out;
}

Status RecordCdc(MigrationEnv& env, std::vector<CdcSlot>& slots) {
  PGSHIFT_ASSIGN_OR_RETURN(auto fresh, PlanCdc(env));
  std::map<std::string, CdcSlot> previous;
  for (auto& s : slots) previous[s.name] = std::move(s);
  slots.clear();
  for (auto& f : fresh) {
    auto prev = previous.find(f.name);
    CdcSlot s = std::move(f);
    if (prev != previous.end() && prev->second.state > CdcSlotState::kRecorded) {
      s = prev->second;  // a restarted cutover keeps what it did
    }
    s.state = std::max(s.state, CdcSlotState::kRecorded);
    slots.push_back(std::move(s));
  }
  return Status::OK();
}

namespace {

// Waits until every slot in `slots` has confirmed `lsn` on one side (the
// source, or the promoted target), asking the router's consumers to report
// meanwhile; `reached` is told of each slot the first time it is seen there.
Status WaitConfirmed(MigrationEnv& env, Clock& clock, const std::vector<CdcSlot>& slots, Lsn lsn,
                     int64_t timeout_ms, bool on_target, const char* what,
                     const std::function<void(size_t, const LogicalSlot&, int64_t)>& reached) {
  Router& router = env.router();
  const int64_t started = clock.NowMs();
  int64_t asked_at = -kFeedbackRepeatMs;
  const char* side = on_target ? "target" : "source";
  while (true) {
    const int64_t now = clock.NowMs();
    if (now - asked_at >= kFeedbackRepeatMs) {
      // Best effort: without it consumers report at their own interval.
      (void)router.RequestReplicationFeedback();
      asked_at = now;
    }
    PGSHIFT_ASSIGN_OR_RETURN(auto current,
                             on_target ? env.TargetLogicalSlots() : env.LogicalSlots());
    std::string behind;
    for (size_t i = 0; i < slots.size(); ++i) {
      const CdcSlot& s = slots[i];
      auto it = std::find_if(current.begin(), current.end(),
                             [&](const LogicalSlot& l) { return l.name == s.name; });
      if (it == current.end()) {
        return FailedPrecondition("logical slot " + s.name + " was dropped on the " + side +
                                  " during the " + what);
      }
      if (Reached(it->confirmed_flush_lsn, lsn)) {
        reached(i, *it, clock.NowMs() - started);
      } else {
        behind += (behind.empty() ? "" : ", ") + s.name + " (confirmed " +
                  (it->confirmed_flush_lsn.empty() ? "nothing" : it->confirmed_flush_lsn) +
                  (it->active ? ", consumer connected)" : ", no consumer connected)");
      }
    }
    if (behind.empty()) return Status::OK();
    if (clock.NowMs() - started > timeout_ms) {
      return Timeout("CDC consumers did not confirm the " + std::string(side) + "'s LSN " +
                     lsn.ToString() + " within " + std::to_string(timeout_ms) + " ms (" + what +
                     "): " + behind);
    }
    clock.SleepMs(kDrainPollMs);
  }
}

}  // namespace

Status DrainCdc(MigrationEnv& env, Clock& clock, std::vector<CdcSlot>& slots, Lsn final_lsn,
                int64_t timeout_ms) {
  if (slots.empty()) return Status::OK();
  PGSHIFT_RETURN_IF_ERROR(WaitConfirmed(env, clock, slots, final_lsn, timeout_ms,
                                        /*on_target=*/false, "cutover",
                                        [&](size_t i, const LogicalSlot& l, int64_t waited) {
                                          if (slots[i].state < CdcSlotState::kDrained) {
                                            slots[i].drained_lsn = l.confirmed_flush_lsn;
                                            slots[i].drain_ms = waited;
                                          }
                                        }));
  PGSHIFT_ASSIGN_OR_RETURN(int paused, env.router().PauseReplication());
  (void)paused;
  for (auto& s : slots) s.state = std::max(s.state, CdcSlotState::kDrained);
  return Status::OK();
}

Status DrainCdcOnTarget(MigrationEnv& env, Clock& clock, const std::vector<CdcSlot>& slots,
                        Lsn target_lsn, int64_t timeout_ms) {
  if (slots.empty()) return Status::OK();
  PGSHIFT_RETURN_IF_ERROR(WaitConfirmed(env, clock, slots, target_lsn, timeout_ms,
                                        /*on_target=*/true, "rollback",
                                        [](size_t, const LogicalSlot&, int64_t) {}));
  return env.router().PauseReplication().status();
}

Status ReturnCdcToSource(MigrationEnv& env, const std::vector<CdcSlot>& slots, Lsn past) {
  for (const auto& s : slots) {
    PGSHIFT_RETURN_IF_ERROR(env.AdvanceSourceSlot(s.name, past).status());
  }
  return Status::OK();
}

Status CatchUpAfterPause(MigrationEnv& env, Clock& clock, const std::string& physical_slot,
                         int64_t timeout_ms) {
  PGSHIFT_ASSIGN_OR_RETURN(ReplicationLag at_pause, env.Lag(physical_slot));
  const int64_t started = clock.NowMs();
  while (true) {
    PGSHIFT_ASSIGN_OR_RETURN(TargetState t, env.InspectTarget());
    if (t.replay_lsn >= at_pause.source_lsn) return Status::OK();
    if (clock.NowMs() - started > timeout_ms) {
      return Timeout("the target replayed only up to " + t.replay_lsn.ToString() +
                     " of the source's " + at_pause.source_lsn.ToString() +
                     " after the CDC consumers were paused");
    }
    clock.SleepMs(kDrainPollMs);
  }
}

Status RecreateCdc(MigrationEnv& env, std::vector<CdcSlot>& slots) {
  for (auto& s : slots) {
    LogicalSlot want{.name = s.name, .plugin = s.plugin, .database = s.database};
    want.two_phase = s.two_phase;
    PGSHIFT_ASSIGN_OR_RETURN(Lsn at, env.EnsureTargetLogicalSlot(want));
    s.recreated_lsn = at.ToString();
    s.state = std::max(s.state, CdcSlotState::kRecreated);
    PGSHIFT_RETURN_IF_ERROR(FaultPoint("cdc_recreate_slot"));
  }
  return Status::OK();
}

Result<std::vector<std::string>> ObserveCdcOnTarget(MigrationEnv& env,
                                                    std::vector<CdcSlot>& slots) {
  std::vector<std::string> waiting;
  if (slots.empty()) return waiting;
  PGSHIFT_ASSIGN_OR_RETURN(auto on_target, env.TargetLogicalSlots());
  for (auto& s : slots) {
    if (s.state < CdcSlotState::kRecreated) continue;
    auto it = std::find_if(on_target.begin(), on_target.end(),
                           [&](const LogicalSlot& l) { return l.name == s.name; });
    if (it == on_target.end()) {
      return FailedPrecondition("logical slot " + s.name +
                                " was carried to the target but is no longer there");
    }
    s.target_confirmed_lsn = it->confirmed_flush_lsn;
    auto recreated = Lsn::Parse(s.recreated_lsn);
    auto confirmed = Lsn::Parse(it->confirmed_flush_lsn);
    if (recreated.ok() && confirmed.ok() && *confirmed > *recreated) {
      s.state = CdcSlotState::kAdvanced;
    }
    if (s.state != CdcSlotState::kAdvanced) waiting.push_back(s.name);
  }
  return waiting;
}

}  // namespace pgshift
