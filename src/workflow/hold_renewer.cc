#include "workflow/hold_renewer.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "common/clock.h"

namespace pgshift {

int64_t LeaseState::NextRenewalAt() const {
  if (last_failed_ms_ <= last_ok_ms_) return last_ok_ms_ + lease_.lease_ms / kRenewalsPerLease;
  return last_failed_ms_ + std::max<int64_t>(lease_.lease_ms / kRetriesPerLease, 1);
}

void LeaseState::Renewed(int64_t sent_ms, const Status& st) {
  if (st.ok()) {
    last_ok_ms_ = std::max(last_ok_ms_, sent_ms);
    return;
  }
  last_failed_ms_ = std::max(last_failed_ms_, sent_ms);
  last_error_ = st;
  if (st.code() == Code::kFailedPrecondition && lost_.ok()) lost_ = st;
}

Status LeaseState::Ours(int64_t now_ms) const {
  const std::string hold = "hold " + std::to_string(lease_.epoch);
  if (!lost_.ok()) return FailedPrecondition(hold + " is gone: " + lost_.message());
  if (now_ms - last_ok_ms_ >= lease_.lease_ms) {
    return FailedPrecondition(hold + " has lapsed: no renewal of its " +
                              std::to_string(lease_.lease_ms) + " ms lease succeeded for " +
                              std::to_string(now_ms - last_ok_ms_) + " ms" +
                              (last_error_.ok() ? "" : " (last: " + last_error_.message() + ")"));
  }
  return Status::OK();
}

HoldRenewer::HoldRenewer(Router& router, HoldLease lease)
    : router_(router), lease_(lease), state_(lease, MonotonicMs()), thread_([this] { Run(); }) {}

HoldRenewer::~HoldRenewer() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void HoldRenewer::RenewNow() {
  const int64_t sent = MonotonicMs();
  Status st = router_.RenewHold(lease_);
  std::lock_guard<std::mutex> l(mu_);
  const bool was_lost = state_.lost();
  state_.Renewed(sent, st);
  if (st.ok()) {
    ++renewals_;
  } else if (state_.lost() && !was_lost) {
    spdlog::warn("the router's hold {} is gone: {}", lease_.epoch, st.message());
  } else if (!state_.lost()) {
    spdlog::warn("could not renew the router's hold {} (will retry): {}", lease_.epoch,
                 st.message());
  }
}

void HoldRenewer::Run() {
  std::unique_lock<std::mutex> l(mu_);
  while (!stop_ && !state_.lost()) {
    const int64_t wait = state_.NextRenewalAt() - MonotonicMs();
    if (wait > 0) {
      cv_.wait_for(l, std::chrono::milliseconds(wait));
      continue;  // woken early, stopped, or due now: look again
    }
    l.unlock();
    RenewNow();
    l.lock();
  }
}

Status HoldRenewer::Check() {
  bool stale;
  {
    std::lock_guard<std::mutex> l(mu_);
    PGSHIFT_RETURN_IF_ERROR(state_.Ours(MonotonicMs()));
    stale = state_.Stale(MonotonicMs());
  }
  if (stale) RenewNow();
  std::lock_guard<std::mutex> l(mu_);
  return state_.Ours(MonotonicMs());
}

int64_t HoldRenewer::renewals() const {
  std::lock_guard<std::mutex> l(mu_);
  return renewals_;
}

}  // namespace pgshift
