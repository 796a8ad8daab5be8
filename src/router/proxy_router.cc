#include "router/proxy_router.h"

#include <httplib.h>

#include <algorithm>

#include "proxy/config.h"
#include "proxy/stats.h"

namespace pgshift {
namespace {

// Connecting to the admin API takes at most this (loopback: it either
// answers at once or is not there), even when the call may run longer.
constexpr int64_t kMaxConnectTimeoutMs = 10000;

Status FromHttp(int status, const std::string& body, const std::string& what) {
  std::string msg = body;
  try {
    auto j = nlohmann::json::parse(body);
    if (j.is_object() && j.contains("error")) msg = j["error"].get<std::string>();
  } catch (...) {
  }
  msg = what + ": " + msg;
  const Code code = CodeForHttpStatus(status);
  if (code == Code::kInternal) return Internal(msg + " (HTTP " + std::to_string(status) + ")");
  return Status(code, msg);
}

// The admin body naming an endpoint; `what` names the call in the error.
Result<nlohmann::json> UpstreamBody(const Endpoint& to, const std::string& what) {
  if (to.host.empty() || to.port <= 0) return InvalidArgument(what + " target needs host and port");
  return nlohmann::json{{"upstream", {{"host", to.host}, {"port", to.port}}}};
}

}  // namespace

Result<nlohmann::json> ProxyRouter::Call(const std::string& method, const std::string& path,
                                         const nlohmann::json& body, int64_t timeout_ms) {
  httplib::Client cli(config_.admin_url);
  if (!cli.is_valid())
    return InvalidArgument("invalid proxy admin_url \"" + config_.admin_url + "\"");
  cli.set_tcp_nodelay(true);  // a 40 ms Nagle stall per call would lengthen the hold
  cli.set_connection_timeout(std::chrono::milliseconds(std::min(timeout_ms, kMaxConnectTimeoutMs)));
  cli.set_read_timeout(std::chrono::milliseconds(timeout_ms));
  cli.set_write_timeout(std::chrono::milliseconds(timeout_ms));
  std::string what = method + " " + config_.admin_url + path;
  httplib::Result res = method == "GET"    ? cli.Get(path.c_str())
                        : method == "POST" ? cli.Post(path.c_str(), body.dump(), "application/json")
                                           : cli.Put(path.c_str(), body.dump(), "application/json");
  if (!res)
    return Unavailable(what + " failed: " + httplib::to_string(res.error()) +
                       " (is pgshift-proxy running and its admin_listen reachable?)");
  if (res->status != 200) return FromHttp(res->status, res->body, what);
  try {
    return nlohmann::json::parse(res->body);
  } catch (const std::exception& e) {
    return Internal(what + " returned invalid JSON: " + e.what());
  }
}

Status ProxyRouter::Hold(int64_t timeout_ms) {
  return HoldLeased(timeout_ms, proxy::kDefaultHoldLeaseMs).status();
}

Result<HoldLease> ProxyRouter::HoldLeased(int64_t timeout_ms, int64_t lease_ms) {
  PGSHIFT_ASSIGN_OR_RETURN(auto j, Call("POST", "/routes/" + config_.route + "/hold",
                                        {{"timeout_ms", timeout_ms}, {"lease_ms", lease_ms}},
                                        timeout_ms + config_.admin_timeout_ms));
  if (!j.contains("hold_epoch") || !j["hold_epoch"].is_number_unsigned())
    return Internal("the proxy's hold answer has no \"hold_epoch\" (pgshift-proxy too old?)");
  return HoldLease{.epoch = j["hold_epoch"].get<uint64_t>(), .lease_ms = lease_ms};
}

Status ProxyRouter::RenewHold(const HoldLease& hold) {
  // Bounded by the admin timeout: a renewal that takes longer is late anyway.
  auto r = Call("POST", "/routes/" + config_.route + "/renew", {{"epoch", hold.epoch}},
                config_.admin_timeout_ms);
  return r.ok() ? Status::OK() : r.status();
}

Status ProxyRouter::Release() {
  auto r = Call("POST", "/routes/" + config_.route + "/release", nlohmann::json::object(),
                config_.admin_timeout_ms);
  return r.ok() ? Status::OK() : r.status();
}

Status ProxyRouter::Repoint(const Endpoint& to) {
  PGSHIFT_ASSIGN_OR_RETURN(nlohmann::json body, UpstreamBody(to, "repoint"));
  auto r = Call("PUT", "/routes/" + config_.route, body, config_.admin_timeout_ms);
  return r.ok() ? Status::OK() : r.status();
}

Status ProxyRouter::Prewarm(const Endpoint& to) {
  PGSHIFT_ASSIGN_OR_RETURN(nlohmann::json body, UpstreamBody(to, "prewarm"));
  // Waits for the logins: the hold that follows should not start while the
  // proxy and the standby are still busy opening them.
  const int64_t wait_ms = WaitMs();
  body["wait_ms"] = wait_ms;
  auto r = Call("POST", "/routes/" + config_.route + "/prewarm", body, config_.admin_timeout_ms);
  if (!r.ok()) return r.status();
  const int64_t pending = r->value("pending", int64_t{0});
  if (pending > 0) {
    return Timeout(std::to_string(pending) + " login(s) on " + to.ToString() +
                   " were still being opened after " + std::to_string(wait_ms) + " ms");
  }
  return Status::OK();
}

int64_t ProxyRouter::WaitMs() const {
  return std::clamp<int64_t>(config_.admin_timeout_ms / 2, 1, proxy::kMaxAdminWaitMs);
}

Result<std::vector<ReplicationSession>> ProxyRouter::ReplicationSessions(const Endpoint& on) {
  if (on.host.empty() || on.port <= 0)
    return InvalidArgument("replication sessions: endpoint needs host and port");
  PGSHIFT_ASSIGN_OR_RETURN(
      auto j, Call("GET", "/routes/" + config_.route + "/replication?upstream=" + on.ToString(),
                   nullptr, config_.admin_timeout_ms));
  std::vector<ReplicationSession> out;
  try {
    for (const auto& s : j.at("sessions")) {
      ReplicationSession r{.backend_pid = s.at("backend_pid").get<int>(),
                           .server = {s.at("server").at("host").get<std::string>(),
                                      s.at("server").at("port").get<int>()},
                           .database = s.at("database").get<std::string>(),
                           .user = s.at("user").get<std::string>(),
                           .application_name = s.at("application_name").get<std::string>(),
                           .client_addr = s.at("client_addr").get<std::string>(),
                           .streaming = s.at("streaming").get<bool>(),
                           .slot = s.at("slot").get<std::string>()};
      // Asked about `on`: a session elsewhere would be mistaken for one of its consumers.
      if (!(r.server == on))
        return Internal("the proxy listed a replication session on " + r.server.ToString() +
                        ", not on " + on.ToString());
      out.push_back(std::move(r));
    }
  } catch (const std::exception& e) {
    return Internal(std::string("unexpected replication JSON from the proxy: ") + e.what());
  }
  return out;
}

Result<int> ProxyRouter::RequestReplicationFeedback() {
  PGSHIFT_ASSIGN_OR_RETURN(auto j,
                           Call("POST", "/routes/" + config_.route + "/replication/feedback",
                                nlohmann::json::object(), config_.admin_timeout_ms));
  return j.value("sessions_asked", 0);
}

Result<int> ProxyRouter::PauseReplication() {
  const int64_t wait_ms = WaitMs();
  PGSHIFT_ASSIGN_OR_RETURN(auto j, Call("POST", "/routes/" + config_.route + "/replication/pause",
                                        {{"wait_ms", wait_ms}}, config_.admin_timeout_ms));
  const int64_t pending = j.value("pending", int64_t{0});
  if (pending > 0) {
    return Timeout(std::to_string(pending) + " of " +
                   std::to_string(j.value("sessions_paused", 0)) +
                   " paused replication session(s) still had their server connection after " +
                   std::to_string(wait_ms) + " ms");
  }
  return j.value("sessions_paused", 0);
}

Status ProxyRouter::SwitchTo(const Endpoint& to) { return Switch(to, 0); }

Status ProxyRouter::SwitchHeld(const Endpoint& to, const HoldLease& hold) {
  return Switch(to, hold.epoch);
}

Status ProxyRouter::Switch(const Endpoint& to, uint64_t epoch) {
  PGSHIFT_ASSIGN_OR_RETURN(nlohmann::json body, UpstreamBody(to, "switch"));
  if (epoch != 0) body["epoch"] = epoch;
  auto r = Call("POST", "/routes/" + config_.route + "/switch", body, config_.admin_timeout_ms);
  return r.ok() ? Status::OK() : r.status();
}

Result<Endpoint> ProxyRouter::Current() {
  PGSHIFT_ASSIGN_OR_RETURN(RouteView v, View());
  return v.upstream;
}

Result<RouteView> ProxyRouter::View() {
  PGSHIFT_ASSIGN_OR_RETURN(
      auto j, Call("GET", "/routes/" + config_.route, nullptr, config_.admin_timeout_ms));
  try {
    return RouteView{.upstream = {j.at("upstream").at("host").get<std::string>(),
                                  j.at("upstream").at("port").get<int>()},
                     .held = j.value("held", false)};
  } catch (const std::exception& e) {
    return Internal(std::string("unexpected route JSON from the proxy: ") + e.what());
  }
}

Result<std::optional<SwitchReport>> ProxyRouter::LastSwitch() {
  PGSHIFT_ASSIGN_OR_RETURN(
      auto j, Call("GET", "/routes/" + config_.route, nullptr, config_.admin_timeout_ms));
  // An older proxy has no switch reports.
  const auto it = j.find("last_switch");
  if (it == j.end() || it->is_null()) return std::optional<SwitchReport>();
  try {
    const auto& r = *it;
    auto endpoint = [](const nlohmann::json& u) {
      return Endpoint{u.at("host").get<std::string>(), u.at("port").get<int>()};
    };
    const auto& c = r.at("carried");
    const auto& e = r.at("ended");
    SwitchReport out{.from = endpoint(r.at("from")),
                     .to = endpoint(r.at("to")),
                     .at_ms = r.at("at_ms").get<int64_t>(),
                     .sessions = r.at("sessions").get<int64_t>(),
                     .moved = r.at("moved").get<int64_t>(),
                     .prewarmed = r.at("prewarmed").get<int64_t>(),
                     .pending = r.at("pending").get<int64_t>(),
                     .waited_for = r.at("waited_for").get<int64_t>()};
    out.carried = {.settings = c.at("settings").get<int64_t>(),
                   .protocol_statements = c.at("protocol_statements").get<int64_t>(),
                   .prepared_statements = c.at("prepared_statements").get<int64_t>(),
                   .listen_channels = c.at("listen_channels").get<int64_t>(),
                   .advisory_locks = c.at("advisory_locks").get<int64_t>()};
    out.ended = {.temporary_tables = e.at("temporary_tables").get<int64_t>(),
                 .holdable_cursors = e.at("holdable_cursors").get<int64_t>(),
                 .carry_failed = e.at("carry_failed").get<int64_t>(),
                 .move_failed = e.at("move_failed").get<int64_t>()};
    return std::optional<SwitchReport>(out);
  } catch (const std::exception& ex) {
    return Internal(std::string("unexpected switch report from the proxy: ") + ex.what());
  }
}

Result<RouteStats> ProxyRouter::Stats() {
  PGSHIFT_ASSIGN_OR_RETURN(auto j, Call("GET", "/routes/" + config_.route + "/stats", nullptr,
                                        config_.admin_timeout_ms));
  // The keys come from the proxy's one list of stats (proxy/stats.h).
  auto get = [&j](proxy::Stat s) { return j.value(std::string(proxy::StatKey(s)), int64_t{0}); };
  RouteStats stats{.sessions = get(proxy::Stat::sessions),
                   .held_sessions = get(proxy::Stat::held_sessions),
                   .transactions = get(proxy::Stat::transactions),
                   .errors = get(proxy::Stat::errors),
                   .failed_transactions = get(proxy::Stat::failed_transactions)};
  // An older proxy has no histogram: no latency then.
  const auto h = j.find(std::string(proxy::kTxnLatency.name));
  if (h == j.end() || !h->is_object()) return stats;
  try {
    h->at("upper_ms").get_to(stats.latency.upper_ms);
    h->at("counts").get_to(stats.latency.counts);
    stats.latency_sum_us = h->at("sum_us").get<int64_t>();
  } catch (const std::exception& e) {
    return Internal(std::string("unexpected latency histogram from the proxy: ") + e.what());
  }
  if (stats.latency.counts.size() != stats.latency.upper_ms.size() + 1)
    return Internal("the proxy's latency histogram has " +
                    std::to_string(stats.latency.counts.size()) + " counts for " +
                    std::to_string(stats.latency.upper_ms.size()) + " bounds");
  stats.timed_transactions = stats.latency.Total();
  return stats;
}

Result<HeldBackends> ProxyRouter::HeldBackendPids(const Endpoint& on) {
  if (on.host.empty() || on.port <= 0)
    return InvalidArgument("held backends: endpoint needs host and port");
  PGSHIFT_ASSIGN_OR_RETURN(
      auto j, Call("GET", "/routes/" + config_.route + "/backends?upstream=" + on.ToString(),
                   nullptr, config_.admin_timeout_ms));
  HeldBackends held{.server = on};
  try {
    // The proxy answers for the server it was asked about; anything else is not ours to spare.
    if (j.at("upstream").get<std::string>() != on.ToString()) {
      return Internal("the proxy listed backends on " + j.at("upstream").get<std::string>() +
                      ", not on " + on.ToString());
    }
    held.database = j.at("database").get<std::string>();
    for (const auto& p : j.at("backend_pids")) held.pids.push_back(p.get<int>());
  } catch (const std::exception& e) {
    return Internal(std::string("unexpected backends JSON from the proxy: ") + e.what());
  }
  return held;
}

bool IsProxyAdminUrl(std::string_view url) {
  return url.starts_with("http://") || url.starts_with("https://");
}

Result<std::unique_ptr<Router>> MakeProxyRouter(const nlohmann::json& cfg) {
  if (!cfg.is_object()) return InvalidArgument("proxy router config must be a JSON object");
  ProxyRouterConfig c;
  for (const auto& [k, v] : cfg.items()) {
    if (k == "type") continue;
    if (k == "admin_url" && v.is_string())
      c.admin_url = v.get<std::string>();
    else if (k == "route" && v.is_string())
      c.route = v.get<std::string>();
    else if (k == "admin_timeout_ms" && v.is_number_integer())
      c.admin_timeout_ms = v.get<int64_t>();
    else if (k == "admin_url" || k == "route" || k == "admin_timeout_ms")
      return InvalidArgument("proxy router field \"" + k + "\" has the wrong type");
    else
      return InvalidArgument("unknown field \"" + k + "\" in proxy router config");
  }
  if (cfg.contains("type") && cfg["type"] != "proxy")
    return InvalidArgument("proxy router config has type " + cfg["type"].dump());
  if (c.admin_url.empty()) return InvalidArgument("proxy router config needs \"admin_url\"");
  if (c.route.empty()) return InvalidArgument("proxy router config needs \"route\"");
  if (!IsProxyAdminUrl(c.admin_url))
    return InvalidArgument("proxy router admin_url must start with http:// or https://, got \"" +
                           c.admin_url + "\"");
  if (c.admin_timeout_ms <= 0) return InvalidArgument("proxy router admin_timeout_ms must be > 0");
  return std::unique_ptr<Router>(std::make_unique<ProxyRouter>(std::move(c)));
}

}  // namespace pgshift
