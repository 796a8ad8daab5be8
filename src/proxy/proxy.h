// pgshift-proxy as a library: a Proxy owns the listener, a fixed number of
// io_context threads running client sessions, and the admin HTTP API on its
// own thread. Tests run it in-process; main.cc wraps it in an executable.
//
// Start/Stop are called from one thread; everything else is thread-safe.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "proxy/config.h"
#include "proxy/shared.h"

namespace httplib {
class Server;
}

namespace pgshift::proxy {

class Proxy {
 public:
  explicit Proxy(ProxyConfig config);
  ~Proxy();
  Proxy(const Proxy&) = delete;
  Proxy& operator=(const Proxy&) = delete;

  // Binds the listener and the admin API (port 0 picks a free port), starts the threads.
  Status Start();
  // Stops accepting, closes every session, joins the threads. Idempotent.
  void Stop();

  int port() const { return port_; }
  int admin_port() const { return admin_port_; }
  ProxyShared& shared() { return *shared_; }

  // Admin operations (the HTTP handlers call these).
  Status RepointRoute(const std::string& name, const UpstreamConfig& upstream);
  // The repoint of a switch under hold `epoch` (Route::RepointHeld), saved.
  Status SwitchRoute(const std::string& name, uint64_t epoch, const UpstreamConfig& upstream);
  Status AddRoute(const RouteConfig& route);
  std::string MetricsText() const;

 private:
  Status StartAdmin();
  Status SaveRoutes();
  // Releases every hold whose lease ran out (Route::ExpireLease), until Stop.
  void WatchLeases();

  std::unique_ptr<ProxyShared> shared_;
  std::vector<std::unique_ptr<asio::io_context>> contexts_;
  std::vector<std::unique_ptr<asio::executor_work_guard<asio::io_context::executor_type>>> guards_;
  std::vector<std::thread> threads_;
  std::unique_ptr<tcp::acceptor> acceptor_;
  std::unique_ptr<httplib::Server> admin_;
  std::thread admin_thread_;
  std::thread lease_thread_;
  std::mutex lease_mu_;
  std::condition_variable lease_cv_;
  bool stopping_ = false;  // guarded by lease_mu_
  std::mutex save_mu_;
  int port_ = 0;
  int admin_port_ = 0;
  bool started_ = false;
};

}  // namespace pgshift::proxy
