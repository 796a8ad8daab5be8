// MultiRouter: one route served by several router instances (a
// pgshift-proxy per application host, or a pool behind a load balancer).
// pgshiftd holds, switches and releases the route on every instance, in
// parallel, and afterwards keeps each instance's route where the migration
// wants it (Reconcile).
//
// An instance is "known down" when nothing listens on its admin address
// (the connection is refused). The admin API and the client listener live
// in one pgshift-proxy process, so a proxy whose admin port refuses
// connections serves no traffic either. Any other failure to reach it (a
// timeout, no route to the host) proves nothing: it may be serving clients
// that pgshiftd cannot see.
//
// What each call makes of an instance that does not answer:
//
//   HoldLeased  (before the fence) succeeds only when every instance drained
//               or is known down; one known down gets epoch 0 and no hold.
//               Any other failure releases the instances already held and
//               fails the hold: fencing the source under a live instance
//               that is not held would end its clients' transactions with
//               errors, and after the switch it would keep sending them to
//               the fenced source with pgshiftd unable to repoint it. Not
//               proceeding costs only a retry. At least one instance must
//               hold (every admin address refusing is more likely a wrong
//               config than a dead fleet).
//               A known-down instance is safe to leave out: it carries no
//               traffic now; if it starts again before the switch it routes
//               to the source (its config), whose writes before the fence
//               are in the final LSN the target replays and after it are
//               refused; after the switch Reconcile repoints it.
//   RenewHold   the hold stays ours while every instance holds under its
//               epoch or is known down (it died inside the hold: its
//               sessions died with it). An instance that answers that its
//               hold is gone (lapsed, released, restarted), or that came
//               back unheld, loses the hold: FailedPrecondition, exactly as
//               one proxy restarted inside the hold does (the runner aborts
//               before the promotion, rolls back after it). Doing the same
//               on both sides of the fence keeps one rule, and a hold
//               pgshiftd cannot vouch for is never fenced or promoted on.
//               An instance that cannot be reached otherwise is Unavailable:
//               transient, as for one proxy (hold_renewer.h decides when a
//               lease has passed without a renewal).
//   SwitchHeld  (after the fence and the promotion) switches every instance
//               it can. One that is known down or unreachable is skipped:
//               after the fence it can only fail writes against the source,
//               never split them, and Reconcile repoints it when it
//               answers. One whose hold lapsed in between is switched
//               without a hold (its sessions run unheld on the fenced
//               source; the target is where they belong now). It fails
//               (nothing moved) only when no instance switched.
//   Release, Repoint, SwitchTo, Prewarm: every instance; those known down
//               are skipped. HeldBackendPids, ReplicationSessions: the union
//               over the instances (a known-down one has none).
//   Current     the upstream every reachable instance agrees on;
//               FailedPrecondition naming them when they differ.
//   Stats       the sum over the reachable instances (counters restart with
//               an instance, as with one proxy).
//   Reconcile   each reachable instance not held and pointing elsewhere is
//               switched to the desired upstream; every instance's view is
//               reported (upstream, held, reachable).
//
// Thread-safety: calls on one MultiRouter may come from the cutover's
// thread and the renewer's at once, as for ProxyRouter; each call fans out
// to the instances on threads of its own and keeps no state between calls.
#pragma once

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"
#include "router/router.h"

namespace pgshift {

struct RouterInstance {
  std::string name;  // how status and errors name it (the admin_url)
  std::unique_ptr<Router> router;
  // Asked after a failed call: true when the instance is known down (see
  // above). Null: never known down.
  std::function<bool()> known_down;
};

class MultiRouter : public Router {
 public:
  explicit MultiRouter(std::vector<RouterInstance> instances);

  std::string Kind() const override;
  Status Hold(int64_t timeout_ms) override;
  Result<HoldLease> HoldLeased(int64_t timeout_ms, int64_t lease_ms) override;
  Status RenewHold(const HoldLease& hold) override;
  Status Release() override;
  Status Repoint(const Endpoint& to) override;
  Result<Endpoint> Current() override;
  Result<RouteStats> Stats() override;
  Result<HeldBackends> HeldBackendPids(const Endpoint& on) override;
  Status Prewarm(const Endpoint& to) override;
  Result<std::vector<ReplicationSession>> ReplicationSessions(const Endpoint& on) override;
  Result<int> RequestReplicationFeedback() override;
  Result<int> PauseReplication() override;
  Status SwitchTo(const Endpoint& to) override;
  Status SwitchHeld(const Endpoint& to, const HoldLease& hold) override;
  Result<ReconcileReport> Reconcile(const Endpoint& desired) override;
  // The instances' latest switch reports added up; instances that cannot be
  // read or made none are left out (nullopt when none has one).
  Result<std::optional<SwitchReport>> LastSwitch() override;

  size_t size() const { return instances_.size(); }

 private:
  // Runs fn(i) for every instance at once and returns the outcomes in order.
  std::vector<Status> ForEach(const std::function<Status(size_t)>& fn) const;
  bool KnownDown(size_t i) const;
  // `st` from instance i, with its name.
  Status Named(size_t i, const Status& st) const;
  // Every instance's `call`; OK when each succeeded or is known down, else
  // the first other failure (all were tried).
  Status OnAll(const std::function<Status(Router&)>& call) const;
  // The sum of every instance's `call`, known-down ones counting 0.
  Result<int> SumOver(Result<int> (Router::*call)());

  std::vector<RouterInstance> instances_;
};

// The epoch naming a set of instance epochs (HoldLease::epoch of a
// MultiRouter hold): never 0, and a different set gives a different one
// but for a 2^-64 chance.
uint64_t CombinedEpoch(const std::vector<uint64_t>& instance_epochs);

// True when a TCP connection to host:port is refused (nothing listens
// there), within timeout_ms; false when it connects, times out or fails
// otherwise.
bool ConnectionRefused(const std::string& host, int port, int64_t timeout_ms);

// {"type":"proxy","route":"app","instances":[{"admin_url":"http://..."},...]}
// (optional "admin_timeout_ms", for every instance): a MultiRouter of
// ProxyRouters, each known down when its admin port refuses connections.
// Unknown or missing fields, an empty list or an admin_url listed twice are
// InvalidArgument naming them.
Result<std::unique_ptr<Router>> MakeMultiProxyRouter(const nlohmann::json& cfg);

}  // namespace pgshift
