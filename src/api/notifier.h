// Notifier: the optional webhook (pgshiftd --webhook URL). A watcher thread
// reads the migrations through the MigrationService every poll_ms and turns
// what changed into JSON notifications; a sender thread POSTs each one with
// a bounded timeout, best effort (a failure is logged, never retried). The
// engine is never waited on: the watcher only reads the store as the API
// does, and a full queue drops its oldest notification with a warning.
//
//   {"type":"phase_changed","migration","name","database"|null,"from"|null,
//    "to","state","at","message"}            one per phase change (from the events)
//   {"type":"finding","migration","name","database"|null,"severity":
//    "blocking"|"warning","finding","subject","message"}   once per new finding
//
// What exists when the notifier starts is taken as already announced.
// Thread-safe: Start/Stop from one owner thread; PollOnce for tests.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>

#include "common/status.h"
#include "workflow/service.h"

namespace pgshift::api {

struct NotifierOptions {
  std::string url;  // http[s]://host[:port][/path]
  int64_t poll_ms = 500;
  int64_t timeout_ms = 5000;  // per POST (connect, write and read each)
  size_t max_queue = 1000;
  // migration id → database, for the "database" field (may be empty).
  std::function<std::map<std::string, std::string>()> links;
};

class Notifier {
 public:
  // InvalidArgument for a URL that is not http(s)://host[:port][/path].
  static Result<std::unique_ptr<Notifier>> Make(MigrationService& svc, NotifierOptions options);
  ~Notifier();  // Stops.

  void Start();
  // Ends both threads; a POST in flight finishes within timeout_ms.
  void Stop();

  // One look at the migrations: queues what changed since the last look.
  void PollOnce();
  // Notifications sent (answered 2xx) and failed so far.
  int64_t sent() const { return sent_; }
  int64_t failed() const { return failed_; }

 private:
  Notifier(MigrationService& svc, NotifierOptions options, std::string base, std::string path)
      : svc_(svc), opts_(std::move(options)), base_(std::move(base)), path_(std::move(path)) {}
  void Enqueue(nlohmann::json n);
  void Watch();
  void Send();

  struct Seen {
    size_t events = 0;
    std::string phase;
    std::set<std::string> findings;
    bool terminal = false;
  };

  MigrationService& svc_;
  NotifierOptions opts_;
  std::string base_, path_;
  std::map<std::string, Seen> seen_;  // watcher thread (or PollOnce) only
  bool primed_ = false;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<nlohmann::json> queue_;
  bool stopping_ = false;
  std::atomic<int64_t> sent_{0}, failed_{0};
  std::thread watcher_, sender_;
};

}  // namespace pgshift::api
