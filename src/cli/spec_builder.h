// Building a migration spec (the JSON body of POST /v1/migrations) from the
// flags of `pgshift migration create`, or loading one from a file, with the
// local validation that needs no server: required flags, connection strings
// (libpq's own parser), ports, paths, router combinations. The server still
// validates the whole spec and fills defaults for options not given.
//
// Plain functions over values; thread-safe.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace pgshift::cli {

struct CreateFlags {
  std::string name;
  std::string source_conninfo;
  std::string replication_conninfo;  // source.replication_conninfo; "" = not given
  std::string target_dir;
  std::optional<int> target_port;
  std::string target_bin_dir;                // "" = server default
  std::vector<std::string> target_settings;  // "key=value"
  std::string router_type;                   // pgbouncer | proxy | none | "" (not given)
  // PgBouncer's admin conninfo (one), or the admin URL of every pgshift-proxy
  // instance serving the route (--router-admin repeated or a comma list).
  std::vector<std::string> router_admins;
  std::string router_config;  // pgbouncer.ini (pgbouncer only)
  std::string route;
  std::optional<int64_t> lag_threshold_bytes;
  std::optional<double> sustain_seconds;
  bool auto_cutover = false;
  bool auto_finalize = false;
  std::optional<double> verify_seconds;
  std::optional<int64_t> hold_timeout_ms;
};

// The spec JSON; "options" holds only what was given. InvalidArgument names
// every missing flag, or the flag whose value is wrong and why. One proxy
// admin URL gives {"type":"proxy","admin_url":...}; several give
// {"type":"proxy","instances":[{"admin_url":...},...]} (router/multi_router.h).
Result<nlohmann::json> BuildSpec(const CreateFlags& flags);

// Reads a whole spec from a JSON file: it must parse, be an object, and any
// source.conninfo / router.admin_conninfo in it must be a valid conninfo.
Result<nlohmann::json> LoadSpecFile(const std::string& path);

}  // namespace pgshift::cli
