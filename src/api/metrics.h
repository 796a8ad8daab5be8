// pgshiftd's Prometheus exposition (GET /metrics, text format 0.0.4), built
// from the migrations' JSON as the API shows them (with "database"):
//
//   pgshift_migrations{phase,state}                      gauge: migrations in each
//   pgshift_migrations_created_total                     counter
//   pgshift_migration_info{migration,name,database,phase,state}  gauge 1
//   pgshift_replication_lag_bytes{migration,database}    gauge (progress.lag_bytes)
//   pgshift_replication_lag_seconds{migration,database}  gauge (progress.lag_seconds)
//   pgshift_source_wal_bytes_per_second{...}             gauge (progress.source_wal_bps)
//   pgshift_replay_bytes_per_second{...}                 gauge (progress.replay_bps)
//   pgshift_basebackup_progress_ratio{...}               gauge 0..1
//   pgshift_phase_duration_seconds{migration,database,phase}  gauge: from
//       result.phase_started_ms; the current phase counts up to `now_ms`
//   pgshift_cutover_hold_seconds{migration,database}     gauge (result.hold_ms)
//   pgshift_cutover_attempts_total{migration,database}   counter
//   pgshift_rollbacks_total                              counter: migrations that rolled back
//   pgshift_findings{migration,database,severity}        gauge: standing findings
//
// Slot retained bytes are not exposed: the engine does not report them
// apart from lag_bytes. Pure function; thread-safe.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace pgshift::api {

inline constexpr const char* kPrometheusContentType = "text/plain; version=0.0.4";

std::string RenderMetrics(const nlohmann::json& migrations, int64_t now_ms);

// A label value escaped for the text format (backslash, quote, newline).
std::string EscapeLabel(const std::string& v);

}  // namespace pgshift::api
