#include "proxy/proxy.h"

#include <httplib.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <sched.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <sstream>

#include "proxy/session.h"

namespace pgshift::proxy {

std::pair<uint32_t, uint32_t> CancelRegistry::Register(std::shared_ptr<CancelTarget> t) {
  std::lock_guard<std::mutex> l(mu_);
  while (true) {
    uint32_t v[2];
    RAND_bytes(reinterpret_cast<unsigned char*>(v), sizeof(v));
    v[0] &= 0x7fffffff;  // a positive "pid", as clients print it
    if (v[0] == 0) continue;
    uint64_t id = (uint64_t{v[0]} << 32) | v[1];
    if (targets_.emplace(id, t).second) return {v[0], v[1]};
  }
}

void CancelRegistry::Unregister(uint32_t pid, uint32_t key) {
  std::lock_guard<std::mutex> l(mu_);
  targets_.erase((uint64_t{pid} << 32) | key);
}

std::shared_ptr<CancelTarget> CancelRegistry::Find(uint32_t pid, uint32_t key) const {
  std::lock_guard<std::mutex> l(mu_);
  auto it = targets_.find((uint64_t{pid} << 32) | key);
  return it == targets_.end() ? nullptr : it->second;
}

void ProxyShared::CountPoolEvent(PoolEvent e, int64_t idle) {
  pool_idle = idle;
  switch (e) {
    case PoolEvent::kHit:
      pool_hits++;
      break;
    case PoolEvent::kMiss:
      pool_misses++;
      break;
    case PoolEvent::kParked:
      pool_parked++;
      break;
    case PoolEvent::kDroppedUnclean:
      pool_dropped_unclean++;
      break;
    case PoolEvent::kDroppedRoute:
      pool_dropped_route++;
      break;
    case PoolEvent::kDroppedResetFailed:
      pool_dropped_reset_failed++;
      break;
    case PoolEvent::kDroppedFull:
      pool_dropped_full++;
      break;
    case PoolEvent::kDroppedDead:
      pool_dropped_dead++;
      break;
    case PoolEvent::kDroppedIdleTimeout:
      pool_dropped_idle_timeout++;
      break;
  }
}

std::vector<uint32_t> CancelRegistry::UpstreamPidsOn(const std::string& host, int port) const {
  std::vector<uint32_t> pids;
  std::lock_guard<std::mutex> l(mu_);
  for (const auto& [id, t] : targets_) {
    // Lock order: registry, then target (sessions take only the latter).
    std::lock_guard<std::mutex> tl(t->mu);
    if (t->upstream.host == host && t->upstream.port == port && t->pid != 0) pids.push_back(t->pid);
  }
  return pids;
}

namespace {

// Connections the kernel queues before AcceptLoop takes them: a switch or a
// restarted application pool may open hundreds at once.
constexpr int kListenBacklog = 1024;
// How often the proxy looks for holds whose lease ran out: a lapsed hold is
// released at most this late, a small part of any sensible lease.
constexpr std::chrono::milliseconds kLeaseCheckInterval{50};

asio::awaitable<void> AcceptLoop(tcp::acceptor& acceptor,
                                 std::vector<std::unique_ptr<asio::io_context>>& contexts,
                                 ProxyShared& shared) {
  size_t next = 0;
  while (acceptor.is_open()) {
    asio::io_context& ctx = *contexts[next++ % contexts.size()];
    auto [ec, sock] = co_await acceptor.async_accept(ctx, kNoThrow);
    if (ec) {
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) break;
      spdlog::warn("pgshift-proxy: accept failed: {}", ec.message());
      continue;
    }
    auto session = std::make_shared<Session>(std::move(sock), shared);
    asio::co_spawn(
        ctx, [session]() -> asio::awaitable<void> { co_await session->Run(); }, asio::detached);
  }
}

// A route whose hold and repoint flush its parked backends.
std::shared_ptr<Route> NewRoute(ProxyShared& sh, const RouteConfig& rc) {
  auto r = std::make_shared<Route>(rc);
  r->SetParkedFlush([&sh, name = rc.name] { sh.pool.FlushRoute(name); });
  return r;
}

// Runs one event-loop thread. Most of the proxy's CPU goes to the kernel
// putting this thread to sleep in epoll and waking it again (in a VM a
// wakeup of an idle CPU is an IPI and a HLT exit), once per message at
// moderate load. With busy_poll_us the thread keeps polling for that long
// after its last handler, calling sched_yield between polls so that clients
// and servers sharing its CPU still run: senders then find it awake.
void RunContext(asio::io_context& ctx, int busy_poll_us) {
  if (busy_poll_us <= 0) {
    ctx.run();
    return;
  }
  using Clock = std::chrono::steady_clock;
  const auto window = std::chrono::microseconds(busy_poll_us);
  auto last_work = Clock::now();
  while (!ctx.stopped()) {
    if (ctx.poll() > 0) {
      last_work = Clock::now();
    } else if (Clock::now() - last_work < window) {
      sched_yield();
    } else if (ctx.run_one() > 0) {
      last_work = Clock::now();
    }
  }
}

// The kTLS mode sessions use: "auto" asks OpenSSL for kernel TLS only where
// the kernel has it (otherwise every handshake would try, and fail, a
// setsockopt). `note` says which and why, for the start-up log.
KtlsMode KernelTlsMode(KtlsMode configured, std::string* note) {
  if (configured == KtlsMode::kOff) {
    *note = "off (config)";
    return KtlsMode::kOff;
  }
  Status probe = ProbeKernelTls();
  if (!probe.ok()) {
    *note = "unavailable, sessions use user-space TLS: " + probe.message();
    return KtlsMode::kOff;
  }
  *note = "auto (the kernel has TLS; each session's path is logged)";
  return KtlsMode::kAuto;
}

}  // namespace

Proxy::Proxy(ProxyConfig config) : shared_(std::make_unique<ProxyShared>(std::move(config))) {}

Proxy::~Proxy() { Stop(); }

Status Proxy::Start() {
  ProxyShared& sh = *shared_;
  std::string ktls_note = "no TLS listener";
  for (const auto& rc : sh.config.routes) sh.routes.Add(NewRoute(sh, rc));
  try {
    if (sh.config.has_tls) {
      auto ctx = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_server);
      SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
      ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                       asio::ssl::context::no_sslv3 | asio::ssl::context::single_dh_use);
      ctx->use_certificate_chain_file(sh.config.tls.cert_path);
      ctx->use_private_key_file(sh.config.tls.key_path, asio::ssl::context::pem);
      ctx->load_verify_file(sh.config.tls.client_ca_path);
      SSL_CTX_set_client_CA_list(ctx->native_handle(),
                                 SSL_load_client_CA_file(sh.config.tls.client_ca_path.c_str()));
      // The certificate is checked after the handshake so a client without one (or with
      // one from another CA) gets a PostgreSQL error instead of a bare TLS alert.
      ctx->set_verify_mode(asio::ssl::verify_peer);
      TuneServerContext(ctx->native_handle(), KernelTlsMode(sh.config.ktls, &ktls_note));
      sh.server_tls = std::move(ctx);
    }
    SSL_CTX_set_min_proto_version(sh.upstream_tls.native_handle(), TLS1_2_VERSION);
  } catch (const std::exception& e) {
    return InvalidArgument(std::string("cannot load TLS files of the proxy config: ") + e.what());
  }
  if (sh.config.kernel_splice && !sh.splicer) {
    auto splicer = Splicer::Create();
    if (splicer.ok()) {
      sh.splicer = std::move(splicer).value();
    } else {
      spdlog::warn("pgshift-proxy: no kernel splice, forwarding in user space: {}",
                   splicer.status().message());
    }
  }
  for (int i = 0; i < sh.config.threads; i++) {
    contexts_.push_back(std::make_unique<asio::io_context>(1));
    guards_.push_back(std::make_unique<asio::executor_work_guard<asio::io_context::executor_type>>(
        contexts_.back()->get_executor()));
  }
  try {
    acceptor_ = std::make_unique<tcp::acceptor>(*contexts_[0]);
    tcp::endpoint ep(asio::ip::make_address(sh.config.listen_host),
                     static_cast<unsigned short>(sh.config.listen_port));
    acceptor_->open(ep.protocol());
    acceptor_->set_option(tcp::acceptor::reuse_address(true));
    acceptor_->bind(ep);
    acceptor_->listen(kListenBacklog);
    port_ = acceptor_->local_endpoint().port();
  } catch (const std::exception& e) {
    return Unavailable("cannot listen on " + sh.config.listen_host + ":" +
                       std::to_string(sh.config.listen_port) + ": " + e.what());
  }
  PGSHIFT_RETURN_IF_ERROR(StartAdmin());
  asio::co_spawn(*contexts_[0], AcceptLoop(*acceptor_, contexts_, sh), asio::detached);
  if (sh.splicer) {
    // The kernel splice's announcements (a spliced session needs the proxy)
    // are read on the first loop and posted to each session's own.
    auto events = std::make_shared<asio::posix::stream_descriptor>(*contexts_[0],
                                                                   ::dup(sh.splicer->EventsFd()));
    asio::co_spawn(
        *contexts_[0],
        [events, sp = sh.splicer.get()]() -> asio::awaitable<void> {
          while (events->is_open()) {
            auto [ec] =
                co_await events->async_wait(asio::posix::descriptor_base::wait_read, kNoThrow);
            if (ec) break;
            sp->DispatchEvents();
          }
        },
        asio::detached);
  }
  for (auto& ctx : contexts_)
    threads_.emplace_back([c = ctx.get(), us = sh.config.busy_poll_us] { RunContext(*c, us); });
  {
    std::lock_guard<std::mutex> l(lease_mu_);
    stopping_ = false;
  }
  lease_thread_ = std::thread([this] { WatchLeases(); });
  started_ = true;
  spdlog::info(
      "pgshift-proxy listening on {}:{} (admin {}:{}, {} threads, busy poll {} us, kernel splice "
      "{}, kernel TLS {})",
      sh.config.listen_host, port_, sh.config.admin_host, admin_port_, sh.config.threads,
      sh.config.busy_poll_us, sh.splicer ? "on" : "off", ktls_note);
  return Status::OK();
}

void Proxy::WatchLeases() {
  std::unique_lock<std::mutex> l(lease_mu_);
  while (!lease_cv_.wait_for(l, kLeaseCheckInterval, [this] { return stopping_; })) {
    shared_->pool.Expire();
    for (const auto& r : shared_->routes.List()) {
      auto lapsed = r->ExpireLease();
      if (!lapsed) continue;
      spdlog::warn(
          "pgshift-proxy: route {}: hold {} lapsed (its lease of {} ms was not renewed); "
          "traffic released to {}:{}",
          r->name(), lapsed->epoch, lapsed->lease_ms, lapsed->released_to.host,
          lapsed->released_to.port);
    }
  }
}

void Proxy::Stop() {
  {
    std::lock_guard<std::mutex> l(lease_mu_);
    stopping_ = true;
  }
  lease_cv_.notify_all();
  if (lease_thread_.joinable()) lease_thread_.join();
  if (admin_) admin_->stop();
  if (admin_thread_.joinable()) admin_thread_.join();
  if (acceptor_ && !contexts_.empty()) {
    asio::post(*contexts_[0], [a = acceptor_.get()] {
      asio::error_code ec;
      a->close(ec);
    });
  }
  guards_.clear();
  for (auto& ctx : contexts_) ctx->stop();
  for (auto& t : threads_)
    if (t.joinable()) t.join();
  threads_.clear();
  acceptor_.reset();
  contexts_.clear();  // destroys the sessions' coroutines, closing their sockets
  shared_->pool.Clear();
  started_ = false;
}

Status Proxy::SaveRoutes() {
  std::lock_guard<std::mutex> l(save_mu_);
  ProxyConfig c = shared_->config;
  c.routes.clear();
  for (const auto& r : shared_->routes.List()) c.routes.push_back(r->config());
  Status st = SaveProxyConfig(c);
  if (!st.ok()) return st.Wrap("route changed but not saved to " + c.path);
  return st;
}

Status Proxy::RepointRoute(const std::string& name, const UpstreamConfig& upstream) {
  auto r = shared_->routes.Find(name);
  if (!r) return NotFound("no route named \"" + name + "\"");
  if (r->Repoint(upstream))
    spdlog::info("pgshift-proxy: route {} now points at {}:{}", name, upstream.host, upstream.port);
  return SaveRoutes();
}

Status Proxy::SwitchRoute(const std::string& name, uint64_t epoch, const UpstreamConfig& upstream) {
  auto r = shared_->routes.Find(name);
  if (!r) return NotFound("no route named \"" + name + "\"");
  PGSHIFT_ASSIGN_OR_RETURN(bool changed, r->RepointHeld(epoch, upstream));
  if (changed)
    spdlog::info("pgshift-proxy: route {} switched to {}:{} under hold {}", name, upstream.host,
                 upstream.port, epoch);
  return SaveRoutes();
}

Status Proxy::AddRoute(const RouteConfig& route) {
  if (shared_->routes.Find(route.name)) return AlreadyExists("route \"" + route.name + "\" exists");
  if (shared_->routes.FindByDatabase(route.database))
    return AlreadyExists("database \"" + route.database + "\" is already served by a route");
  shared_->routes.Add(NewRoute(*shared_, route));
  return SaveRoutes();
}

std::string Proxy::MetricsText() const {
  std::ostringstream o;
  auto routes = shared_->routes.List();
  std::vector<StatValues> per_route;
  for (const auto& r : routes) per_route.push_back(r->Stats());
  const StatValues proxy_wide = shared_->Stats();
  for (size_t i = 0; i < kStatCount; i++) {
    const StatDef& d = kStats[i];
    o << "# HELP " << kMetricPrefix << d.metric << " " << d.help << "\n# TYPE " << kMetricPrefix
      << d.metric << " " << (d.type == StatType::kCounter ? "counter" : "gauge") << "\n";
    if (d.scope == StatScope::kProxy) {
      o << kMetricPrefix << d.metric << " " << proxy_wide[i] << "\n";
      continue;
    }
    for (size_t r = 0; r < routes.size(); r++)
      o << kMetricPrefix << d.metric << "{route=\"" << routes[r]->name() << "\"} "
        << per_route[r][i] << "\n";
  }
  // The latency histogram (cumulative buckets, seconds).
  const std::string h = std::string(kMetricPrefix) + std::string(kTxnLatency.metric);
  o << "# HELP " << h << " " << kTxnLatency.help << "\n# TYPE " << h << " histogram\n";
  for (const auto& r : routes) {
    const Route::SpliceLive live = r->LiveTotals();
    const auto& counts = live.latency;
    const std::string label = "route=\"" + r->name() + "\"";
    int64_t below = 0;
    for (size_t b = 0; b < kLatencyBuckets; b++) {
      below += counts[b];
      o << h << "_bucket{" << label << ",le=\"";
      if (b < kLatencyBoundsUs.size())
        o << static_cast<double>(kLatencyBoundsUs[b]) / 1e6;
      else
        o << "+Inf";
      o << "\"} " << below << "\n";
    }
    o << h << "_sum{" << label << "} " << static_cast<double>(live.latency_sum_us) / 1e6 << "\n";
    o << h << "_count{" << label << "} " << below << "\n";
  }
  return o.str();
}

}  // namespace pgshift::proxy
