// FakeWorld / FakeEnv: an in-memory source, target and router for
// deterministic unit tests of the workflow engine (a test seam; the same
// engine runs against real servers in the integration tests).
//
// The world survives the env (as real servers survive pgshiftd), so a test
// can "kill" the engine by throwing SimulatedCrash from any env call and
// resume with a fresh engine. Not thread-safe: the test thread drives it.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "provider/env.h"

namespace pgshift {

struct SimulatedCrash {
  std::string where;
};

struct FakeWorld {
  // source
  uint64_t source_lsn = 0x3000000;
  uint64_t wal_per_call = 8192;  // WAL generated per observation while not fenced
  bool fenced = false;
  bool retired = false;
  std::set<std::string> slots;
  std::vector<LogicalSlot> logical_slots;
  // CDC: consumers the router carries (by walsender pid), whether they
  // confirm the source's position when asked to report, and the slots
  // carried to the target.
  std::vector<ReplicationSession> replication_sessions;
  bool consumers_confirm = true;
  int replication_pauses = 0;
  std::vector<LogicalSlot> target_logical_slots;
  bool source_down = false;
  // target
  bool target_exists = false;
  bool target_running = false;
  bool promoted = false;
  uint64_t replay_lsn = 0;
  uint64_t replay_per_call = 1 << 20;  // how far replay catches up per observation
  int timeline = 1;
  bool probe_fails = false;
  // Client backends on the source, and those of them inside a transaction.
  std::set<int> source_backends;
  std::set<int> busy_backends;
  // router
  bool held = false;
  // The router's holds have leases (HoldLeased returns epochs). hold_epoch
  // is the hold in place (0: none) and renewals counts RenewHold's
  // successes: atomics, as the runner's renewer calls RenewHold from its
  // own thread. LapseHold() is the router releasing a hold on its own.
  bool router_leases = false;
  std::atomic<uint64_t> hold_epoch{0};
  uint64_t last_epoch = 0;
  std::atomic<int> renewals{0};
  void LapseHold() {
    held = false;
    hold_epoch = 0;
  }
  // Leases run on the real clock, as pgshift-proxy's do: a hold not renewed
  // within its lease lapses (LapseHold) at the router's next call, and
  // lapses counts those.
  bool leases_expire = false;
  std::atomic<int64_t> lease_until_ms{0};
  int lapses = 0;
  bool hold_times_out = false;
  std::vector<int> held_backend_pids;  // what the router reports while held
  bool held_backends_fail = false;
  HeldBackends last_fence_exemption;  // what the last FenceSource was given
  Endpoint prewarmed_on;              // what the router was asked to prewarm
  Endpoint routed{"127.0.0.1", 5432};
  // Traffic through the router: every Stats() call counts `per_read` more
  // transactions on the side the route points at, with that side's share of
  // failed ones and latency. route_stats is the running total it reports.
  struct Traffic {
    int64_t per_read = 100;
    double error_rate = 0;
    double latency_ms = 2;
  };
  Traffic source_traffic, target_traffic;
  RouteStats route_stats;
  bool stats_fail = false;
  // reverse replication: what it cannot carry (blocking findings), whether
  // it is in place, the target's write position (advanced by each marked
  // look) and whether the source stops applying it.
  std::vector<checks::Finding> reverse_obstacles;
  bool reverse_in_place = false;
  uint64_t target_lsn = 0;
  bool reverse_apply_stuck = false;
  int sequences_behind = 2;                  // what SyncSequencesToSource reports moving
  std::map<std::string, uint64_t> advanced;  // source slot → where AdvanceSourceSlot put it
  // checks
  std::vector<checks::Finding> preflight;
  std::vector<std::string> parity_mismatch;  // tables the parity check reports as different
  bool parity_started = false;
  int parity_polls_left = 3;  // Parity() calls before it reports done
  // faults: the named call throws SimulatedCrash once (after its effect when crash_after_effect).
  std::string crash_on;
  bool crash_after_effect = true;
  // The named call fails (Unavailable, after its effect) every time until cleared.
  std::string fail_on;
  std::vector<std::string> calls;
  // Called with the name of every env call as it starts: a test changes the
  // world at a chosen moment there (e.g. stops the target at the fence).
  std::function<void(const std::string&)> on_call;

  Endpoint source_ep{"127.0.0.1", 5432};
  Endpoint target_ep{"127.0.0.1", 5433};
  // What the env reports; the local provider's by default.
  ProviderCapabilities capabilities{.fence_exempts_held_sessions = true,
                                    .source_host_access = true,
                                    .basebackup_rate_limit = true,
                                    .sessions_survive_promotion = true,
                                    .promotes_within_hold = true,
                                    .logical_slots_on_target = true,
                                    .reverse_replication = true};
};

class FakeEnvFactory : public EnvFactory {
 public:
  explicit FakeEnvFactory(std::shared_ptr<FakeWorld> w) : world_(std::move(w)) {}
  Result<std::unique_ptr<MigrationEnv>> Make(const std::string& id,
                                             const MigrationSpec& spec) override;

 private:
  std::shared_ptr<FakeWorld> world_;
};

}  // namespace pgshift
