// TcpRelay: a TCP forwarder a test controls, to put a network between two
// servers (a standby's replication connection to its primary, pgshiftd's
// admin connection to a source) and cut it and restore it at will.
//
// It listens on 127.0.0.1:port() and forwards each accepted connection to
// the upstream. Cut() closes every forwarded connection (both ends see the
// connection end at once, as after a reset) and stops listening, so new
// connections are refused; Restore() listens again on the same port.
//
// One thread owns every socket; Cut() and Restore() hand it the request and
// wait until it is done, so when they return the relay is in the new state.
// Thread-safe.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/status.h"

namespace pgshift::testing {

class TcpRelay {
 public:
  // Listens on a free loopback port and forwards to upstream_host:upstream_port
  // (an IPv4 literal).
  static Result<std::unique_ptr<TcpRelay>> Start(const std::string& upstream_host,
                                                 int upstream_port);
  ~TcpRelay();
  TcpRelay(const TcpRelay&) = delete;
  TcpRelay& operator=(const TcpRelay&) = delete;

  int port() const { return port_; }
  // Closes every forwarded connection and refuses new ones.
  void Cut();
  // Listens again on port(); an error when the port was taken meanwhile.
  Status Restore();
  bool cut() const { return cut_; }
  // Connections accepted since Start (forwarded or not).
  int64_t accepted() const { return accepted_; }
  // Connections forwarded right now.
  int open() const { return open_; }

 private:
  enum class Request { kNone, kCut, kRestore, kStop };
  TcpRelay(std::string upstream_host, int upstream_port);
  Status Listen();
  void Loop();
  // Runs `r` on the loop thread and waits for its outcome.
  Status Ask(Request r);

  const std::string upstream_host_;
  const int upstream_port_;
  int port_ = 0;
  int listen_fd_ = -1;
  int wake_fd_ = -1;  // eventfd: a request is waiting
  std::atomic<bool> cut_{false};
  std::atomic<int64_t> accepted_{0};
  std::atomic<int> open_{0};

  std::mutex mu_;
  std::condition_variable done_cv_;
  Request request_ = Request::kNone;  // guarded by mu_
  bool answered_ = false;             // guarded by mu_
  Status answer_;                     // guarded by mu_
  std::thread thread_;
};

}  // namespace pgshift::testing
