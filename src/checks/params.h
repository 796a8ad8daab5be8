// Parameter compatibility between the source and the target.
//
// A physical standby refuses to start when some settings are lower than on
// its primary; after promotion the target needs wal_level=logical and enough
// slots/senders for the CDC slots pgshift recreates there; every other
// non-default difference is reported as a warning. Before provisioning the
// target's settings are the source's (a base backup copies postgresql.conf)
// with the plan's overrides applied, so a target that would refuse to start
// is never created. Free functions; everything but ReadSettings is pure.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "checks/finding.h"
#include "pg/conn.h"

namespace pgshift::checks {

struct SettingInfo {
  std::string name;
  std::string value;     // pg_settings.reset_val: base units, no session overrides
  std::string boot_val;  // the compiled-in default
  std::string unit;      // pg_settings.unit ("8kB", "ms", ...) or ""
  std::string vartype;   // bool | integer | real | string | enum
  std::string context;   // internal | postmaster | sighup | ...
};
using Settings = std::map<std::string, SettingInfo>;

Result<Settings> ReadSettings(PgConn& conn);

// Settings a hot standby needs at least as high as its primary.
const std::vector<std::string>& StandbyMinimumSettings();

// Turns a postgresql.conf value ("64MB", "'logical'", "true") into the form
// pg_settings shows for `def` (base unit, on/off, unquoted), or an error
// naming the setting and what was expected.
Result<std::string> NormalizeSettingValue(const SettingInfo& def, const std::string& raw);

// The settings the planned target will run with: the source's, with
// `overrides` applied. Overrides that the target would refuse (unknown
// names, unparseable values) become blocking "params" findings in `problems`.
Settings PlanTargetSettings(const Settings& source,
                            const std::map<std::string, std::string>& overrides,
                            std::vector<Finding>* problems);

// Findings with id "params": standby minimums (one per setting, ok or
// blocking), post-promotion needs when the source has `logical_slots` CDC
// slots, and a warning per other differing non-default setting.
std::vector<Finding> CompareParams(const Settings& source, const Settings& target,
                                   int logical_slots);

// Whether the source can feed a new replica: wal_level, a free slot and
// free WAL senders (a streaming base backup uses two). Subjects "source:<name>".
std::vector<Finding> SourceCapacity(const Settings& source, int used_slots, int active_senders);

// What reverse replication (a rollback that keeps the target's writes) asks
// of the source: a subscription per database, each with an apply worker
// (a background worker, under max_logical_replication_workers and
// max_worker_processes) and a replication origin (at most
// max_replication_slots of them on a subscriber). What the source already
// uses, not counting the reverse subscriptions themselves.
struct ReverseReplicationLoad {
  int databases = 0;           // subscriptions to host
  int subscriptions = 0;       // other enabled subscriptions (an apply worker each)
  int origins = 0;             // other replication origins
  int background_workers = 0;  // running now, but parallel workers and ours
};

// Reads the load on `source`. Subscriptions named with `own_prefix` (the
// reverse ones, once created) and their origins and workers are left out;
// "" leaves none out.
Result<ReverseReplicationLoad> ReadReverseReplicationLoad(PgConn& source,
                                                          const std::string& own_prefix);

// One finding per setting, id "reverse_replication", subject
// "source:<name>": ok, or `short_severity` naming the value it needs.
std::vector<Finding> ReverseReplicationCapacity(const Settings& source,
                                                const ReverseReplicationLoad& load,
                                                Severity short_severity);

}  // namespace pgshift::checks
