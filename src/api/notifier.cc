#include "api/notifier.h"

#include <httplib.h>
#include <spdlog/spdlog.h>

#include <regex>

#include "api/http_util.h"

namespace pgshift::api {
namespace {

using nlohmann::json;

bool Terminal(const std::string& phase) { return phase == "finalized" || phase == "rolled_back"; }

std::string FindingKey(const json& f) {
  return f.value("id", "") + "\x1f" + f.value("subject", "") + "\x1f" + f.value("severity", "");
}

}  // namespace

Result<std::unique_ptr<Notifier>> Notifier::Make(MigrationService& svc, NotifierOptions options) {
  static const std::regex kUrl(R"(^(https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?)(/[^\s]*)?$)");
  std::smatch m;
  if (!std::regex_match(options.url, m, kUrl)) {
    return InvalidArgument("--webhook '" + options.url +
                           "' is not a URL like http://host:port/path");
  }
  std::string path = m[3].matched ? m[3].str() : "/";
  return std::unique_ptr<Notifier>(new Notifier(svc, std::move(options), m[1].str(), path));
}

Notifier::~Notifier() { Stop(); }

void Notifier::Start() {
  if (watcher_.joinable()) return;
  watcher_ = std::thread([this] { Watch(); });
  sender_ = std::thread([this] { Send(); });
}

void Notifier::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (watcher_.joinable()) watcher_.join();
  if (sender_.joinable()) sender_.join();
}

void Notifier::Enqueue(json n) {
  std::lock_guard lock(mu_);
  if (queue_.size() >= opts_.max_queue) {
    spdlog::warn("webhook: {} notifications waiting; dropping the oldest", queue_.size());
    queue_.pop_front();
  }
  queue_.push_back(std::move(n));
  cv_.notify_all();
}

void Notifier::PollOnce() {
  auto list = Wrapped(svc_.List(), "migrations");
  if (!list.ok()) return;
  const auto links = opts_.links ? opts_.links() : std::map<std::string, std::string>{};
  for (const auto& m : (*list)["migrations"]) {
    const std::string id = m.value("id", "");
    Seen& seen = seen_[id];
    if (seen.terminal) continue;
    const json database = links.count(id) ? json(links.at(id)) : json(nullptr);
    const json base = {{"migration", id}, {"name", m.value("name", "")}, {"database", database}};
    auto events = Wrapped(svc_.Events(id), "events");
    if (events.ok()) {
      const json& ev = (*events)["events"];
      for (size_t i = seen.events; i < ev.size(); ++i) {
        const std::string phase = ev[i].value("phase", "");
        if (phase != seen.phase && primed_) {
          json n = base;
          n.update({{"type", "phase_changed"},
                    {"from", seen.phase.empty() ? json(nullptr) : json(seen.phase)},
                    {"to", phase},
                    {"state", m.value("state", "")},
                    {"at", ev[i].value("at", "")},
                    {"message", ev[i].value("message", "")}});
          Enqueue(std::move(n));
        }
        seen.phase = phase;
      }
      seen.events = ev.size();
    }
    for (const auto& f : m.value("findings", json::array())) {
      const std::string severity = f.value("severity", "");
      if (severity != "blocking" && severity != "warning") continue;
      if (!seen.findings.insert(FindingKey(f)).second || !primed_) continue;
      json n = base;
      n.update({{"type", "finding"},
                {"severity", severity},
                {"finding", f.value("id", "")},
                {"subject", f.value("subject", "")},
                {"message", f.value("message", "")}});
      Enqueue(std::move(n));
    }
    seen.terminal = Terminal(m.value("phase", ""));
  }
  primed_ = true;
}

void Notifier::Watch() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    lock.unlock();
    PollOnce();
    lock.lock();
    cv_.wait_for(lock, std::chrono::milliseconds(opts_.poll_ms), [this] { return stopping_; });
  }
}

void Notifier::Send() {
  httplib::Client http(base_);
  const time_t sec = opts_.timeout_ms / 1000;
  const time_t usec = (opts_.timeout_ms % 1000) * 1000;
  http.set_connection_timeout(sec, usec);
  http.set_read_timeout(sec, usec);
  http.set_write_timeout(sec, usec);
  std::unique_lock lock(mu_);
  while (true) {
    cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (stopping_) return;
    json n = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    auto r = http.Post(path_.c_str(), n.dump(), "application/json");
    if (r && r->status >= 200 && r->status < 300) {
      sent_++;
    } else {
      failed_++;
      spdlog::warn("webhook: POST {}{} ({} {}) failed: {}", base_, path_, n.value("type", ""),
                   n.value("migration", ""),
                   r ? "HTTP " + std::to_string(r->status) : httplib::to_string(r.error()));
    }
    lock.lock();
  }
}

}  // namespace pgshift::api
