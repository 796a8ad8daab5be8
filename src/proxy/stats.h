// The counters and gauges of pgshift-proxy, declared once.
//
// Every row of PGSHIFT_PROXY_STATS is one statistic. The list generates the
// atomics that sessions bump (Route and ProxyShared members of the row's
// name), the admin API's JSON (keys = the row's name), the Prometheus text of
// /metrics (pgshift_proxy_<metric>), and the keys that the router adapter
// (router/proxy_router.cc) reads. Adding a row adds it everywhere.
//
// Row kinds (the macro argument a row calls):
//   ROUTE    per route; an atomic Route::name, exported as it is
//   LIVE     per route; an atomic Route::name, exported plus what the route's
//            spliced sessions did in the kernel and have not handed back yet
//            (Route::SpliceLive has a field of the same name)
//   DERIVED  per route; no atomic, Route::name() computes the value
//   PROXY    proxy-wide; an atomic ProxyShared::name
// Arguments: (name, type, metric, help). `type` is kCounter or kGauge;
// `metric` follows Prometheus naming (counters end in _total, gauges do not;
// checked below at compile time).
//
// Header only and free of proxy dependencies, so the router adapter can use
// the keys without linking the proxy. Constants only; thread-safe.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string_view>

// clang-format off
#define PGSHIFT_PROXY_STATS(ROUTE, LIVE, DERIVED, PROXY)                                         \
  ROUTE(sessions, kGauge, "sessions", "Client sessions on the route.")                            \
  ROUTE(held_sessions, kGauge, "held_sessions", "Sessions waiting at a boundary for a release.")  \
  ROUTE(in_transaction, kGauge, "in_transaction",                                                 \
        "Sessions inside a transaction or an upstream login (a hold waits for these).")           \
  DERIVED(route_held, kGauge, "route_held", "1 while the route is held.")                         \
  ROUTE(hold_renewals, kCounter, "hold_renewals_total", "Renewals of a hold's lease.")            \
  ROUTE(hold_lapses, kCounter, "hold_lapses_total",                                               \
        "Holds the proxy released on its own: their lease ran out without a renewal.")            \
  LIVE(transactions, kCounter, "transactions_total", "Transactions finished.")                    \
  ROUTE(errors, kCounter, "errors_total", "ErrorResponses seen or sent.")                         \
  LIVE(bytes_from_clients, kCounter, "client_bytes_total", "Bytes read from clients.")            \
  LIVE(bytes_to_clients, kCounter, "server_bytes_total", "Bytes sent to clients.")                \
  ROUTE(switched_sessions, kCounter, "session_switches_total",                                    \
        "Sessions moved to a new endpoint.")                                                      \
  ROUTE(prewarmed_switches, kCounter, "prewarmed_switches_total",                                 \
        "Session moves that took a login opened ahead by a prewarm.")                             \
  ROUTE(prewarms_pending, kGauge, "prewarms_pending",                                             \
        "Logins asked for by a prewarm that are still being opened.")                             \
  ROUTE(retiring_connections, kGauge, "retiring_connections",                                     \
        "Server connections that moved sessions left, waiting to be closed.")                     \
  ROUTE(spliced_sessions, kGauge, "spliced_sessions",                                             \
        "Sessions whose bytes the kernel forwards now (between transactions).")                   \
  ROUTE(splices, kCounter, "splices_total", "Times a session entered kernel mode.")               \
  ROUTE(replication_sessions, kGauge, "replication_sessions",                                     \
        "Logged-in replication connections (replication=database).")                              \
  ROUTE(replication_feedback_requests, kCounter, "replication_feedback_requests_total",           \
        "Keepalives asking for a reply that the proxy injected into replication streams.")        \
  ROUTE(replication_pauses, kCounter, "replication_pauses_total",                                 \
        "Replication sessions the proxy ended for a pause (the client reconnects).")              \
  PROXY(refused, kCounter, "refused_total", "Connections refused (TLS, policy, route).")          \
  PROXY(cancels_sent, kCounter, "cancels_total", "Cancel requests forwarded.")                    \
  PROXY(protocol_errors, kCounter, "protocol_errors_total", "Malformed client messages.")
// clang-format on

// Row helpers for the consumers: ignore a row, declare its atomic.
#define PGSHIFT_STAT_NONE(name, type, metric, help)
#define PGSHIFT_STAT_ATOMIC(name, type, metric, help) std::atomic<int64_t> name{0};

namespace pgshift::proxy {

enum class StatType { kCounter, kGauge };
enum class StatScope { kRoute, kProxy };

struct StatDef {
  std::string_view name;  // the member and the JSON key
  StatType type;
  StatScope scope;
  std::string_view metric;  // Prometheus name after kMetricPrefix
  std::string_view help;
};

inline constexpr std::string_view kMetricPrefix = "pgshift_proxy_";

#define PGSHIFT_STAT_DEF_ROUTE(name, type, metric, help) \
  StatDef{#name, StatType::type, StatScope::kRoute, metric, help},
#define PGSHIFT_STAT_DEF_PROXY(name, type, metric, help) \
  StatDef{#name, StatType::type, StatScope::kProxy, metric, help},
inline constexpr StatDef kStats[] = {
    PGSHIFT_PROXY_STATS(PGSHIFT_STAT_DEF_ROUTE, PGSHIFT_STAT_DEF_ROUTE, PGSHIFT_STAT_DEF_ROUTE,
                        PGSHIFT_STAT_DEF_PROXY)};
#undef PGSHIFT_STAT_DEF_ROUTE
#undef PGSHIFT_STAT_DEF_PROXY

inline constexpr size_t kStatCount = std::size(kStats);

// Stat::<name> indexes kStats and StatValues.
#define PGSHIFT_STAT_ENUM(name, type, metric, help) name,
enum class Stat : size_t {
  PGSHIFT_PROXY_STATS(PGSHIFT_STAT_ENUM, PGSHIFT_STAT_ENUM, PGSHIFT_STAT_ENUM, PGSHIFT_STAT_ENUM)
};
#undef PGSHIFT_STAT_ENUM

constexpr const StatDef& Def(Stat s) { return kStats[static_cast<size_t>(s)]; }
// The admin JSON key of `s`.
constexpr std::string_view StatKey(Stat s) { return Def(s).name; }

// One value per row; a route fills its rows, the proxy its own.
using StatValues = std::array<int64_t, kStatCount>;

namespace stats_internal {
constexpr bool EndsWithTotal(std::string_view m) {
  return m.size() > 6 && m.substr(m.size() - 6) == "_total";
}
constexpr bool FollowsPrometheusNaming() {
  for (const StatDef& d : kStats)
    if (EndsWithTotal(d.metric) != (d.type == StatType::kCounter)) return false;
  return true;
}
}  // namespace stats_internal
static_assert(stats_internal::FollowsPrometheusNaming(),
              "counters end in _total and gauges do not (Prometheus naming)");

}  // namespace pgshift::proxy
