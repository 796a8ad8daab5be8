// HoldRenewer: keeps the lease of a router's hold (router.h, HoldLease)
// renewed while a cutover holds traffic, and says whether the hold is still
// ours before each effect inside it (fence, promote, switch).
//
// A renewal sent at time t that succeeds means the router keeps the hold at
// least until t + lease (it counts from when it received it). So the hold is
// ours until a whole lease has passed since the last successful renewal was
// sent, or until the router answers that it lapsed; an unreachable router
// alone proves nothing before that.
//
// LeaseState is that bookkeeping on times the caller gives (monotonic ms);
// thread-compatible. HoldRenewer runs it on its own thread against the real
// clock; thread-safe. The runner owns one for as long as the hold lasts.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

#include "common/status.h"
#include "router/router.h"

namespace pgshift {

// Renewals per lease: a renewal every third of it leaves two more chances
// before the hold lapses, on a machine slow enough to make one late.
inline constexpr int64_t kRenewalsPerLease = 3;
// After a renewal that failed without an answer (router unreachable), the
// next try comes after this share of the lease (1/kRetriesPerLease).
inline constexpr int64_t kRetriesPerLease = 10;

class LeaseState {
 public:
  // The hold was taken (or found in place) at taken_ms.
  LeaseState(HoldLease lease, int64_t taken_ms) : lease_(lease), last_ok_ms_(taken_ms) {}

  const HoldLease& lease() const { return lease_; }
  // When the next renewal should be sent.
  int64_t NextRenewalAt() const;
  // A renewal sent at sent_ms came back with `st`. FailedPrecondition is the
  // router's word that the hold is gone; anything else may be transient.
  void Renewed(int64_t sent_ms, const Status& st);
  // OK while the hold is ours at now_ms; otherwise FailedPrecondition saying why.
  Status Ours(int64_t now_ms) const;
  // The last successful renewal is half a lease old or more: an effect
  // about to start should not count on what is left of it.
  bool Stale(int64_t now_ms) const { return now_ms - last_ok_ms_ >= lease_.lease_ms / 2; }
  bool lost() const { return !lost_.ok(); }

 private:
  HoldLease lease_;
  int64_t last_ok_ms_;          // when the last successful renewal was sent
  int64_t last_failed_ms_ = 0;  // when the last failed one was, if after it
  Status last_error_;           // of the last failed renewal
  Status lost_;                 // the router said the hold is gone
};

class HoldRenewer {
 public:
  // `lease` was taken, or found in place, just now. Starts renewing it.
  HoldRenewer(Router& router, HoldLease lease);
  // Stops renewing (the hold then lapses unless released first).
  ~HoldRenewer();
  HoldRenewer(const HoldRenewer&) = delete;
  HoldRenewer& operator=(const HoldRenewer&) = delete;

  const HoldLease& lease() const { return lease_; }
  // OK when the hold is still ours. When the last renewal is stale it renews
  // at once, on the caller's thread, so an effect that follows has at least
  // half a lease of hold ahead of it.
  Status Check();
  int64_t renewals() const;

 private:
  void Run();
  // Sends one renewal and records its outcome.
  void RenewNow();

  Router& router_;
  const HoldLease lease_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;     // guarded by mu_
  LeaseState state_;      // guarded by mu_
  int64_t renewals_ = 0;  // guarded by mu_; successful ones
  std::thread thread_;    // last: starts once the rest is built
};

}  // namespace pgshift
