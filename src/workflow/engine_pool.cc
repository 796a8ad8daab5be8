// The Engine's worker pool and lease keeper (engine.h): which owned
// migration steps next, on which worker, and the leases that make it ours.
#include <spdlog/spdlog.h>

#include <algorithm>

#include "workflow/engine.h"
#include "workflow/runner.h"

namespace pgshift {
namespace {

using workflow_defaults::kLeaseTrustPct;

// The keeper's round: a third of the lease, so two renewals can fail
// before the lease expires.
int64_t KeeperRoundMs(int64_t ttl_ms) { return std::max<int64_t>(ttl_ms / 3, 1); }

}  // namespace

void Engine::StartThreads() {
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_ || !workers_.empty()) return;
  const int n = std::max(opts_.workers, 1);
  for (int i = 0; i < n; ++i) workers_.emplace_back(&Engine::Work, this);
  keeper_ = std::thread(&Engine::Keep, this);
  spdlog::info("engine: {} workers, owner id {}, leases of {} ms", n, opts_.owner,
               opts_.lease_ttl_ms);
}

void Engine::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  std::vector<std::thread> threads;
  {
    std::lock_guard<std::mutex> lock(mu_);
    threads.swap(workers_);
  }
  for (auto& t : threads) t.join();
  if (keeper_.joinable()) keeper_.join();
  std::map<std::string, Slot> slots;
  {
    std::lock_guard<std::mutex> lock(mu_);
    slots.swap(slots_);
  }
  for (const auto& [id, slot] : slots) {
    if (!slot.lost) (void)store_.ReleaseLease(id, slot.lease);
  }
}

Status Engine::ResumeAll() {
  StartThreads();
  TakeOver();
  return Status::OK();
}

std::vector<std::string> Engine::Owned() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  for (const auto& [id, slot] : slots_) {
    if (!slot.lost) out.push_back(id);
  }
  return out;
}

bool Engine::Launch(const std::string& id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ || slots_.count(id)) return true;
  }
  StartThreads();
  const int64_t asked = MonotonicMs();
  auto lease = store_.AcquireLease(id, opts_.owner, opts_.lease_ttl_ms);
  if (!lease.ok()) {
    spdlog::debug("[{}] not taken: {}", id, lease.status().message());
    return false;
  }
  Adopt(id, *lease, asked);
  return true;
}

void Engine::Adopt(const std::string& id, const Lease& lease, int64_t asked_at_ms) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ || slots_.count(id)) return;
    Slot& s = slots_[id];
    s.lease = lease;
    s.valid_until_ms = asked_at_ms + opts_.lease_ttl_ms * kLeaseTrustPct / 100;
    s.due_ms = MonotonicMs();
  }
  spdlog::info("[{}] driven by {} (lease token {})", id, lease.owner, lease.token);
  wake_.notify_all();
}

void Engine::Work() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    const int64_t now = MonotonicMs();
    auto next = slots_.end();
    int64_t earliest = now + workflow_defaults::kStopCheckMs;
    for (auto it = slots_.begin(); it != slots_.end(); ++it) {
      const Slot& s = it->second;
      if (s.busy || s.lost || s.valid_until_ms <= now) continue;
      if (s.due_ms <= now && (next == slots_.end() || s.due_ms < next->second.due_ms)) next = it;
      earliest = std::min(earliest, s.due_ms);
    }
    if (next == slots_.end()) {
      wake_.wait_for(lock, std::chrono::milliseconds(std::max<int64_t>(earliest - now, 1)));
      continue;
    }
    const std::string id = next->first;
    Slot& slot = next->second;
    slot.busy = true;
    const Lease lease = slot.lease;
    std::unique_ptr<MigrationRunner> runner = std::move(slot.runner);
    lock.unlock();
    std::optional<int64_t> due = RunStep(id, lease, runner);
    lock.lock();
    auto it = slots_.find(id);  // only its busy worker erases a slot
    if (it == slots_.end()) continue;
    it->second.busy = false;
    if (!due || it->second.lost) {
      // Ended: terminal or unrunnable (its lease is let go), or lost.
      const bool lost = it->second.lost;
      slots_.erase(it);
      lock.unlock();
      if (!lost) (void)store_.ReleaseLease(id, lease);
      lock.lock();
      continue;
    }
    it->second.runner = std::move(runner);
    it->second.due_ms = *due;
    if (*due <= MonotonicMs()) wake_.notify_all();
  }
}

std::optional<int64_t> Engine::RunStep(const std::string& id, const Lease& lease,
                                       std::unique_ptr<MigrationRunner>& runner) {
  if (!runner) {
    auto rec = store_.Get(id);
    if (!rec.ok()) return std::nullopt;
    auto spec = MigrationSpec::FromJson(rec->spec);
    if (!spec.ok()) {
      spdlog::error("[{}] stored spec is invalid: {}", id, spec.status().ToString());
      return std::nullopt;
    }
    auto env = envs_.Make(id, *spec);
    if (!env.ok()) {
      spdlog::warn("[{}] cannot build environment, retrying: {}", id, env.status().ToString());
      return MonotonicMs() + workflow_defaults::kEnvRetryMs;
    }
    runner = std::make_unique<MigrationRunner>(store_, clock_, id, std::move(env).value(),
                                               std::move(spec).value(), lease);
  }
  switch (runner->Step()) {
    case MigrationRunner::Tick::kProgress:
      return MonotonicMs();
    case MigrationRunner::Tick::kIdle:
      return MonotonicMs() + runner->poll_ms();
    case MigrationRunner::Tick::kLost: {
      std::lock_guard<std::mutex> lock(mu_);
      if (auto it = slots_.find(id); it != slots_.end()) it->second.lost = true;
      return std::nullopt;
    }
    case MigrationRunner::Tick::kTerminal:
      return std::nullopt;
  }
  return std::nullopt;
}

void Engine::Keep() {
  const int64_t round = KeeperRoundMs(opts_.lease_ttl_ms);
  while (!stopping_) {
    const int64_t started = MonotonicMs();
    RenewAll();
    TakeOver();
    std::unique_lock<std::mutex> lock(mu_);
    wake_.wait_for(lock,
                   std::chrono::milliseconds(std::max<int64_t>(started + round - MonotonicMs(), 1)),
                   [&] { return stopping_.load(); });
  }
}

void Engine::RenewAll() {
  std::vector<std::pair<std::string, Lease>> held;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [id, s] : slots_) {
      if (!s.lost) held.emplace_back(id, s.lease);
    }
  }
  for (const auto& [id, lease] : held) {
    const int64_t asked = MonotonicMs();
    auto renewed = store_.RenewLease(id, lease, opts_.lease_ttl_ms);
    std::lock_guard<std::mutex> lock(mu_);
    auto it = slots_.find(id);
    if (it == slots_.end() || it->second.lease.token != lease.token) continue;
    Slot& s = it->second;
    if (renewed.ok()) {
      s.lease = *renewed;
      s.valid_until_ms = asked + opts_.lease_ttl_ms * kLeaseTrustPct / 100;
    } else if (IsLeaseLost(renewed.status())) {
      spdlog::warn("[{}] {}; this pgshiftd stops driving it", id, renewed.status().message());
      s.lost = true;
      if (!s.busy) slots_.erase(it);
    } else {
      // The store is unreachable: the lease may lapse; steps wait for it.
      spdlog::warn("[{}] cannot renew the lease: {}", id, renewed.status().message());
    }
  }
}

void Engine::TakeOver() {
  auto all = store_.ListLive();
  if (!all.ok()) {
    spdlog::warn("engine: cannot list migrations to take over: {}", all.status().message());
    return;
  }
  const int64_t now = clock_.NowMs();
  for (const auto& m : *all) {
    if (stopping_) return;
    auto p = ParsePhase(m.phase);
    if (!p || IsTerminal(*p)) continue;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (slots_.count(m.id)) continue;
    }
    // The store's clock decides; this only skips leases renewed lately.
    const bool renewed_lately = !store_.SingleProcess() && !m.lease.owner.empty() &&
                                m.lease.owner != opts_.owner &&
                                m.lease.expires_at_ms - now > opts_.lease_ttl_ms / 3;
    if (renewed_lately) continue;
    const int64_t asked = MonotonicMs();
    auto lease = store_.AcquireLease(m.id, opts_.owner, opts_.lease_ttl_ms);
    if (!lease.ok()) continue;
    if (!m.lease.owner.empty() && m.lease.owner != opts_.owner) {
      // On the timeline, under the new token: who drove it before, and where.
      const std::string note = "taken over from " + m.lease.owner + " (its lease expired) by " +
                               opts_.owner + ", lease token " + std::to_string(lease->token) +
                               ", in phase " + m.phase;
      spdlog::warn("[{}] {}", m.id, note);
      (void)store_.AppendEvent(m.id, {0, clock_.NowMs(), m.phase, "warning", note, opts_.owner},
                               lease->token);
    } else {
      spdlog::info("resuming migration {} ({}) in phase {}", m.id, m.name, m.phase);
    }
    Adopt(m.id, *lease, asked);
  }
}

}  // namespace pgshift
