#include "proxy/switch_log.h"

#include <chrono>

namespace pgshift::proxy {
namespace {

// How many switches a route remembers (a cutover and its rollback, a few times over).
constexpr size_t kReportsKept = 8;

int64_t UnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

const char* EndReasonName(EndReason r) {
  switch (r) {
    case EndReason::kTemporaryTables:
      return "temporary_tables";
    case EndReason::kHoldableCursors:
      return "holdable_cursors";
    case EndReason::kCarryFailed:
      return "carry_failed";
    case EndReason::kMoveFailed:
      return "move_failed";
  }
  return "?";
}

void SwitchLog::Joined(uint64_t generation) {
  std::lock_guard<std::mutex> l(mu_);
  on_generation_[generation]++;
}

void SwitchLog::Left(uint64_t generation) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = on_generation_.find(generation);
  if (it == on_generation_.end()) return;
  if (--it->second <= 0) on_generation_.erase(it);
}

void SwitchLog::Began(uint64_t generation, uint64_t hold_epoch, const UpstreamConfig& from,
                      const UpstreamConfig& to) {
  std::lock_guard<std::mutex> l(mu_);
  Report r{.generation = generation,
           .hold_epoch = hold_epoch,
           .at_ms = UnixMs(),
           .from = from,
           .to = to};
  for (const auto& [g, n] : on_generation_) r.sessions += n;
  r.ended = hold_ended_;
  r.waited_for = hold_waited_;
  hold_ended_ = {};
  hold_waited_ = 0;
  reports_.push_back(r);
  if (reports_.size() > kReportsKept) reports_.pop_front();
}

SwitchLog::Report* SwitchLog::ReportForLocked(uint64_t generation) {
  // A release that ends a pinned hold moves the generation once more
  // (Route::PinBackends): those moves belong to the switch before it.
  for (auto it = reports_.rbegin(); it != reports_.rend(); ++it)
    if (it->generation <= generation) return &*it;
  return nullptr;
}

void SwitchLog::Moved(uint64_t from, uint64_t to, const MoveCarried& c) {
  std::lock_guard<std::mutex> l(mu_);
  if (auto it = on_generation_.find(from); it != on_generation_.end() && --it->second <= 0)
    on_generation_.erase(it);
  on_generation_[to]++;
  if (to <= from) return;
  Report* r = ReportForLocked(to);
  if (!r || r->generation <= from) return;  // it moved past no switch (pinned backends only)
  r->moved++;
  r->prewarmed += c.prewarmed ? 1 : 0;
  r->carried.settings += c.settings;
  r->carried.protocol_statements += c.protocol_statements;
  r->carried.prepared_statements += c.prepared_statements;
  r->carried.listen_channels += c.listen_channels;
  r->carried.advisory_locks += c.advisory_locks;
}

void SwitchLog::Ended(uint64_t to, EndReason why) {
  std::lock_guard<std::mutex> l(mu_);
  if (Report* r = ReportForLocked(to)) r->ended[static_cast<size_t>(why)]++;
}

void SwitchLog::EndedInHold(EndReason why) {
  std::lock_guard<std::mutex> l(mu_);
  hold_ended_[static_cast<size_t>(why)]++;
}

void SwitchLog::WaitedInHold() {
  std::lock_guard<std::mutex> l(mu_);
  hold_waited_++;
}

void SwitchLog::HoldEndedWithoutSwitch() {
  std::lock_guard<std::mutex> l(mu_);
  hold_ended_ = {};
  hold_waited_ = 0;
}

nlohmann::json SwitchLog::LastJson() const {
  std::lock_guard<std::mutex> l(mu_);
  if (reports_.empty()) return nullptr;
  const Report& r = reports_.back();
  // Sessions still on a generation before this switch move at their next transaction.
  int64_t pending = 0;
  for (const auto& [g, n] : on_generation_)
    if (g < r.generation) pending += n;
  nlohmann::json ended = nlohmann::json::object();
  int64_t ended_total = 0;
  for (size_t i = 0; i < kEndReasons; i++) {
    ended[EndReasonName(static_cast<EndReason>(i))] = r.ended[i];
    ended_total += r.ended[i];
  }
  return {{"generation", r.generation},
          {"hold_epoch", r.hold_epoch},
          {"at_ms", r.at_ms},
          {"from", ToJson(r.from)},
          {"to", ToJson(r.to)},
          {"sessions", r.sessions},
          {"moved", r.moved},
          {"prewarmed", r.prewarmed},
          {"pending", pending},
          {"carried",
           {{"settings", r.carried.settings},
            {"protocol_statements", r.carried.protocol_statements},
            {"prepared_statements", r.carried.prepared_statements},
            {"listen_channels", r.carried.listen_channels},
            {"advisory_locks", r.carried.advisory_locks}}},
          {"ended", ended},
          {"ended_total", ended_total},
          {"waited_for", r.waited_for}};
}

}  // namespace pgshift::proxy
