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

void JsonReply(httplib::Response& res, int status, const nlohmann::json& j) {
  res.status = status;
  res.set_content(j.dump(), "application/json");
}

void ErrorReply(httplib::Response& res, int status, const std::string& msg) {
  JsonReply(res, status, {{"error", msg}});
}

Result<nlohmann::json> Body(const httplib::Request& req) {
  if (req.body.empty()) return nlohmann::json::object();
  try {
    auto j = nlohmann::json::parse(req.body);
    if (!j.is_object()) return InvalidArgument("request body must be a JSON object");
    return j;
  } catch (const std::exception& e) {
    return InvalidArgument(std::string("request body is not valid JSON: ") + e.what());
  }
}

// The "upstream" object of a request body ({"upstream":{"host","port",...}}).
Result<UpstreamConfig> BodyUpstream(const httplib::Request& req) {
  PGSHIFT_ASSIGN_OR_RETURN(nlohmann::json body, Body(req));
  if (!body.contains("upstream")) return InvalidArgument("body needs \"upstream\"");
  return ParseUpstream(body["upstream"], "upstream");
}

}  // namespace

Proxy::Proxy(ProxyConfig config) : shared_(std::make_unique<ProxyShared>(std::move(config))) {}

Proxy::~Proxy() { Stop(); }

Status Proxy::Start() {
  ProxyShared& sh = *shared_;
  for (const auto& rc : sh.config.routes) sh.routes.Add(std::make_shared<Route>(rc));
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
  started_ = true;
  spdlog::info(
      "pgshift-proxy listening on {}:{} (admin {}:{}, {} threads, busy poll {} us, kernel splice "
      "{})",
      sh.config.listen_host, port_, sh.config.admin_host, admin_port_, sh.config.threads,
      sh.config.busy_poll_us, sh.splicer ? "on" : "off");
  return Status::OK();
}

void Proxy::Stop() {
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

Status Proxy::AddRoute(const RouteConfig& route) {
  if (shared_->routes.Find(route.name)) return AlreadyExists("route \"" + route.name + "\" exists");
  if (shared_->routes.FindByDatabase(route.database))
    return AlreadyExists("database \"" + route.database + "\" is already served by a route");
  shared_->routes.Add(std::make_shared<Route>(route));
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
  return o.str();
}

Status Proxy::StartAdmin() {
  admin_ = std::make_unique<httplib::Server>();
  auto& srv = *admin_;
  // Admin calls sit on the cutover's critical path: no Nagle / delayed-ACK stalls.
  srv.set_tcp_nodelay(true);
  ProxyShared& sh = *shared_;
  auto find = [&sh](const httplib::Request& req, httplib::Response& res) -> std::shared_ptr<Route> {
    auto r = sh.routes.Find(req.matches[1]);
    if (!r) ErrorReply(res, 404, "no route named \"" + std::string(req.matches[1]) + "\"");
    return r;
  };
  srv.Get("/health", [&sh](const httplib::Request&, httplib::Response& res) {
    JsonReply(res, 200, {{"status", "ok"}, {"routes", sh.routes.List().size()}});
  });
  srv.Get("/stats", [&sh](const httplib::Request&, httplib::Response& res) {
    JsonReply(res, 200, StatsJson(sh.Stats(), StatScope::kProxy));
  });
  srv.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(MetricsText(), "text/plain; version=0.0.4");
  });
  srv.Get("/routes", [&sh](const httplib::Request&, httplib::Response& res) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& r : sh.routes.List()) j.push_back(r->ToJson());
    JsonReply(res, 200, j);
  });
  srv.Get(R"(/routes/([^/]+))", [find](const httplib::Request& req, httplib::Response& res) {
    if (auto r = find(req, res)) JsonReply(res, 200, r->ToJson());
  });
  srv.Get(R"(/routes/([^/]+)/stats)", [find](const httplib::Request& req, httplib::Response& res) {
    if (auto r = find(req, res)) JsonReply(res, 200, r->StatsJson());
  });
  // For a fence that leaves the held sessions' backends alive. The proxy does
  // not know which route a session's cancel target belongs to, so it lists
  // every backend of its sessions on that server; the route's own are those
  // connected to its database (one route per database), which the fence
  // checks on the server. Pins the hold (Route::PinBackends).
  srv.Get(R"(/routes/([^/]+)/backends)", [&sh, find](const httplib::Request& req,
                                                     httplib::Response& res) {
    auto r = find(req, res);
    if (!r) return;
    UpstreamConfig on = r->target().upstream;
    if (req.has_param("upstream")) {
      Status st = ParseHostPort(req.get_param_value("upstream"), "upstream", &on.host, &on.port);
      if (!st.ok()) return ErrorReply(res, 400, st.message());
    }
    if (!r->PinBackends()) {
      return ErrorReply(res, 409,
                        "route \"" + r->name() +
                            "\" is not held (or its hold has not drained): its "
                            "sessions may be inside a transaction");
    }
    std::vector<uint32_t> pids = sh.cancels.UpstreamPidsOn(on.host, on.port);
    JsonReply(res, 200,
              {{"route", r->name()},
               {"database", r->database()},
               {"upstream", on.host + ":" + std::to_string(on.port)},
               {"backend_pids", pids}});
  });
  srv.Put(R"(/routes/([^/]+))", [this, &sh](const httplib::Request& req, httplib::Response& res) {
    auto body = Body(req);
    if (!body.ok()) return ErrorReply(res, 400, body.status().message());
    std::string name = req.matches[1];
    for (const auto& [k, v] : body->items())
      if (k != "upstream" && k != "database" && k != "allow_plaintext" && k != "hold_timeout_ms")
        return ErrorReply(res, 400, "unknown field \"" + k + "\" in route body");
    if (!body->contains("upstream")) return ErrorReply(res, 400, "body needs \"upstream\"");
    auto up = ParseUpstream((*body)["upstream"], "upstream");
    if (!up.ok()) return ErrorReply(res, 400, up.status().message());
    Status st;
    if (sh.routes.Find(name)) {
      st = RepointRoute(name, *up);
    } else {
      RouteConfig rc{.name = name, .upstream = *up};
      rc.database = body->value("database", std::string());
      rc.allow_plaintext = body->value("allow_plaintext", false);
      rc.hold_timeout_ms = body->value("hold_timeout_ms", kDefaultHoldTimeoutMs);
      if (rc.database.empty())
        return ErrorReply(res, 404,
                          "no route named \"" + name + "\" (to create one, give \"database\" too)");
      st = AddRoute(rc);
    }
    if (!st.ok()) return ErrorReply(res, HttpStatusFor(st.code()), st.message());
    JsonReply(res, 200, sh.routes.Find(name)->ToJson());
  });
  srv.Post(R"(/routes/([^/]+)/hold)", [find](const httplib::Request& req, httplib::Response& res) {
    auto r = find(req, res);
    if (!r) return;
    auto body = Body(req);
    if (!body.ok()) return ErrorReply(res, 400, body.status().message());
    int64_t timeout = r->hold_timeout_ms();
    if (body->contains("timeout_ms")) {
      if (!(*body)["timeout_ms"].is_number_integer() || (*body)["timeout_ms"].get<int64_t>() <= 0)
        return ErrorReply(res, 400, "timeout_ms must be a positive integer");
      timeout = (*body)["timeout_ms"].get<int64_t>();
    }
    Status st = r->Hold(timeout);
    if (!st.ok()) return ErrorReply(res, HttpStatusFor(st.code()), st.message());
    JsonReply(res, 200, r->ToJson());
  });
  // Logins on the next endpoint opened ahead of a switch (Route::Prewarm).
  srv.Post(R"(/routes/([^/]+)/prewarm)", [find](const httplib::Request& req,
                                                httplib::Response& res) {
    auto r = find(req, res);
    if (!r) return;
    auto up = BodyUpstream(req);
    if (!up.ok()) return ErrorReply(res, 400, up.status().message());
    // "wait_ms": answer once the logins are open (or that time has
    // passed), so a hold that follows does not start while they are.
    int64_t wait_ms = 0;
    if (auto body = Body(req); body.ok() && body->contains("wait_ms")) {
      const auto& w = (*body)["wait_ms"];
      if (!w.is_number_integer() || w.get<int64_t>() < 0 || w.get<int64_t>() > kMaxPrewarmWaitMs)
        return ErrorReply(
            res, 400, "wait_ms must be an integer from 0 to " + std::to_string(kMaxPrewarmWaitMs));
      wait_ms = w.get<int64_t>();
    }
    int asked = r->Prewarm(*up);
    int64_t pending = wait_ms > 0 ? r->WaitPrewarmed(wait_ms) : r->prewarms_pending.load();
    JsonReply(res, 200, {{"route", r->name()}, {"sessions_asked", asked}, {"pending", pending}});
  });
  srv.Post(R"(/routes/([^/]+)/release)",
           [find](const httplib::Request& req, httplib::Response& res) {
             auto r = find(req, res);
             if (!r) return;
             r->Release();
             JsonReply(res, 200, r->ToJson());
           });
  srv.Post(R"(/routes/([^/]+)/switch)",
           [this, find](const httplib::Request& req, httplib::Response& res) {
             auto r = find(req, res);
             if (!r) return;
             auto up = BodyUpstream(req);
             if (!up.ok()) return ErrorReply(res, 400, up.status().message());
             Status st = RepointRoute(r->name(), *up);
             r->Release();
             if (!st.ok()) return ErrorReply(res, HttpStatusFor(st.code()), st.message());
             JsonReply(res, 200, r->ToJson());
           });
  srv.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.body.empty()) ErrorReply(res, res.status, "no such admin endpoint");
  });
  if (sh.config.admin_port == 0) {
    admin_port_ = srv.bind_to_any_port(sh.config.admin_host);
    if (admin_port_ < 0) return Unavailable("cannot bind the admin API on " + sh.config.admin_host);
  } else {
    if (!srv.bind_to_port(sh.config.admin_host, sh.config.admin_port))
      return Unavailable("cannot bind the admin API on " + sh.config.admin_host + ":" +
                         std::to_string(sh.config.admin_port));
    admin_port_ = sh.config.admin_port;
  }
  admin_thread_ = std::thread([&srv] { srv.listen_after_bind(); });
  return Status::OK();
}

}  // namespace pgshift::proxy
