// pgshift-proxy configuration: the JSON file that names listeners, TLS
// material, routes, the identity policy and upstream credentials.
//
// Parsing is strict: an unknown key anywhere is an error naming the key and
// where it was found. Relative file paths are resolved against the config
// file's directory; ToJson writes them back as they were given. Plain values;
// thread-compatible.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"

namespace pgshift::proxy {

struct UpstreamConfig {
  std::string host;
  int port = 5432;
  bool tls = false;  // SSLRequest to the server; without `ca` the server is not verified
  std::string ca;    // optional CA file to verify the upstream's certificate
  bool operator==(const UpstreamConfig&) const = default;
};

// A hold that has not drained after this long is released and fails (the
// route's "hold_timeout_ms"; an admin hold without "timeout_ms" uses the
// route's value).
inline constexpr int64_t kDefaultHoldTimeoutMs = 5000;
// A drained hold lasts this long unless its holder renews it (POST
// /routes/{r}/renew); past it the proxy releases the hold on its own (Route
// explains why that is safe). An admin hold's "lease_ms" overrides it, up to
// kMaxHoldLeaseMs. Long enough that a controller on a loaded machine renews in
// time (it renews every third of the lease), short enough that clients of a
// controller that died inside the hold wait seconds, not until it is back.
inline constexpr int64_t kDefaultHoldLeaseMs = 10000;
inline constexpr int64_t kMaxHoldLeaseMs = 600000;
// Upper bound of an admin call's "wait_ms" (prewarm, replication pause).
inline constexpr int64_t kMaxAdminWaitMs = 60000;
// How long a replication pause waits, by default, for the paused sessions to
// close their server connections (a message in flight finishes first).
inline constexpr int64_t kDefaultReplicationPauseWaitMs = 5000;

// What a switch does with a session holding state that cannot move to another
// server (temporary tables, WITH HOLD cursors; session_carry.h):
//   kEnd   it is ended at its move with a FATAL naming what it holds;
//   kWait  a hold lets it run on on its server (the others wait) until it
//          drops that state or disconnects, up to the hold's deadline; past
//          it, it gets the same FATAL. The hold drains only then, so the
//          pause of every session of the route grows by the wait.
// kEnd is the default: the cost of state that cannot move then falls on the
// one session holding it (a FATAL 57P01 it can reconnect on), not on every
// client of the route, and a session that never drops its temporary tables
// would stretch each cutover's pause to the hold's full bound and still be
// ended. kWait suits routes whose sessions keep such state briefly (batch or
// reporting jobs), where ending them loses work.
enum class UncarriableMode { kEnd, kWait };
const char* UncarriableModeName(UncarriableMode m);
// "end" / "wait"; `where` names the field in errors.
Result<UncarriableMode> ParseUncarriableMode(const nlohmann::json& v, const std::string& where);

struct RouteConfig {
  std::string name;
  std::string database;  // the client's requested database selects the route
  UpstreamConfig upstream;
  bool allow_plaintext = false;  // accept clients without TLS (no identity, no policy)
  int64_t hold_timeout_ms = kDefaultHoldTimeoutMs;
  UncarriableMode uncarriable = UncarriableMode::kEnd;
};

struct PolicyRule {
  std::string identity;                // certificate CN or SAN entry; "*" matches any verified cert
  std::vector<std::string> databases;  // "*" matches any
  std::vector<std::string> roles;      // "*" matches any
};

struct Credential {
  std::string role;
  std::string password;  // empty: the proxy expects trust for this role
};

struct TlsConfig {
  std::string cert, key, client_ca;                 // as given in the file
  std::string cert_path, key_path, client_ca_path;  // resolved
};

// ProxyConfig::busy_poll_us is off by default: on the 2-core benchmark VM,
// shared with pgbench and PostgreSQL, 200 us did not raise 8-client
// pgbench -S tps (median ratio to direct 0.62 vs 0.63 off; 2000 us no better)
// and cost 10-50% more proxy CPU per transaction. It does halve the latency a
// lone client sees (p50 83 us vs 166 us), so it is there for deployments
// where the proxy has a core to spare.
inline constexpr int kDefaultBusyPollUs = 0;
inline constexpr int kMaxBusyPollUs = 10000;

// A moved session's previous server connection closes retire_delay_ms later,
// retire_interval_ms after the previous one (see RetireSchedule in shared.h);
// with retire_delay_ms 0 each closes at once.
inline constexpr int kDefaultRetireDelayMs = 1000;
inline constexpr int kMaxRetireDelayMs = 600000;
// Measured on the 2-core benchmark VM at 1000 tps: 8 backends ending 10 ms
// apart on a co-located old server raised the worst latency on the new one
// to 130-180 ms (40 ms without them); 100 ms apart left it at 42-50 ms.
inline constexpr int kDefaultRetireIntervalMs = 100;
inline constexpr int kMaxRetireIntervalMs = 10000;

// Kernel TLS for mTLS sessions: with "auto" the proxy asks OpenSSL to hand
// each session's record layer to the kernel after the handshake, where the
// kernel has it (CONFIG_TLS, probed at start-up); "off" keeps it in user space.
enum class KtlsMode { kAuto, kOff };

// The upstream pool (upstream_pool.h): backends whose client ended cleanly
// between transactions are reset with DISCARD ALL and kept for the next
// client with the same route, user, database and startup parameters, as
// PgBouncer keeps its server connections. On by default: a data access
// layer's clients expect to connect at the cost of their own TLS handshake,
// not of a new PostgreSQL backend (fork, login, cold caches: on the
// benchmark VM the backend is most of a new connection's cost). The caps
// stay well below PostgreSQL's default max_connections (100) so parked
// backends never crowd out live clients; per key, enough for a few dozen
// clients that reconnect at once. An idle backend closes after a minute, as
// a client pool's idle timeout would, so a quiet route gives its server
// slots back. max_idle 0 turns the pool off.
inline constexpr int kDefaultPoolMaxIdle = 32;
inline constexpr int kDefaultPoolMaxIdlePerKey = 16;
inline constexpr int kDefaultPoolIdleTimeoutMs = 60000;
inline constexpr int kMaxPoolIdle = 10000;
inline constexpr int kMaxPoolIdleTimeoutMs = 86400000;

struct UpstreamPoolConfig {
  int max_idle = kDefaultPoolMaxIdle;  // parked backends in all; 0 = off
  int max_idle_per_key = kDefaultPoolMaxIdlePerKey;
  int idle_timeout_ms = kDefaultPoolIdleTimeoutMs;
  bool enabled() const { return max_idle > 0 && max_idle_per_key > 0; }
};

struct ProxyConfig {
  std::string listen_host = "127.0.0.1";
  int listen_port = 6432;
  std::string admin_host = "127.0.0.1";
  int admin_port = 6433;
  int threads = 2;
  // Adaptive busy polling: after its last handler ran, an event-loop thread
  // keeps polling (yielding the CPU to other runnable tasks between polls) for
  // up to this many microseconds before it sleeps in epoll. 0 = off.
  int busy_poll_us = kDefaultBusyPollUs;
  // Kernel splice (splice/): plain-text sessions between transactions leave
  // their bytes to a BPF sockmap while nothing the proxy must see goes by.
  // Needs root (CAP_BPF, CAP_NET_ADMIN) and TCP on both sides; where it cannot
  // load, the proxy says so once and forwards in user space.
  bool kernel_splice = true;
  // How long a session's previous server connection stays open (idle, outside
  // any transaction) after the session moved; 0 closes it at once.
  int retire_delay_ms = kDefaultRetireDelayMs;
  // Between one such close and the next: a switch replaces every connection
  // at once, and each backend's exit costs the old server's host CPU.
  int retire_interval_ms = kDefaultRetireIntervalMs;
  KtlsMode ktls = KtlsMode::kAuto;
  UpstreamPoolConfig upstream_pool;
  bool has_tls = false;
  TlsConfig tls;
  std::vector<RouteConfig> routes;
  std::vector<PolicyRule> policy;
  std::vector<Credential> credentials;
  std::string path;  // the file it came from ("" when built in memory)

  const Credential* FindCredential(const std::string& role) const;
};

// base_dir resolves relative TLS paths ("" = as given).
Result<ProxyConfig> ParseProxyConfig(const nlohmann::json& j, const std::string& base_dir = "");
Result<ProxyConfig> LoadProxyConfig(const std::string& path);
nlohmann::json ToJson(const ProxyConfig& c);
nlohmann::json ToJson(const UpstreamConfig& u);
// Parses {"host":..,"port":..,"tls":..,"ca":..}; `where` prefixes error messages.
Result<UpstreamConfig> ParseUpstream(const nlohmann::json& j, const std::string& where);
// Writes ToJson(c) to c.path atomically.
Status SaveProxyConfig(const ProxyConfig& c);

// "host:port" → parts; errors name `what`.
Status ParseHostPort(const std::string& s, const std::string& what, std::string* host, int* port);

}  // namespace pgshift::proxy
