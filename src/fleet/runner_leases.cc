// FleetRunner (runner.h): its threads, the leases of the runs it drives,
// the takeover of runs nobody drives, and the requests left for it.
#include <spdlog/spdlog.h>

#include <algorithm>

#include "fleet/runner.h"

namespace pgshift::fleet {

namespace {

using workflow_defaults::kLeaseTrustPct;

// A lease is renewed every third of it: two renewals may fail before it lapses.
constexpr int64_t kRenewalsPerLease = 3;

}  // namespace

void FleetRunner::Start(int64_t poll_ms) {
  {
    std::lock_guard lock(stop_mu_);
    stopping_ = false;
  }
  // Runs `fn` every `every_ms` until Stop.
  auto loop = [this](int64_t every_ms, auto fn) {
    return std::thread([this, every_ms, fn] {
      std::unique_lock lock(stop_mu_);
      while (!stopping_) {
        lock.unlock();
        fn();
        lock.lock();
        stop_cv_.wait_for(lock, std::chrono::milliseconds(every_ms), [this] { return stopping_; });
      }
    });
  };
  thread_ = loop(poll_ms, [this] { Tick(); });
  keeper_ =
      loop(std::max<int64_t>(opts_.lease_ttl_ms / kRenewalsPerLease, 1), [this] { RenewLeases(); });
}

void FleetRunner::Stop() {
  {
    std::lock_guard lock(stop_mu_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (keeper_.joinable()) keeper_.join();
  std::map<std::string, Held> held;
  {
    std::lock_guard lock(mu_);
    held.swap(runs_);
  }
  for (const auto& [id, h] : held) {
    if (!h.lost) (void)store_.ReleaseFleetLease(id, h.lease);
  }
}

std::vector<std::string> FleetRunner::Driven() {
  std::lock_guard lock(mu_);
  std::vector<std::string> ids;
  for (const auto& [id, h] : runs_) {
    if (!h.lost) ids.push_back(id);
  }
  return ids;
}

void FleetRunner::RenewLeases() {
  std::vector<std::pair<std::string, Lease>> held;
  {
    std::lock_guard lock(mu_);
    for (const auto& [id, h] : runs_) {
      if (!h.lost) held.emplace_back(id, h.lease);
    }
  }
  for (const auto& [id, lease] : held) {
    const int64_t asked = MonotonicMs();
    auto renewed = store_.RenewFleetLease(id, lease, opts_.lease_ttl_ms);
    std::lock_guard lock(mu_);
    auto it = runs_.find(id);
    if (it == runs_.end() || it->second.lease.token != lease.token) continue;
    if (renewed.ok()) {
      it->second.lease = *renewed;
      it->second.valid_until_ms = asked + opts_.lease_ttl_ms * kLeaseTrustPct / 100;
    } else if (IsLeaseLost(renewed.status())) {
      spdlog::warn("fleet: {}; this pgshiftd stops driving it", renewed.status().message());
      it->second.lost = true;
    } else {
      spdlog::warn("fleet: cannot renew the lease of run {}: {}", id, renewed.status().message());
    }
  }
}

Status FleetRunner::TakeOver() {
  PGSHIFT_ASSIGN_OR_RETURN(auto records, store_.ListFleetRuns());
  int others_live = 0;
  for (const auto& rec : records) {
    bool held;
    {
      std::lock_guard lock(mu_);
      auto it = runs_.find(rec.id);
      held = it != runs_.end() && !it->second.lost;
      next_id_ = std::max<int64_t>(next_id_, static_cast<int64_t>(records.size()));
    }
    if (!held) {
      auto run = FleetRun::FromJson(rec.doc);
      if (!run.ok()) {
        spdlog::warn("fleet: stored run {} is unreadable: {}", rec.id, run.status().message());
        continue;
      }
      if (!NeedsDriver(*run)) continue;
      const int64_t asked = MonotonicMs();
      auto lease = store_.AcquireFleetLease(rec.id, opts_.owner, opts_.lease_ttl_ms);
      if (!lease.ok()) {
        for (const auto& d : run->dbs) others_live += IsLive(d.status);
        continue;
      }
      if (!rec.lease.owner.empty() && rec.lease.owner != opts_.owner) {
        spdlog::warn("fleet: run {} taken over from {} (its lease expired), lease token {}", rec.id,
                     rec.lease.owner, lease->token);
      }
      Adopt(std::move(*run), *lease, asked);
    }
    if (!rec.request.empty()) ApplyRequest(rec);
  }
  std::lock_guard lock(mu_);
  others_live_ = others_live;
  return Status::OK();
}

void FleetRunner::Adopt(FleetRun run, const Lease& lease, int64_t asked_at_ms) {
  // A database left starting by the last driver keeps that status: the
  // next StartNext finds the migration made with its key, or makes it.
  std::lock_guard lock(mu_);
  const std::string id = run.id;
  runs_[id] = Held{.run = std::move(run),
                   .lease = lease,
                   .valid_until_ms = asked_at_ms + opts_.lease_ttl_ms * kLeaseTrustPct / 100};
}

void FleetRunner::ApplyRequest(const FleetRunRecord& rec) {
  auto st = rec.request == kPauseRequest
                ? SetStatus(rec.id, RunStatus::kRunning, RunStatus::kPaused, rec.request_seq)
                : SetStatus(rec.id, RunStatus::kPaused, RunStatus::kRunning, rec.request_seq);
  if (st.ok() || st.status().code() != Code::kFailedPrecondition) return;
  // No longer applicable (paused twice, stopped since): cleared, not retried.
  spdlog::info("fleet: run {}: {} not applied: {}", rec.id, rec.request, st.status().message());
  std::lock_guard lock(mu_);
  auto it = runs_.find(rec.id);
  if (it == runs_.end()) return;
  FleetRun same = it->second.run;
  (void)SaveLocked(rec.id, same, rec.request_seq);
}

void FleetRunner::Sweep() {
  std::vector<std::pair<std::string, Lease>> finished;
  {
    std::lock_guard lock(mu_);
    for (auto it = runs_.begin(); it != runs_.end();) {
      if (it->second.lost) {
        it = runs_.erase(it);
      } else if (!NeedsDriver(it->second.run)) {
        finished.emplace_back(it->first, it->second.lease);
        it = runs_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (const auto& [id, lease] : finished) (void)store_.ReleaseFleetLease(id, lease);
}

}  // namespace pgshift::fleet
