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

#include "common/latency.h"

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
  ROUTE(failed_transactions, kCounter, "failed_transactions_total",                               \
        "Transactions (or statements outside one) that saw an ErrorResponse.")                    \
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
  ROUTE(server_ended_sessions, kCounter, "server_ended_sessions_total",                           \
        "Sessions the server ended outside a move that carries them (the client got its error).") \
  ROUTE(carried_prepared_statements, kCounter, "carried_prepared_statements_total",               \
        "SQL-level prepared statements re-created on a new server by a move.")                    \
  ROUTE(carried_listen_channels, kCounter, "carried_listen_channels_total",                       \
        "LISTEN registrations re-created on a new server by a move.")                             \
  ROUTE(carried_advisory_locks, kCounter, "carried_advisory_locks_total",                         \
        "Session advisory locks taken again on a new server by a move.")                          \
  ROUTE(ended_temporary_tables, kCounter, "ended_temporary_tables_total",                         \
        "Sessions ended at a move because they held temporary tables.")                           \
  ROUTE(ended_holdable_cursors, kCounter, "ended_holdable_cursors_total",                         \
        "Sessions ended at a move because they held WITH HOLD cursors.")                          \
  ROUTE(uncarriable_sessions, kGauge, "uncarriable_sessions",                                     \
        "Sessions holding (or that may hold: not probed yet) temporary tables or WITH HOLD "      \
        "cursors.")                                                                               \
  ROUTE(uncarriable_waited, kCounter, "uncarriable_waited_total",                                 \
        "Sessions a hold waited for (uncarriable: wait) that dropped what could not move, or "    \
        "disconnected, in time.")                                                                 \
  ROUTE(ended_move_failed, kCounter, "ended_move_failed_total",                                   \
        "Sessions ended at a move because the new server refused their login or settings.")       \
  ROUTE(ended_carry_failed, kCounter, "ended_carry_failed_total",                                 \
        "Sessions ended at a move because their state could not be read or re-created.")          \
  PROXY(refused, kCounter, "refused_total", "Connections refused (TLS, policy, route).")          \
  PROXY(cancels_sent, kCounter, "cancels_total", "Cancel requests forwarded.")                    \
  PROXY(tls_handshakes, kCounter, "tls_handshakes_total", "Client TLS handshakes completed.")     \
  PROXY(tls_resumed, kCounter, "tls_resumed_total",                                               \
        "Client TLS handshakes that resumed a session (ticket), skipping the certificates.")      \
  PROXY(ktls_sessions, kCounter, "ktls_sessions_total",                                           \
        "Client TLS sessions whose record layer the kernel took over (kTLS send or receive).")   \
  PROXY(protocol_errors, kCounter, "protocol_errors_total", "Malformed client messages.")      \
  PROXY(bad_startup_packets, kCounter, "bad_startup_packets_total",                               \
        "Malformed startup packets (logged and closed without a reply, as PostgreSQL does).")   \
  PROXY(pool_hits, kCounter, "upstream_pool_hits_total",                                          \
        "Client logins that took a parked upstream backend instead of logging in.")               \
  PROXY(pool_misses, kCounter, "upstream_pool_misses_total",                                      \
        "Client logins that found no parked backend for their key and logged in upstream.")       \
  PROXY(pool_parked, kCounter, "upstream_pool_parked_total",                                      \
        "Backends reset with DISCARD ALL and parked after their client ended cleanly.")           \
  PROXY(pool_idle, kGauge, "upstream_pool_idle", "Backends parked in the upstream pool now.")     \
  PROXY(pool_dropped_unclean, kCounter, "upstream_pool_dropped_unclean_total",                    \
        "Backends closed because their session did not end cleanly between transactions.")       \
  PROXY(pool_dropped_route, kCounter, "upstream_pool_dropped_route_total",                        \
        "Backends closed or not parked because their route was held or switched.")                \
  PROXY(pool_dropped_reset_failed, kCounter, "upstream_pool_dropped_reset_failed_total",          \
        "Backends closed because DISCARD ALL failed on them.")                                    \
  PROXY(pool_dropped_full, kCounter, "upstream_pool_dropped_full_total",                          \
        "Backends closed because the pool was at its cap (in all or for their key).")             \
  PROXY(pool_dropped_dead, kCounter, "upstream_pool_dropped_dead_total",                          \
        "Parked backends found closed (or sending) when a client came for them.")                 \
  PROXY(pool_dropped_idle_timeout, kCounter, "upstream_pool_dropped_idle_timeout_total",          \
        "Parked backends closed after the pool's idle timeout.")
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

// The per-route transaction latency histogram: not a row (it is many
// values), exported beside the rows as the route stats' "txn_latency"
// ({"upper_ms":[...],"counts":[...],"sum_us":N}, the layout of
// common/latency.h) and in /metrics as the Prometheus histogram
// pgshift_proxy_<metric>. A transaction runs from its first client message
// reaching the proxy (a wait in a hold included) to the ReadyForQuery 'I'
// that ends it. The kernel splice (plain text, between transactions;
// session_splice.cc) times the transactions it carries in the same buckets,
// from the first client frame it redirects to the ReadyForQuery 'I' it
// redirects; the stats add what spliced sessions timed so far
// (Route::LiveTotals). A transaction it cannot time (pipelined
// behind another) is counted in `transactions` only; the histogram's total
// against `transactions` says how much of the traffic it covers.
struct HistogramDef {
  std::string_view name;
  std::string_view metric;
  std::string_view help;
};
inline constexpr HistogramDef kTxnLatency{"txn_latency", "transaction_duration_seconds",
                                          "Transaction latency through the proxy (user space)."};

// Lock-free bucket counts in the layout of common/latency.h, bumped by
// sessions on any thread and read by the admin API.
class LatencyCounter {
 public:
  void Record(int64_t us) {
    counts_[LatencyBucketOf(us)].fetch_add(1, std::memory_order_relaxed);
    sum_us_.fetch_add(us, std::memory_order_relaxed);
  }
  // Transactions timed elsewhere (the kernel splice), by bucket and in all.
  template <typename Counts>
  void Add(const Counts& counts, int64_t sum_us) {
    static_assert(std::tuple_size_v<Counts> == kLatencyBuckets);
    for (size_t i = 0; i < kLatencyBuckets; i++)
      if (counts[i] != 0)
        counts_[i].fetch_add(static_cast<int64_t>(counts[i]), std::memory_order_relaxed);
    sum_us_.fetch_add(sum_us, std::memory_order_relaxed);
  }
  std::array<int64_t, kLatencyBuckets> Counts() const {
    std::array<int64_t, kLatencyBuckets> c{};
    for (size_t i = 0; i < kLatencyBuckets; i++) c[i] = counts_[i].load(std::memory_order_relaxed);
    return c;
  }
  int64_t SumUs() const { return sum_us_.load(std::memory_order_relaxed); }

 private:
  std::array<std::atomic<int64_t>, kLatencyBuckets> counts_{};
  std::atomic<int64_t> sum_us_{0};
};

}  // namespace pgshift::proxy
