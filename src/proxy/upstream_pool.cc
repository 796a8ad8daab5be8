#include "proxy/upstream_pool.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy/protocol.h"

namespace pgshift::proxy {

OwnedFd::~OwnedFd() {
  if (fd_ >= 0) ::close(fd_);
}

OwnedFd& OwnedFd::operator=(OwnedFd&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(o.fd_, -1);
  }
  return *this;
}

IdleBackend::~IdleBackend() {
  if (fd.get() < 0) return;
  const std::string bye = TerminateMessage();
  if (tls) {
    size_t done = 0;
    tls->Write(bye, &done);
  } else {
    [[maybe_unused]] ssize_t n =
        ::send(fd.get(), bye.data(), bye.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  }
}

bool IdleBackend::Alive() const {
  if (fd.get() < 0) return false;
  if (tls && tls->HasPending()) return false;
  pollfd p{fd.get(), POLLIN, 0};
  return ::poll(&p, 1, 0) == 0;
}

std::string PoolKey::Encode() const {
  std::string k;
  auto add = [&k](std::string_view v) {
    k.append(v);
    k.push_back('\0');
  };
  add(route);
  add(std::to_string(generation));
  add(upstream.host);
  add(std::to_string(upstream.port));
  add(upstream.tls ? "tls" : "plain");
  add(upstream.ca);
  for (const auto& [name, value] : startup_params) {
    add(name);
    add(value);
  }
  return k;
}

UpstreamPool::UpstreamPool(UpstreamPoolConfig cfg, Sink sink, std::function<int64_t()> now_ms)
    : cfg_(cfg), sink_(std::move(sink)), now_ms_(std::move(now_ms)) {}

UpstreamPool::~UpstreamPool() = default;

bool UpstreamPool::ExpiredLocked(const IdleBackend& b, int64_t now) const {
  return cfg_.idle_timeout_ms > 0 && now - b.parked_at_ms >= cfg_.idle_timeout_ms;
}

template <typename Pred>
void UpstreamPool::DropLocked(Pred drop, PoolEvent why,
                              std::vector<std::unique_ptr<IdleBackend>>* out) {
  for (auto it = slots_.begin(); it != slots_.end();) {
    auto& q = it->second.backends;
    for (auto b = q.begin(); b != q.end();) {
      if (!drop(it->second, **b)) {
        ++b;
        continue;
      }
      out->push_back(std::move(*b));
      b = q.erase(b);
      idle_--;
      sink_(why, idle_);
    }
    it = q.empty() ? slots_.erase(it) : std::next(it);
  }
}

void UpstreamPool::Park(const Route& route, const PoolKey& key, std::unique_ptr<IdleBackend> b) {
  std::vector<std::unique_ptr<IdleBackend>> closing;  // closed after the lock
  std::lock_guard<std::mutex> l(mu_);
  const int64_t now = now_ms_();
  DropLocked([&](const Slot&, const IdleBackend& x) { return ExpiredLocked(x, now); },
             PoolEvent::kDroppedIdleTimeout, &closing);
  if (route.held() || route.generation() != key.generation) {
    sink_(PoolEvent::kDroppedRoute, idle_);
    closing.push_back(std::move(b));
    return;
  }
  Slot& slot = slots_[key.Encode()];
  if (idle_ >= cfg_.max_idle || static_cast<int>(slot.backends.size()) >= cfg_.max_idle_per_key) {
    if (slot.backends.empty()) slots_.erase(key.Encode());
    sink_(PoolEvent::kDroppedFull, idle_);
    closing.push_back(std::move(b));
    return;
  }
  slot.route = key.route;
  b->parked_at_ms = now;
  slot.backends.push_back(std::move(b));
  idle_++;
  sink_(PoolEvent::kParked, idle_);
}

std::unique_ptr<IdleBackend> UpstreamPool::Take(const PoolKey& key) {
  std::vector<std::unique_ptr<IdleBackend>> closing;
  std::lock_guard<std::mutex> l(mu_);
  auto it = slots_.find(key.Encode());
  const int64_t now = now_ms_();
  std::unique_ptr<IdleBackend> got;
  while (it != slots_.end() && !it->second.backends.empty() && !got) {
    std::unique_ptr<IdleBackend> b = std::move(it->second.backends.back());
    it->second.backends.pop_back();
    idle_--;
    if (ExpiredLocked(*b, now)) {
      sink_(PoolEvent::kDroppedIdleTimeout, idle_);
      closing.push_back(std::move(b));
    } else if (!b->Alive()) {
      sink_(PoolEvent::kDroppedDead, idle_);
      closing.push_back(std::move(b));
    } else {
      got = std::move(b);
    }
  }
  if (it != slots_.end() && it->second.backends.empty()) slots_.erase(it);
  sink_(got ? PoolEvent::kHit : PoolEvent::kMiss, idle_);
  return got;
}

void UpstreamPool::FlushRoute(const std::string& route) {
  std::vector<std::unique_ptr<IdleBackend>> closing;
  std::lock_guard<std::mutex> l(mu_);
  DropLocked([&](const Slot& s, const IdleBackend&) { return s.route == route; },
             PoolEvent::kDroppedRoute, &closing);
}

void UpstreamPool::Expire() {
  std::vector<std::unique_ptr<IdleBackend>> closing;
  std::lock_guard<std::mutex> l(mu_);
  const int64_t now = now_ms_();
  DropLocked([&](const Slot&, const IdleBackend& b) { return ExpiredLocked(b, now); },
             PoolEvent::kDroppedIdleTimeout, &closing);
}

void UpstreamPool::Clear() {
  std::vector<std::unique_ptr<IdleBackend>> closing;
  std::lock_guard<std::mutex> l(mu_);
  for (auto& [k, s] : slots_)
    for (auto& b : s.backends) closing.push_back(std::move(b));
  slots_.clear();
  idle_ = 0;
}

void UpstreamPool::Note(PoolEvent e) {
  std::lock_guard<std::mutex> l(mu_);
  sink_(e, idle_);
}

int64_t UpstreamPool::idle() const {
  std::lock_guard<std::mutex> l(mu_);
  return idle_;
}

std::unique_ptr<IdleBackend> ToIdle(ServerConn& c) {
  asio::error_code ec;
  auto protocol = c.stream.socket().local_endpoint(ec).protocol();
  if (ec) {
    c.stream.Close();
    return nullptr;
  }
  auto b = std::make_unique<IdleBackend>();
  b->fd = OwnedFd(c.stream.Detach(&b->tls));
  if (b->fd.get() < 0) {
    b->tls.reset();
    c.stream.Close();
    return nullptr;
  }
  b->protocol = protocol;
  b->tls_context = c.tls_context;
  b->upstream = c.upstream;
  b->parameters = c.parameters;
  b->backend_pid = c.backend_pid;
  b->backend_key = c.backend_key;
  return b;
}

std::shared_ptr<ServerConn> FromIdle(std::unique_ptr<IdleBackend> b,
                                     const asio::any_io_executor& ex,
                                     asio::ssl::context& fallback) {
  GenericSocket s(ex);
  asio::error_code ec;
  s.assign(b->protocol, b->fd.get(), ec);
  if (ec) return nullptr;  // b closes the descriptor
  b->fd.release();         // the socket owns it now
  auto c = std::make_shared<ServerConn>(std::move(s), b->tls_context, fallback);
  c->stream.AdoptTls(std::move(b->tls));
  c->upstream = b->upstream;
  c->parameters = std::move(b->parameters);
  c->backend_pid = b->backend_pid;
  c->backend_key = b->backend_key;
  return c;
}

asio::awaitable<void> ResetAndPark(UpstreamPool& pool, std::shared_ptr<const Route> route,
                                   PoolKey key, std::shared_ptr<ServerConn> c) {
  auto ex = co_await asio::this_coro::executor;
  asio::steady_timer deadline(ex);
  deadline.expires_after(std::chrono::milliseconds(kPoolResetTimeoutMs));
  auto timed_out = std::make_shared<bool>(false);
  deadline.async_wait([c, timed_out](asio::error_code ec) {
    if (ec) return;
    *timed_out = true;
    c->stream.Close();
  });
  auto r = co_await SimpleQuery(*c, "DISCARD ALL");
  deadline.cancel();
  if (!r.ok() || *timed_out || !c->leftover.empty()) {
    c->stream.Close();
    pool.Note(PoolEvent::kDroppedResetFailed);
    co_return;
  }
  auto idle = ToIdle(*c);
  if (!idle) {
    pool.Note(PoolEvent::kDroppedResetFailed);
    co_return;
  }
  pool.Park(*route, key, std::move(idle));
}

}  // namespace pgshift::proxy
