// The migration model: the validated spec a migration is created from, and
// (through the headers included here) its phases, states and progress record.
// Plain value types; thread-compatible.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "common/status.h"
#include "model/phase.h"
#include "model/progress.h"
#include "model/state.h"

namespace pgshift {

struct TargetSpec {
  std::string provider = "local";
  std::string data_dir;  // absolute path; must not exist yet (or hold this migration's replica)
  int port = 0;
  std::string bin_dir;  // PostgreSQL installation for the target; "" = default
  std::string os_user = "postgres";
  std::map<std::string, std::string> settings;  // postgresql.conf overrides on the target
};

// What an anomaly in the post-cutover health window does.
enum class OnAnomaly {
  kRollback,  // route back to the source at once (the operator's rollback path)
  kAlert,     // record it and keep going; an operator decides
};
const char* OnAnomalyName(OnAnomaly a);

// The health window's tolerances, against the pre-migration baseline.
// An error rate this much above the baseline's (absolute, 0.05 = 5 points).
inline constexpr double kDefaultHealthMaxErrorRate = 0.05;
// A p99 latency (PgBouncer: the average) this many times the baseline's.
inline constexpr double kDefaultHealthMaxP99Ratio = 3.0;
// Transactions a stretch of the window needs before it is judged (fewer say
// nothing reliable about a rate or a p99).
inline constexpr int kDefaultHealthMinSamples = 50;

// Bounds of options.hold_lease_ms: renewals every third of it must be
// possible over a loaded loopback, and pgshift-proxy accepts at most 10 min.
inline constexpr int64_t kMinHoldLeaseMs = 300;
inline constexpr int64_t kMaxHoldLeaseMs = 600000;

struct MigrationOptions {
  int64_t lag_threshold_bytes = 16 * 1024 * 1024;
  double lag_threshold_seconds = 10;
  int64_t sustain_ms = 10000;  // lag under threshold this long before `validate`
  bool auto_cutover = false;   // otherwise wait at `ready` for `cutover`
  bool auto_finalize = false;  // otherwise wait after `verify` for `finalize`
  // The post-cutover health window (verify): how long, what an anomaly does,
  // and the tolerances against the baseline (the constants above).
  int64_t verify_ms = 5000;
  OnAnomaly on_anomaly = OnAnomaly::kRollback;
  double health_max_error_rate = kDefaultHealthMaxErrorRate;
  double health_max_p99_ratio = kDefaultHealthMaxP99Ratio;
  int health_min_samples = kDefaultHealthMinSamples;
  // quiesce: the longest an open transaction may keep the hold from closing.
  int64_t hold_timeout_ms = 10000;
  // For a router whose hold has a lease (pgshift-proxy): how long the router
  // keeps traffic held without hearing from pgshiftd, which renews it every
  // third of it. Past it (pgshiftd died inside the hold) the router releases
  // traffic on its own, and pgshiftd, back, aborts or rolls back the cutover.
  int64_t hold_lease_ms = 10000;
  // drain: the longest the target may take to replay the final LSN.
  int64_t drain_timeout_ms = 60000;
  int64_t poll_ms = 250;  // between steps that wait (lag, drain, verify, an operator)
  // auto_cutover: cutovers tried (each aborted one released traffic to the
  // source) before waiting for an operator's `cutover`.
  int max_auto_cutover_attempts = 3;
  // Consecutive failed attempts of one step (each after a back-off) before
  // the migration stops as failed, for an operator's retry or rollback.
  int max_step_attempts = 8;
  bool parity = true;  // compare source and target after promotion, before finalize
  // > 0: also compare the frozen source with the caught-up standby before
  // promotion, inside the hold, within this budget (small databases). A
  // difference aborts the cutover while the source is still authoritative.
  int64_t parity_before_promote_ms = 0;
  // Share of wall time (1-100) the post-promotion parity scan may work on
  // each side; it pauses between page ranges so the live target keeps its
  // headroom for production traffic.
  int parity_load_pct = 25;
  // > 0: the base backup reads the source at most this many kB/s
  // (pg_basebackup --max-rate), sparing the source's production traffic.
  int64_t basebackup_max_rate_kbps = 0;
  // Inside the hold, how long each logical slot's consumer may take to
  // confirm the final LSN before the cutover is aborted (DESIGN §2 drain).
  int64_t cdc_drain_timeout_ms = 10000;
  // At promotion, before traffic is released, the fenced source subscribes
  // to the target's writes where the schema allows (DESIGN.md §2), so a
  // rollback after the switch loses nothing. Off: such a rollback discards
  // the target's writes (confirmed by the operator).
  bool reverse_replication = true;
  // A rollback after the switch, traffic held: the longest the source may
  // take to apply what the target committed before the hold.
  int64_t rollback_apply_timeout_ms = 10000;
};

// The libpq keywords source.replication_conninfo may set.
inline constexpr const char* kReplicationConninfoKeys[] = {"host",
                                                           "hostaddr",
                                                           "port",
                                                           "connect_timeout",
                                                           "sslmode",
                                                           "sslrootcert",
                                                           "sslcert",
                                                           "sslkey",
                                                           "sslcrl",
                                                           "keepalives",
                                                           "keepalives_idle",
                                                           "keepalives_interval",
                                                           "keepalives_count",
                                                           "tcp_user_timeout"};

struct MigrationSpec {
  std::string name;
  std::string source_conninfo;  // superuser (or replication + fence rights) on the source
  // How the target reaches the source for replication (the base backup and
  // the standby's stream) when that is not how pgshiftd reaches it: behind
  // NAT, a TCP proxy, another network. Address and transport keywords only
  // (kReplicationConninfoKeys), put over source_conninfo; the login stays
  // source_conninfo's. "" = source_conninfo as it is.
  std::string replication_conninfo;
  TargetSpec target;
  nlohmann::json router = {{"type", "none"}};
  MigrationOptions options;

  // Strict: unknown fields, wrong types and bad values are InvalidArgument
  // naming the field. Defaults are filled in.
  static Result<MigrationSpec> FromJson(const nlohmann::json& j);
  nlohmann::json ToJson() const;
  // The conninfo the target replicates from: source_conninfo with
  // replication_conninfo's keys put over it.
  Result<std::string> ReplicationConninfo() const;
};

// The physical slot pgshift creates on the source for a migration.
std::string SlotNameFor(const std::string& migration_id);

// "id(subject): message; ..." for every blocking finding (JSON, as stored)
// that is not overridden; "" when none stands.
std::string BlockingSummary(const nlohmann::json& findings);
// True when `finding` is blocking and an override request
// {"finding":id,"subject":s} names it (no subject: any subject).
bool OverrideNames(const nlohmann::json& request, const nlohmann::json& finding);

}  // namespace pgshift
