// Router: what repoints application traffic from the source to the target.
//
// pgshiftd drives a router through hold → repoint → release during a
// cutover (and the reverse on rollback). Implementations: the PgBouncer
// adapter (admin console PAUSE / RELOAD / RESUME) and pgshift-proxy's admin
// API. Each instance controls one route. Implementations must be safe to
// call from one thread at a time; they keep no state that a restarted
// pgshiftd would need (the router itself is the source of truth).
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/latency.h"
#include "common/status.h"

namespace pgshift {

struct Endpoint {
  std::string host;
  int port = 0;
  bool operator==(const Endpoint&) const = default;
  std::string ToString() const { return host + ":" + std::to_string(port); }
};

// Backends on one server that belong to sessions a router holds at a
// transaction boundary: they run no client statement while the hold lasts,
// and (for a router that reports any) none after it either — each session
// logs in again before its next transaction. A fence may leave them alive.
struct HeldBackends {
  Endpoint server;
  // The route's database. `pids` may include backends of the router's other
  // sessions on the server; the route's own are those connected to this
  // database, and only those may be spared (the fence checks it on the server).
  std::string database;
  std::vector<int> pids;
};

// A replication connection (a CDC consumer such as pg_recvlogical, connected
// with replication=database) that the router carries to a server.
struct ReplicationSession {
  // The server session's pid: the walsender, which
  // pg_replication_slots.active_pid shows while it streams a slot. That is
  // how a slot's consumer is known to come through the router.
  int backend_pid = 0;
  Endpoint server;
  std::string database, user, application_name;
  std::string client_addr;  // the consumer's address as the router sees it
  bool streaming = false;   // a replication stream is running (CopyBoth)
  std::string slot;         // the slot of a running START_REPLICATION SLOT x LOGICAL, else ""
};

// A hold's lease, for a router that has one (pgshift-proxy): once the hold
// has drained it lasts lease_ms after its last renewal, and past that the
// router releases traffic on its own. `epoch` names the hold; 0 means the
// router's holds have no lease (PgBouncer's PAUSE, the none router) and last
// until released.
struct HoldLease {
  uint64_t epoch = 0;
  int64_t lease_ms = 0;
  // A route served by several instances (multi_router.h): each instance's
  // own hold, in the order the config lists them, 0 for one that was known
  // down when the hold was taken; `epoch` is then derived from them. Empty
  // for a router of one instance.
  std::vector<uint64_t> instance_epochs;
  bool leased() const { return epoch != 0; }
};

// Where a route points and whether it is held, as the router reports it.
struct RouteView {
  Endpoint upstream;
  bool held = false;
};

// One instance's view of a route served by several (multi_router.h), as
// `pgshift migration status` shows it.
struct RouteInstanceView {
  std::string name;  // the instance's address (its admin_url)
  bool reachable = false;
  RouteView view;     // when reachable
  std::string error;  // why not, when not
};

// An instance Reconcile repointed, and where it pointed before.
struct RepointedInstance {
  std::string name;
  Endpoint from;
};

// What Reconcile saw and did: every instance's view afterwards, and the
// instances it repointed.
struct ReconcileReport {
  std::vector<RouteInstanceView> instances;
  std::vector<RepointedInstance> repointed;
};

// A router's traffic counters, cumulative since the router started (rates
// and percentiles come from the difference of two readings; see
// workflow/health.h). ProxyRouter reads each from the proxy's stat of the
// same name (proxy/stats.h); PgBouncerRouter from SHOW POOLS / STATS.
struct RouteStats {
  int64_t sessions = 0;       // client sessions on the route
  int64_t held_sessions = 0;  // sessions waiting at a boundary
  int64_t transactions = 0;
  int64_t errors = 0;
  // Transactions that saw an error; nullopt when the router keeps no such
  // count (PgBouncer).
  std::optional<int64_t> failed_transactions;
  // The transactions whose duration the router measured, and their total
  // duration: the proxy's are those it forwarded in user space (stats.h,
  // kTxnLatency); PgBouncer's are all of them (SHOW STATS total_xact_count
  // and total_xact_time, which includes idle-in-transaction time).
  int64_t timed_transactions = 0;
  int64_t latency_sum_us = 0;
  // Their distribution: the proxy's histogram; empty for PgBouncer.
  LatencyHistogram latency;
};

// What a router did at a switch (a repoint to a new server), for the
// migration's timeline. pgshift-proxy moves each session at its next
// transaction boundary (sessions holding state right away), so the counts
// grow after the switch until `pending` is 0. A router made of several
// instances sums theirs (Add).
struct SwitchReport {
  Endpoint from, to;
  int64_t at_ms = 0;      // Unix ms of the repoint (Add keeps the earliest)
  int64_t sessions = 0;   // on the route when it repointed
  int64_t moved = 0;      // moved to `to` so far
  int64_t prewarmed = 0;  // of those, the ones that took a login opened ahead (Prewarm)
  int64_t pending = 0;    // not moved yet: each moves at its next transaction
  // Sessions the switch's hold waited for because they held state that
  // cannot move (the route's uncarriable: wait), and that let go of it in time.
  int64_t waited_for = 0;
  // What the moves carried, by kind.
  struct Carried {
    int64_t settings = 0;             // SET values
    int64_t protocol_statements = 0;  // protocol-level named prepared statements
    int64_t prepared_statements = 0;  // SQL PREPARE
    int64_t listen_channels = 0;
    int64_t advisory_locks = 0;
  } carried;
  // Sessions ended instead of moved, by reason (each got a FATAL naming it).
  struct Ended {
    int64_t temporary_tables = 0;
    int64_t holdable_cursors = 0;
    int64_t carry_failed = 0;  // what they held could not be read or re-created
    int64_t move_failed = 0;   // the new server refused their login or settings
    int64_t Total() const {
      return temporary_tables + holdable_cursors + carry_failed + move_failed;
    }
  } ended;

  void Add(const SwitchReport& other);
  // One line for the migration's events ("12 of 14 session(s) moved ...").
  std::string Summary() const;
};

class Router {
 public:
  virtual ~Router() = default;
  virtual std::string Kind() const = 0;  // "pgbouncer", "proxy", "none"

  // Stops new transactions on the route and returns once no transaction is
  // in flight upstream. If that does not happen within timeout_ms, the hold
  // is released again and Timeout is returned: a hold never hangs forever.
  // Idempotent: holding a held route succeeds.
  virtual Status Hold(int64_t timeout_ms) = 0;
  // Hold, with a lease of lease_ms once drained (HoldLease). Holding a held
  // route joins that hold: the same epoch, its lease renewed. Routers
  // without a lease hold as Hold does and return an unleased HoldLease.
  virtual Result<HoldLease> HoldLeased(int64_t timeout_ms, int64_t lease_ms) {
    PGSHIFT_RETURN_IF_ERROR(Hold(timeout_ms));
    return HoldLease{};
  }
  // Renews `hold`'s lease. FailedPrecondition, saying what became of it,
  // once that hold is not in place (it lapsed or was released, or the router
  // restarted); Unavailable when the router cannot be reached. Unlike every
  // other call this one may run on another thread than the rest (the
  // renewer's, workflow/hold_renewer.h). Nothing to renew by default.
  virtual Status RenewHold(const HoldLease& hold) { return Status::OK(); }
  // Lets held sessions go on (to wherever the route points now). Idempotent.
  virtual Status Release() = 0;
  // Points the route at `to`; sessions use it from their next transaction.
  // Called while held. Idempotent.
  virtual Status Repoint(const Endpoint& to) = 0;
  // Where the route points now (read from the router, not remembered).
  virtual Result<Endpoint> Current() = 0;
  // Current, and whether the route is held; a router that cannot tell says
  // not held.
  virtual Result<RouteView> View() {
    PGSHIFT_ASSIGN_OR_RETURN(Endpoint upstream, Current());
    return RouteView{.upstream = upstream};
  }
  // Outside a hold (after the switch, after a rollback): points every
  // instance of the route that is reachable, not held and elsewhere than
  // `desired` at `desired`, and reports each one's view. A router of one
  // instance has nothing to reconcile (the switch moved it or failed) and
  // reports nothing.
  virtual Result<ReconcileReport> Reconcile(const Endpoint& desired) { return ReconcileReport{}; }
  virtual Result<RouteStats> Stats() = 0;
  // Called while held (after Hold succeeded): the backends on `on` that the
  // hold keeps at a boundary (see HeldBackends). The default is none, which
  // is always safe: the fence then terminates every client backend. PgBouncer
  // has nothing to report (PAUSE closes the route's server connections, and a
  // pooled one is not tied to a client), nor has the none router.
  virtual Result<HeldBackends> HeldBackendPids(const Endpoint& on) {
    return HeldBackends{.server = on};
  }
  // Called just before the hold that ends in a switch to `to`: a router that
  // keeps a server session per client may log each in there now, so the
  // switch does not wait for logins. Only an optimisation; the default does
  // nothing.
  virtual Status Prewarm(const Endpoint& to) { return Status::OK(); }
  // CDC consumers across a cutover. After the source is fenced and every
  // logical slot has confirmed the final WAL position, the consumers are
  // paused; their reconnects wait in the hold and then reach wherever the
  // route points. Routers that carry no replication connections (PgBouncer
  // 1.18, the none router) keep the defaults: none listed, none asked.
  //
  // The replication sessions the router has on `on`.
  virtual Result<std::vector<ReplicationSession>> ReplicationSessions(const Endpoint& on) {
    return std::vector<ReplicationSession>{};
  }
  // Asks every streaming consumer to report its flushed position now (a
  // keepalive that requests a reply) instead of at its next status interval,
  // so confirmed_flush_lsn catches up at once. Returns how many were asked.
  virtual Result<int> RequestReplicationFeedback() { return 0; }
  // Ends every replication session of the route between two messages: the
  // server side closes (the walsender exits, the slot becomes inactive) and
  // the consumer is told to reconnect. Returns how many were ended.
  virtual Result<int> PauseReplication() { return 0; }
  // Repoint, then Release. A router that can do both in one call saves a
  // round trip inside the hold.
  virtual Status SwitchTo(const Endpoint& to) {
    if (Status st = Repoint(to); !st.ok()) return st;
    return Release();
  }
  // SwitchTo, only while `hold` is in place: FailedPrecondition and nothing
  // moved once it lapsed. Routers without a lease just switch.
  virtual Status SwitchHeld(const Endpoint& to, const HoldLease& hold) { return SwitchTo(to); }
  // The report of the router's latest switch (SwitchReport), read now;
  // nullopt when it has made none or keeps no such report (PgBouncer, none).
  virtual Result<std::optional<SwitchReport>> LastSwitch() { return std::optional<SwitchReport>(); }
};

// Builds a router from its JSON config:
//   {"type":"pgbouncer","admin_conninfo":"host=.. port=.. dbname=pgbouncer user=..",
//    "config_file":"/path/pgbouncer.ini","route":"app"}
//   {"type":"proxy","admin_url":"http://127.0.0.1:6433","route":"app"}
//   {"type":"proxy","route":"app","instances":[{"admin_url":"http://10.0.0.1:6433"},...]}
//      (one route served by several pgshift-proxy instances: multi_router.h)
//   {"type":"none"}   (no router: applications connect directly; cutover only fences)
// Unknown types or fields are InvalidArgument naming the field.
Result<std::unique_ptr<Router>> MakeRouter(const nlohmann::json& config);

}  // namespace pgshift
