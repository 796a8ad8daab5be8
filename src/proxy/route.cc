#include "proxy/route.h"

#include <chrono>
#include <thread>

namespace pgshift::proxy {

Route::Route(RouteConfig cfg) : cfg_(std::move(cfg)) {}

Route::Target Route::target() const {
  std::lock_guard<std::mutex> l(mu_);
  return {cfg_.upstream, generation_.load()};
}

bool Route::Repoint(const UpstreamConfig& upstream) {
  std::lock_guard<std::mutex> l(mu_);
  if (cfg_.upstream == upstream) return false;
  cfg_.upstream = upstream;
  generation_++;
  return true;
}

RouteConfig Route::config() const {
  std::lock_guard<std::mutex> l(mu_);
  return cfg_;
}

Status Route::Hold(int64_t timeout_ms) {
  uint64_t releases;
  {
    std::lock_guard<std::mutex> l(mu_);
    releases = releases_;
    held_.store(true);
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (true) {
    int64_t open = in_transaction.load();
    if (open <= 0) {
      std::lock_guard<std::mutex> l(mu_);
      drained_ = releases_ == releases;  // not when a concurrent Release ended this hold
      return Status::OK();
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      Release();
      return Timeout("hold on route \"" + name() + "\" released after " +
                     std::to_string(timeout_ms) + " ms: " + std::to_string(open) +
                     " session(s) still in a transaction; traffic continues on " +
                     target().upstream.host + ":" + std::to_string(target().upstream.port));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

void Route::Release() {
  {
    std::lock_guard<std::mutex> l(mu_);
    // The generation moves before the hold ends: a session that sees the
    // route unheld also sees the new generation (both sequentially consistent).
    if (pinned_) generation_++;
    pinned_ = false;
    drained_ = false;
    releases_++;
    held_.store(false);
  }
  std::vector<std::function<void()>> wake;
  {
    std::lock_guard<std::mutex> l(waiters_mu_);
    for (auto& [id, fn] : waiters_) wake.push_back(fn);
  }
  for (auto& fn : wake) fn();
}

bool Route::drained() const {
  std::lock_guard<std::mutex> l(mu_);
  return drained_;
}

bool Route::PinBackends() {
  std::lock_guard<std::mutex> l(mu_);
  if (drained_) pinned_ = true;
  return drained_;
}

uint64_t Route::AddWaiter(std::function<void()> wake) {
  std::lock_guard<std::mutex> l(waiters_mu_);
  uint64_t id = next_waiter_++;
  waiters_[id] = std::move(wake);
  return id;
}

void Route::RemoveWaiter(uint64_t id) {
  std::lock_guard<std::mutex> l(waiters_mu_);
  waiters_.erase(id);
}

nlohmann::json Route::StatsJson() const {
  return {{"sessions", sessions.load()},
          {"held_sessions", held_sessions.load()},
          {"in_transaction", in_transaction.load()},
          {"transactions", transactions.load()},
          {"errors", errors.load()},
          {"bytes_from_clients", bytes_from_clients.load()},
          {"bytes_to_clients", bytes_to_clients.load()},
          {"switched_sessions", switches.load()}};
}

nlohmann::json Route::ToJson() const {
  RouteConfig c = config();
  return {{"name", c.name},
          {"database", c.database},
          {"upstream", proxy::ToJson(c.upstream)},
          {"held", held()},
          {"allow_plaintext", c.allow_plaintext},
          {"hold_timeout_ms", c.hold_timeout_ms},
          {"stats", StatsJson()}};
}

void RouteTable::Add(std::shared_ptr<Route> r) {
  std::lock_guard<std::mutex> l(mu_);
  routes_[r->name()] = std::move(r);
}

std::shared_ptr<Route> RouteTable::Find(const std::string& name) const {
  std::lock_guard<std::mutex> l(mu_);
  auto it = routes_.find(name);
  return it == routes_.end() ? nullptr : it->second;
}

std::shared_ptr<Route> RouteTable::FindByDatabase(const std::string& database) const {
  std::lock_guard<std::mutex> l(mu_);
  for (const auto& [n, r] : routes_)
    if (r->database() == database) return r;
  return nullptr;
}

std::vector<std::shared_ptr<Route>> RouteTable::List() const {
  std::lock_guard<std::mutex> l(mu_);
  std::vector<std::shared_ptr<Route>> out;
  for (const auto& [n, r] : routes_) out.push_back(r);
  return out;
}

}  // namespace pgshift::proxy
