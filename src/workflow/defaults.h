// The workflow's fixed timings: waits and retry pacing that are not
// per-migration options (those are in MigrationOptions, model/migration.h).
// Constants; thread-safe.
#pragma once

#include <cstdint>

namespace pgshift::workflow_defaults {

// A failed step waits kRetryBackoffBaseMs << n after its n-th consecutive
// failure, at most kRetryBackoffMaxMs, before it runs again (up to
// MigrationOptions::max_step_attempts).
inline constexpr int64_t kRetryBackoffBaseMs = 200;
inline constexpr int64_t kRetryBackoffMaxMs = 5000;

// drain: traffic is held, so one step looks at the target's replay every
// kDrainPollMs for up to kDrainSpinMs before it yields to the engine's
// (much longer) poll interval.
inline constexpr int64_t kDrainSpinMs = 1000;
inline constexpr int64_t kDrainPollMs = 2;

// rolling_back (reverse replication), traffic held: how often the source's
// progress in applying the target's writes is read.
inline constexpr int64_t kRollbackApplyPollMs = 5;

// Engine: a migration whose environment cannot be built (its router config,
// its provider) tries again after this long.
inline constexpr int64_t kEnvRetryMs = 1000;
// Engine: an idle worker sleeps its poll interval in slices this long, so
// Stop() does not wait a whole interval.
inline constexpr int64_t kStopCheckMs = 50;

// Engine: a migration's lease lasts this long unless renewed (renewed every
// third of it); a pgshiftd that dies leaves its migrations to another after
// at most this long, plus the survivor's next look (a third of it).
inline constexpr int64_t kLeaseTtlMs = 5000;
// The takeover inside a cutover's hold: a dead pgshiftd renewed the router's
// hold at most a third of the hold lease before it died, so the hold stands
// for at least two thirds of it; the survivor takes over within 4/3 of the
// store lease. A hold lease of 3 store leases leaves it 2/3 of a store lease
// to adopt the hold; never less than the router's own default (10 s).
inline constexpr int64_t kMinDerivedHoldLeaseMs = 10000;
inline constexpr int64_t kHoldLeasesPerStoreLease = 3;
constexpr int64_t HoldLeaseFor(int64_t store_lease_ms) {
  return store_lease_ms * kHoldLeasesPerStoreLease > kMinDerivedHoldLeaseMs
             ? store_lease_ms * kHoldLeasesPerStoreLease
             : kMinDerivedHoldLeaseMs;
}
// The longest a survivor may take to find and adopt a dead pgshiftd's
// migration, and the shortest a hold stands after its pgshiftd died: a hold
// lease below the first's bound lapses before a takeover (warned at create).
constexpr int64_t TakeoverBoundMs(int64_t store_lease_ms) {
  return store_lease_ms + store_lease_ms / 3;
}
constexpr int64_t HoldStandsAtLeastMs(int64_t hold_lease_ms) {
  return hold_lease_ms - hold_lease_ms / 3;
}
static_assert(TakeoverBoundMs(kLeaseTtlMs) < HoldStandsAtLeastMs(HoldLeaseFor(kLeaseTtlMs)),
              "the default hold must outlast a takeover");
// Engine: steps run at once at most (the worker pool's size).
inline constexpr int kWorkers = 16;
// Engine: a lease is trusted locally for this share (in percent) of its
// duration after the renewal that set it was sent; past it the migration
// waits for the next renewal (clock-rate drift, a pause mid-renewal).
inline constexpr int64_t kLeaseTrustPct = 80;

}  // namespace pgshift::workflow_defaults
