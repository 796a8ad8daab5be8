// ProxyRouter: the Router for pgshift-proxy, driving one route through the
// proxy's admin HTTP API:
//   Hold(t)    → POST /routes/{route}/hold {"timeout_ms": t}  (200, or 504 after release)
//   HoldLeased(t, l) → POST /routes/{route}/hold {"timeout_ms": t, "lease_ms": l}
//                (the answer's "hold_epoch" names the hold)
//   RenewHold(n) → POST /routes/{route}/renew {"epoch": n}  (409 once hold n is gone)
//   Release    → POST /routes/{route}/release
//   SwitchHeld(e, n) → POST /routes/{route}/switch {"upstream": {...}, "epoch": n}
//   Repoint(e) → PUT  /routes/{route} {"upstream": {"host","port"}}
//   Current, View → GET  /routes/{route}
//   Stats      → GET  /routes/{route}/stats
//   Prewarm(e) → POST /routes/{route}/prewarm {"upstream": {"host","port"}}
//   SwitchTo(e) → POST /routes/{route}/switch {"upstream": {"host","port"}}
//   HeldBackendPids(e) → GET /routes/{route}/backends?upstream=host:port (409 unless the
//                hold has drained; it also makes the release move every session)
//   ReplicationSessions(e) → GET /routes/{route}/replication?upstream=host:port
//   RequestReplicationFeedback → POST /routes/{route}/replication/feedback
//   PauseReplication → POST /routes/{route}/replication/pause {"wait_ms": ...}
//   LastSwitch → GET  /routes/{route} ("last_switch")
// The proxy is the source of truth; nothing is cached here. Each call opens
// its own HTTP client and reads only the immutable config, so calls may run
// on several threads at once (RenewHold does, beside the cutover's calls) and
// no connection outlives a pgshiftd restart.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "router/router.h"

namespace pgshift {

struct ProxyRouterConfig {
  std::string admin_url;  // http://127.0.0.1:6433
  std::string route;
  // Bound for admin calls other than Hold (Hold waits timeout_ms plus this).
  int64_t admin_timeout_ms = 10000;
};

class ProxyRouter : public Router {
 public:
  explicit ProxyRouter(ProxyRouterConfig config) : config_(std::move(config)) {}

  std::string Kind() const override { return "proxy"; }
  Status Hold(int64_t timeout_ms) override;
  Result<HoldLease> HoldLeased(int64_t timeout_ms, int64_t lease_ms) override;
  Status RenewHold(const HoldLease& hold) override;
  Status Release() override;
  Status Repoint(const Endpoint& to) override;
  Result<Endpoint> Current() override;
  Result<RouteView> View() override;
  Result<RouteStats> Stats() override;
  Result<HeldBackends> HeldBackendPids(const Endpoint& on) override;
  Status Prewarm(const Endpoint& to) override;
  Status SwitchTo(const Endpoint& to) override;
  Status SwitchHeld(const Endpoint& to, const HoldLease& hold) override;
  Result<std::vector<ReplicationSession>> ReplicationSessions(const Endpoint& on) override;
  Result<int> RequestReplicationFeedback() override;
  // Timeout when a paused session had not closed its server side within
  // half of admin_timeout_ms.
  Result<int> PauseReplication() override;
  Result<std::optional<SwitchReport>> LastSwitch() override;

 private:
  // POST /switch, under hold `epoch` unless 0.
  Status Switch(const Endpoint& to, uint64_t epoch);
  // How long the proxy may wait inside a call (prewarm, pause): half the call's bound.
  int64_t WaitMs() const;
  Result<nlohmann::json> Call(const std::string& method, const std::string& path,
                              const nlohmann::json& body, int64_t timeout_ms);
  ProxyRouterConfig config_;
};

// {"type":"proxy","admin_url":"http://127.0.0.1:6433","route":"app"}
// (optional "admin_timeout_ms"); unknown or missing fields are InvalidArgument naming them.
Result<std::unique_ptr<Router>> MakeProxyRouter(const nlohmann::json& cfg);

// An admin URL the proxy router accepts: http:// or https://. The registry and
// the CLI refuse any other at once rather than at the migration's hold.
bool IsProxyAdminUrl(std::string_view url);

}  // namespace pgshift
