#include "router/multi_router.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <optional>
#include <set>
#include <thread>

#include "proxy/config.h"
#include "router/proxy_router.h"

namespace pgshift {
namespace {

// How long the known-down probe may take: a refused connection answers at
// once, so this only bounds the cases it does not decide.
constexpr int64_t kProbeTimeoutMs = 1000;

// Adds `from`'s counts to `into` (same layout); false when the layouts differ.
bool AddHistogram(LatencyHistogram& into, const LatencyHistogram& from) {
  if (from.empty()) return true;
  if (into.empty()) {
    into = from;
    return true;
  }
  if (into.upper_ms != from.upper_ms || into.counts.size() != from.counts.size()) return false;
  for (size_t i = 0; i < into.counts.size(); i++) into.counts[i] += from.counts[i];
  return true;
}

// host and port of an http(s) URL; port 0 when it cannot be told.
std::pair<std::string, int> HostPort(const std::string& url) {
  const size_t scheme = url.find("://");
  std::string rest = scheme == std::string::npos ? url : url.substr(scheme + 3);
  rest = rest.substr(0, rest.find('/'));
  const int default_port = url.rfind("https://", 0) == 0 ? 443 : 80;
  std::string host = rest;
  std::string port;
  if (!rest.empty() && rest[0] == '[') {  // [v6]:port
    const size_t close = rest.find(']');
    if (close == std::string::npos) return {"", 0};
    host = rest.substr(1, close - 1);
    if (close + 1 < rest.size() && rest[close + 1] == ':') port = rest.substr(close + 2);
  } else if (const size_t colon = rest.rfind(':'); colon != std::string::npos) {
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
  }
  if (port.empty()) return {host, default_port};
  try {
    return {host, std::stoi(port)};
  } catch (const std::exception&) {
    return {host, 0};
  }
}

}  // namespace

uint64_t CombinedEpoch(const std::vector<uint64_t>& instance_epochs) {
  // FNV-1a over the epochs' bytes.
  uint64_t h = 1469598103934665603ULL;
  for (uint64_t e : instance_epochs) {
    for (int b = 0; b < 8; b++) {
      h ^= (e >> (8 * b)) & 0xff;
      h *= 1099511628211ULL;
    }
  }
  return h == 0 ? 1 : h;
}

bool ConnectionRefused(const std::string& host, int port, int64_t timeout_ms) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res) != 0) return false;
  bool refused = res != nullptr;
  // Refused only when every address refuses.
  for (addrinfo* a = res; a != nullptr && refused; a = a->ai_next) {
    const int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      refused = false;
      break;
    }
    int err = 0;
    if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
      err = errno;
      if (err == EINPROGRESS) {
        pollfd p{.fd = fd, .events = POLLOUT, .revents = 0};
        err = ETIMEDOUT;
        if (poll(&p, 1, static_cast<int>(timeout_ms)) == 1) {
          socklen_t len = sizeof err;
          if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
        }
      }
    }
    close(fd);
    refused = err == ECONNREFUSED;
  }
  freeaddrinfo(res);
  return refused;
}

MultiRouter::MultiRouter(std::vector<RouterInstance> instances)
    : instances_(std::move(instances)) {}

std::string MultiRouter::Kind() const {
  return instances_.empty() ? "proxy" : instances_.front().router->Kind();
}

std::vector<Status> MultiRouter::ForEach(const std::function<Status(size_t)>& fn) const {
  std::vector<Status> out(instances_.size());
  std::vector<std::thread> threads;
  threads.reserve(instances_.size());
  for (size_t i = 0; i < instances_.size(); i++) {
    threads.emplace_back([&out, &fn, i] { out[i] = fn(i); });
  }
  for (auto& t : threads) t.join();
  return out;
}

bool MultiRouter::KnownDown(size_t i) const {
  return instances_[i].known_down && instances_[i].known_down();
}

Status MultiRouter::Named(size_t i, const Status& st) const {
  return st.ok() ? st : st.Wrap("instance " + instances_[i].name);
}

Status MultiRouter::OnAll(const std::function<Status(Router&)>& call) const {
  std::vector<Status> st = ForEach([&](size_t i) {
    Status s = call(*instances_[i].router);
    return s.ok() || KnownDown(i) ? Status::OK() : s;
  });
  for (size_t i = 0; i < st.size(); i++) {
    if (!st[i].ok()) return Named(i, st[i]);
  }
  return Status::OK();
}

Status MultiRouter::Hold(int64_t timeout_ms) {
  return HoldLeased(timeout_ms, proxy::kDefaultHoldLeaseMs).status();
}

Result<HoldLease> MultiRouter::HoldLeased(int64_t timeout_ms, int64_t lease_ms) {
  std::vector<uint64_t> epochs(instances_.size(), 0);
  std::vector<char> down(instances_.size(), 0);  // not vector<bool>: written from several threads
  std::vector<Status> st = ForEach([&](size_t i) -> Status {
    auto lease = instances_[i].router->HoldLeased(timeout_ms, lease_ms);
    if (!lease.ok()) {
      down[i] = KnownDown(i);
      return lease.status();
    }
    epochs[i] = lease->epoch;
    // Epoch 0 means "known down" here, so an instance must have leases.
    if (epochs[i] == 0) return Internal("held without a lease; every instance must have leases");
    return Status::OK();
  });
  Status failed;
  for (size_t i = 0; i < st.size() && failed.ok(); i++) {
    if (!st[i].ok() && !down[i]) failed = Named(i, st[i]);
  }
  const bool any_held = std::any_of(epochs.begin(), epochs.end(), [](uint64_t e) { return e; });
  if (failed.ok() && !any_held) {
    failed = Unavailable("no instance of the route could be held: every one refused connections (" +
                         st.front().message() + ")");
  }
  if (!failed.ok()) {
    // Not holding some instances: let the others go again.
    ForEach([&](size_t i) { return epochs[i] ? instances_[i].router->Release() : Status::OK(); });
    return failed;
  }
  return HoldLease{
      .epoch = CombinedEpoch(epochs), .lease_ms = lease_ms, .instance_epochs = std::move(epochs)};
}

Status MultiRouter::RenewHold(const HoldLease& hold) {
  if (hold.instance_epochs.size() != instances_.size()) {
    return FailedPrecondition("hold " + std::to_string(hold.epoch) + " was taken on " +
                              std::to_string(hold.instance_epochs.size()) +
                              " instance(s); the route lists " + std::to_string(instances_.size()));
  }
  std::vector<Status> st = ForEach([&](size_t i) -> Status {
    Router& r = *instances_[i].router;
    const uint64_t epoch = hold.instance_epochs[i];
    if (epoch == 0) {
      // Down when the hold was taken: still down, or back and not held by us.
      auto view = r.View();
      if (!view.ok()) return KnownDown(i) ? Status::OK() : view.status();
      return FailedPrecondition("it was down when the hold was taken and is back, not held");
    }
    Status s = r.RenewHold({.epoch = epoch, .lease_ms = hold.lease_ms});
    if (s.ok() || s.code() == Code::kFailedPrecondition) return s;
    return KnownDown(i) ? Status::OK() : s;  // died inside the hold: its sessions with it
  });
  // A hold gone on any instance outranks one that merely did not answer.
  for (size_t i = 0; i < st.size(); i++) {
    if (st[i].code() == Code::kFailedPrecondition) return Named(i, st[i]);
  }
  for (size_t i = 0; i < st.size(); i++) {
    if (!st[i].ok()) return Named(i, st[i]);
  }
  return Status::OK();
}

Status MultiRouter::SwitchHeld(const Endpoint& to, const HoldLease& hold) {
  if (hold.instance_epochs.size() != instances_.size()) return RenewHold(hold);
  std::vector<Status> held = ForEach([&](size_t i) -> Status {
    const uint64_t epoch = hold.instance_epochs[i];
    if (epoch == 0) return FailedPrecondition("not held (down when the hold was taken)");
    return instances_[i].router->SwitchHeld(to, {.epoch = epoch, .lease_ms = hold.lease_ms});
  });
  const bool any = std::any_of(held.begin(), held.end(), [](const Status& s) { return s.ok(); });
  if (!any) {
    for (size_t i = 0; i < held.size(); i++) {
      if (hold.instance_epochs[i] != 0) return Named(i, held[i]);
    }
    return FailedPrecondition("no instance of the route was held");
  }
  // Switched: the rest follow without a hold where they answer, or are
  // repointed by Reconcile once they do.
  ForEach([&](size_t i) {
    return held[i].code() == Code::kFailedPrecondition ? instances_[i].router->SwitchTo(to)
                                                       : Status::OK();
  });
  return Status::OK();
}

Status MultiRouter::Release() {
  return OnAll([](Router& r) { return r.Release(); });
}

Status MultiRouter::Repoint(const Endpoint& to) {
  return OnAll([&to](Router& r) { return r.Repoint(to); });
}

Status MultiRouter::SwitchTo(const Endpoint& to) {
  return OnAll([&to](Router& r) { return r.SwitchTo(to); });
}

Status MultiRouter::Prewarm(const Endpoint& to) {
  return OnAll([&to](Router& r) { return r.Prewarm(to); });
}

Result<Endpoint> MultiRouter::Current() {
  std::vector<Endpoint> at(instances_.size());
  std::vector<Status> st = ForEach([&](size_t i) -> Status {
    PGSHIFT_ASSIGN_OR_RETURN(at[i], instances_[i].router->Current());
    return Status::OK();
  });
  std::optional<Endpoint> agreed;
  std::string where;
  bool differ = false;
  for (size_t i = 0; i < st.size(); i++) {
    if (!st[i].ok()) continue;
    where += (where.empty() ? "" : ", ") + instances_[i].name + " → " + at[i].ToString();
    if (agreed && !(*agreed == at[i])) differ = true;
    if (!agreed) agreed = at[i];
  }
  if (!agreed) return Named(0, st.front());
  if (differ)
    return FailedPrecondition("the route's instances point at different servers: " + where);
  return *agreed;
}

Result<std::optional<SwitchReport>> MultiRouter::LastSwitch() {
  std::vector<std::optional<SwitchReport>> each(instances_.size());
  ForEach([&](size_t i) -> Status {
    PGSHIFT_ASSIGN_OR_RETURN(each[i], instances_[i].router->LastSwitch());
    return Status::OK();
  });
  std::optional<SwitchReport> sum;
  for (const auto& r : each) {
    if (!r) continue;
    if (sum) {
      sum->Add(*r);
    } else {
      sum = r;
    }
  }
  return sum;
}

Result<RouteStats> MultiRouter::Stats() {
  std::vector<RouteStats> each(instances_.size());
  std::vector<Status> st = ForEach([&](size_t i) -> Status {
    PGSHIFT_ASSIGN_OR_RETURN(each[i], instances_[i].router->Stats());
    return Status::OK();
  });
  RouteStats sum;
  bool any = false;
  bool latency_ok = true;
  for (size_t i = 0; i < st.size(); i++) {
    if (!st[i].ok()) continue;
    const RouteStats& s = each[i];
    sum.sessions += s.sessions;
    sum.held_sessions += s.held_sessions;
    sum.transactions += s.transactions;
    sum.errors += s.errors;
    if (s.failed_transactions) {
      sum.failed_transactions =
          (any ? sum.failed_transactions.value_or(0) : 0) + *s.failed_transactions;
    } else {
      sum.failed_transactions.reset();
    }
    sum.timed_transactions += s.timed_transactions;
    sum.latency_sum_us += s.latency_sum_us;
    latency_ok = latency_ok && AddHistogram(sum.latency, s.latency);
    any = true;
  }
  if (!any) return Named(0, st.front());
  if (!latency_ok) sum.latency = LatencyHistogram{};  // mixed layouts: no distribution
  return sum;
}

Result<HeldBackends> MultiRouter::HeldBackendPids(const Endpoint& on) {
  std::vector<HeldBackends> each(instances_.size());
  std::vector<Status> st = ForEach([&](size_t i) -> Status {
    PGSHIFT_ASSIGN_OR_RETURN(each[i], instances_[i].router->HeldBackendPids(on));
    return Status::OK();
  });
  HeldBackends out{.server = on};
  for (size_t i = 0; i < st.size(); i++) {
    if (!st[i].ok()) {
      if (KnownDown(i)) continue;
      return Named(i, st[i]);
    }
    if (out.database.empty()) out.database = each[i].database;
    if (each[i].database != out.database) {
      return Internal("instances report the route's database as \"" + out.database + "\" and \"" +
                      each[i].database + "\"");
    }
    out.pids.insert(out.pids.end(), each[i].pids.begin(), each[i].pids.end());
  }
  return out;
}

Result<std::vector<ReplicationSession>> MultiRouter::ReplicationSessions(const Endpoint& on) {
  std::vector<std::vector<ReplicationSession>> each(instances_.size());
  std::vector<Status> st = ForEach([&](size_t i) -> Status {
    PGSHIFT_ASSIGN_OR_RETURN(each[i], instances_[i].router->ReplicationSessions(on));
    return Status::OK();
  });
  std::vector<ReplicationSession> out;
  for (size_t i = 0; i < st.size(); i++) {
    if (!st[i].ok() && !KnownDown(i)) return Named(i, st[i]);
    out.insert(out.end(), each[i].begin(), each[i].end());
  }
  return out;
}

Result<int> MultiRouter::SumOver(Result<int> (Router::*call)()) {
  std::vector<int> each(instances_.size(), 0);
  std::vector<Status> st = ForEach([&](size_t i) -> Status {
    PGSHIFT_ASSIGN_OR_RETURN(each[i], ((*instances_[i].router).*call)());
    return Status::OK();
  });
  int n = 0;
  for (size_t i = 0; i < st.size(); i++) {
    if (!st[i].ok() && !KnownDown(i)) return Named(i, st[i]);
    n += each[i];
  }
  return n;
}

Result<int> MultiRouter::RequestReplicationFeedback() {
  return SumOver(&Router::RequestReplicationFeedback);
}

Result<int> MultiRouter::PauseReplication() { return SumOver(&Router::PauseReplication); }

Result<ReconcileReport> MultiRouter::Reconcile(const Endpoint& desired) {
  ReconcileReport report;
  report.instances.resize(instances_.size());
  std::vector<std::optional<Endpoint>> moved_from(instances_.size());
  ForEach([&](size_t i) -> Status {
    RouteInstanceView& v = report.instances[i];
    v.name = instances_[i].name;
    Router& r = *instances_[i].router;
    auto view = r.View();
    if (!view.ok()) {
      v.error = view.status().message();
      return Status::OK();
    }
    v.reachable = true;
    v.view = *view;
    // A held route is inside someone's cutover, which moves it itself.
    if (v.view.held || v.view.upstream == desired) return Status::OK();
    if (Status st = r.SwitchTo(desired); !st.ok()) {
      v.error = "could not repoint it from " + v.view.upstream.ToString() + ": " + st.message();
      return Status::OK();
    }
    moved_from[i] = v.view.upstream;
    v.view.upstream = desired;
    return Status::OK();
  });
  for (size_t i = 0; i < moved_from.size(); i++) {
    if (moved_from[i]) report.repointed.push_back({instances_[i].name, *moved_from[i]});
  }
  return report;
}

Result<std::unique_ptr<Router>> MakeMultiProxyRouter(const nlohmann::json& cfg) {
  if (!cfg.is_object()) return InvalidArgument("proxy router config must be a JSON object");
  nlohmann::json common = {{"type", "proxy"}};
  const nlohmann::json* list = nullptr;
  for (const auto& [k, v] : cfg.items()) {
    if (k == "type") continue;
    if (k == "instances") {
      list = &v;
    } else if (k == "route" || k == "admin_timeout_ms") {
      common[k] = v;
    } else if (k == "admin_url") {
      return InvalidArgument(
          "proxy router config has both \"admin_url\" and \"instances\": list every instance's "
          "admin_url in \"instances\"");
    } else {
      return InvalidArgument("unknown field \"" + k + "\" in proxy router config");
    }
  }
  if (list == nullptr || !list->is_array() || list->empty()) {
    return InvalidArgument(
        "proxy router field \"instances\" must be a non-empty list like "
        "[{\"admin_url\":\"http://10.0.0.1:6433\"}]");
  }
  std::vector<RouterInstance> instances;
  std::set<std::string> seen;
  for (size_t n = 0; n < list->size(); n++) {
    const nlohmann::json& inst = (*list)[n];
    const std::string where = "proxy router instances[" + std::to_string(n) + "]";
    if (!inst.is_object()) return InvalidArgument(where + " must be an object with \"admin_url\"");
    for (const auto& [k, v] : inst.items()) {
      if (k != "admin_url") return InvalidArgument("unknown field \"" + k + "\" in " + where);
    }
    nlohmann::json one = common;
    one["admin_url"] = inst.value("admin_url", nlohmann::json());
    auto router = MakeProxyRouter(one);
    if (!router.ok()) return router.status().Wrap(where);
    const std::string url = one["admin_url"].get<std::string>();
    if (!seen.insert(url).second) return InvalidArgument(where + " lists " + url + " again");
    auto [host, port] = HostPort(url);
    std::function<bool()> down;
    if (port > 0) down = [host, port] { return ConnectionRefused(host, port, kProbeTimeoutMs); };
    instances.push_back({.name = url, .router = std::move(router).value(), .known_down = down});
  }
  return std::unique_ptr<Router>(std::make_unique<MultiRouter>(std::move(instances)));
}

}  // namespace pgshift
