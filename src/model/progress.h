// The typed record of a migration's progress: everything the runner measures,
// decides on and reports. It is stored, and served by the API, as two JSON
// objects of a migration, "progress" (MigrationProgress: live measurements)
// and "result" (MigrationResult: what each phase recorded), with the keys
// each record's Fields() names. The CLI, the demo, the benches and the
// end-to-end tests read those keys: renaming one breaks them.
//
// A member that is not set (std::nullopt) writes no key, as before the phase
// that sets it ran. Keys a record does not know (a migration stored by
// another pgshiftd version) are kept in `unknown` and written back.
// Plain value types; thread-compatible.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/lsn.h"
#include "common/status.h"
#include "model/cdc.h"
#include "model/phase.h"
#include "model/traffic.h"

namespace pgshift {

// The post-promotion data parity check, while it runs and once done.
struct ParityProgress {
  int tables_total = 0;
  int tables_done = 0;
  std::optional<std::string> current;  // the table being compared; absent once done
  nlohmann::json unknown = nlohmann::json::object();

  template <typename Self, typename Visit>
  static void Fields(Self& s, Visit& v) {
    v("tables_total", s.tables_total);
    v("tables_done", s.tables_done);
    v("current", s.current);
  }
};

// One instance of a route served by several pgshift-proxy instances
// (router/multi_router.h), as pgshiftd last saw it after the switch.
struct RouteInstanceStatus {
  std::string name;  // the instance's admin_url
  bool reachable = false;
  std::optional<std::string> upstream;  // host:port, when reachable
  std::optional<bool> held;             // when reachable
  std::optional<std::string> error;     // why not reachable
  nlohmann::json unknown = nlohmann::json::object();

  bool operator==(const RouteInstanceStatus&) const = default;

  template <typename Self, typename Visit>
  static void Fields(Self& s, Visit& v) {
    v("name", s.name);
    v("reachable", s.reachable);
    v("upstream", s.upstream);
    v("held", s.held);
    v("error", s.error);
  }
};

// "progress": what the runner measures while the target is built and streams.
struct MigrationProgress {
  std::optional<int> basebackup_pct;  // provision
  // The last replication lag sample (sync, ready) and the rates between the
  // last two samples.
  std::optional<int64_t> sample_at_ms;
  std::optional<Lsn> source_lsn;
  std::optional<Lsn> replay_lsn;  // also drain's last look at the target
  std::optional<uint64_t> lag_bytes;
  std::optional<double> lag_seconds;
  std::optional<double> source_wal_bps;
  std::optional<double> replay_bps;
  std::optional<double> peak_source_wal_bps;
  std::optional<double> peak_replay_bps;
  // The lag gate: under the thresholds since in_sync_since_ms (0 when not),
  // for in_sync_ms, of the sustain_ms the gate needs.
  std::optional<int64_t> in_sync_since_ms;
  std::optional<int64_t> in_sync_ms;
  std::optional<int64_t> sustain_ms;
  std::optional<ParityProgress> parity;  // verify
  // sync, validate: the route's traffic through the router before the
  // cutover, what verify compares the post-cutover traffic with.
  std::optional<TrafficSample> baseline;
  // After the switch, a route of several instances: each one's view, as the
  // last reconcile saw it (at route_seen_ms).
  std::optional<std::vector<RouteInstanceStatus>> route_instances;
  std::optional<int64_t> route_seen_ms;
  nlohmann::json unknown = nlohmann::json::object();

  // Wrong types of known keys are InvalidArgument naming the key.
  static Result<MigrationProgress> FromJson(const nlohmann::json& j);
  nlohmann::json ToJson() const;

  template <typename Self, typename Visit>
  static void Fields(Self& s, Visit& v) {
    v("basebackup_pct", s.basebackup_pct);
    v("sample_at_ms", s.sample_at_ms);
    v("source_lsn", s.source_lsn);
    v("replay_lsn", s.replay_lsn);
    v("lag_bytes", s.lag_bytes);
    v("lag_seconds", s.lag_seconds);
    v("source_wal_bps", s.source_wal_bps);
    v("replay_bps", s.replay_bps);
    v("peak_source_wal_bps", s.peak_source_wal_bps);
    v("peak_replay_bps", s.peak_replay_bps);
    v("in_sync_since_ms", s.in_sync_since_ms);
    v("in_sync_ms", s.in_sync_ms);
    v("sustain_ms", s.sustain_ms);
    v("parity", s.parity);
    v("baseline", s.baseline);
    v("route_instances", s.route_instances);
    v("route_seen_ms", s.route_seen_ms);
  }
};

// "result": what each phase recorded, in phase order. Times are epoch ms.
struct MigrationResult {
  std::map<std::string, int64_t> phase_started_ms;  // phase name → when it was entered
  std::optional<std::string> slot;                  // provision: the physical slot
  std::optional<int> cutover_attempts;              // ready: cutovers started
  // preflight plans them, cdc_prepare records, drain, cdc_recreate and verify advance them.
  std::optional<std::vector<CdcSlot>> cdc_slots;
  // PrepareAhead: the cutover's standby sessions, then the router's logins.
  std::optional<int64_t> prepare_ms;
  std::optional<int64_t> prewarm_ms;
  // quiesce (cleared when a cutover is aborted before the switch)
  std::optional<int64_t> hold_started_ms;
  // The router's hold (its epoch, HoldLease) when it has a lease: pgshiftd
  // renews it while in the hold and, restarted, finds out whether it still is.
  std::optional<uint64_t> hold_epoch;
  // A route of several instances: each one's hold (HoldLease::instance_epochs).
  std::optional<std::vector<uint64_t>> hold_instance_epochs;
  std::optional<int64_t> fence_ms;
  std::optional<int> fence_terminated;  // client sessions the fence ended
  std::optional<int> fence_exempted;    // idle sessions the router holds, left alive
  std::optional<Lsn> final_lsn;         // the source's last WAL record
  std::optional<int64_t> fenced_at_ms;
  std::optional<int64_t> drain_started_ms;  // drain
  std::optional<int> timeline;              // promote: the target's new timeline
  std::optional<int64_t> promoted_at_ms;
  // snapshot / verify: the post-promotion data parity check.
  std::optional<bool> parity_started;
  std::optional<bool> parity_done;
  std::optional<bool> parity_blocked;     // it found differences nobody has overridden yet
  std::optional<int64_t> switched_at_ms;  // switch
  std::optional<int64_t> hold_ms;         // how long traffic was held
  // Instances of the route pgshiftd repointed after the switch or a
  // rollback's (down then, or restarted with an old route): Router::Reconcile.
  std::optional<int> route_repoints;
  // verify: the post-cutover health window.
  std::optional<int64_t> verify_started_ms;
  std::optional<int> verify_probes;
  std::optional<bool> verified;
  std::optional<std::string> verify_failure;  // why verify routed traffic back
  // verify, finalize: the post-cutover traffic against the baseline.
  std::optional<HealthReport> health;
  // cdc_prepare decides, cdc_recreate sets up: the source subscribes to the
  // target's writes (reverse replication), or why it does not.
  std::optional<bool> reverse_replication_on;
  std::optional<std::string> reverse_replication_off;
  std::optional<Phase> rollback_from;  // the phase a rollback started in
  // rolling_back: source_untouched (before the switch), reverse_replication
  // (the target's writes applied to the source first) or
  // discard_target_writes; and the hold of a rollback after the switch.
  std::optional<std::string> rollback_path;
  std::optional<int64_t> rollback_hold_started_ms;
  std::optional<Lsn> rollback_target_lsn;   // the target's position once traffic was held
  std::optional<Lsn> rollback_applied_lsn;  // what the source had applied of it
  std::optional<int> rollback_sequences_synced;
  std::optional<int64_t> rollback_hold_ms;
  std::optional<int64_t> finalized_at_ms;
  std::optional<int64_t> rolled_back_at_ms;
  nlohmann::json unknown = nlohmann::json::object();

  // Wrong types of known keys are InvalidArgument naming the key.
  static Result<MigrationResult> FromJson(const nlohmann::json& j);
  nlohmann::json ToJson() const;

  template <typename Self, typename Visit>
  static void Fields(Self& s, Visit& v) {
    v("phase_started_ms", s.phase_started_ms);
    v("slot", s.slot);
    v("cutover_attempts", s.cutover_attempts);
    v("cdc_slots", s.cdc_slots);
    v("prepare_ms", s.prepare_ms);
    v("prewarm_ms", s.prewarm_ms);
    v("hold_started_ms", s.hold_started_ms);
    v("hold_epoch", s.hold_epoch);
    v("hold_instance_epochs", s.hold_instance_epochs);
    v("fence_ms", s.fence_ms);
    v("fence_terminated", s.fence_terminated);
    v("fence_exempted", s.fence_exempted);
    v("final_lsn", s.final_lsn);
    v("fenced_at_ms", s.fenced_at_ms);
    v("drain_started_ms", s.drain_started_ms);
    v("timeline", s.timeline);
    v("promoted_at_ms", s.promoted_at_ms);
    v("parity_started", s.parity_started);
    v("parity_done", s.parity_done);
    v("parity_blocked", s.parity_blocked);
    v("switched_at_ms", s.switched_at_ms);
    v("hold_ms", s.hold_ms);
    v("route_repoints", s.route_repoints);
    v("verify_started_ms", s.verify_started_ms);
    v("verify_probes", s.verify_probes);
    v("verified", s.verified);
    v("verify_failure", s.verify_failure);
    v("health", s.health);
    v("reverse_replication_on", s.reverse_replication_on);
    v("reverse_replication_off", s.reverse_replication_off);
    v("rollback_from", s.rollback_from);
    v("rollback_path", s.rollback_path);
    v("rollback_hold_started_ms", s.rollback_hold_started_ms);
    v("rollback_target_lsn", s.rollback_target_lsn);
    v("rollback_applied_lsn", s.rollback_applied_lsn);
    v("rollback_sequences_synced", s.rollback_sequences_synced);
    v("rollback_hold_ms", s.rollback_hold_ms);
    v("finalized_at_ms", s.finalized_at_ms);
    v("rolled_back_at_ms", s.rolled_back_at_ms);
  }
};

}  // namespace pgshift
