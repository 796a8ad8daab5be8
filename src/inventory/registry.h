// Registry: the file (YAML or JSON) that tells pgshiftd, per database the
// data access layer serves, who owns it and how to migrate it by name.
//
//   secrets: secrets.yaml          # optional; relative to this file; --secrets overrides
//   routers:                       # the routers whose routes pgshiftd reads
//     - name: edge
//       type: proxy                # proxy: admin_url | pgbouncer: admin_conninfo, config_file
//       admin_url: http://127.0.0.1:6433
//     - name: pool                 # one pgshift-proxy deployment of several instances:
//       type: proxy                # every instance's admin API (instead of admin_url);
//       instances:                 # migrations hold and switch them all
//         - admin_url: http://10.0.1.1:6433
//         - admin_url: http://10.0.1.2:6433
//   databases:
//     app:
//       team: payments             # the owner team (access file)
//       source:                    # the source cluster's admin endpoint
//         host: 10.0.0.5
//         port: 5432
//         dbname: app              # the application database (default: the entry's name)
//         user: postgres           # default postgres
//         admin_dbname: postgres   # default postgres
//         credential: app-admin    # the NAME of the password in the secrets file
//       provider: local            # default local
//       placement:                 # where the new cluster goes (local provider)
//         data_root: /srv/pg       # the target is <data_root>/<db>-<suffix>
//         ports: 5500-5599         # pgshiftd picks a free one
//         os_user: postgres        # optional, also bin_dir and settings
//       router: edge               # optional: else the router with a route for dbname
//       route: app                 # optional: default the route found, else the name
//       window: {days: [sat, sun], start: "02:00", end: "05:00", timezone: UTC}
//       tags: [tier1]
//       options: {...}             # default migration options (the spec's)
//
// Secrets file: a mapping credential name → password, mode 0600 (checked at
// load). Passwords never appear in messages. Errors in either file name the
// file, the line and the field. Immutable after load; thread-safe.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace pgshift::inventory {

inline constexpr const char* kDefaultAdminUser = "postgres";
inline constexpr const char* kDefaultAdminDbname = "postgres";
inline constexpr int kDefaultPgPort = 5432;

struct SourceEndpoint {
  std::string host;
  int port = kDefaultPgPort;
  std::string dbname;
  std::string user = kDefaultAdminUser;
  std::string admin_dbname = kDefaultAdminDbname;
  std::string credential;  // "" = none (trust, peer or a .pgpass)
};

struct Placement {
  std::string data_root;
  int port_min = 0;
  int port_max = 0;
  std::string bin_dir;
  std::string os_user;
  std::map<std::string, std::string> settings;
};

struct Window {
  std::vector<std::string> days;  // mon..sun; empty = every day
  std::string start, end;         // HH:MM
  std::string timezone = "UTC";
  nlohmann::json ToJson() const;
};

struct RouterDef {
  std::string name;
  std::string type;  // proxy | pgbouncer
  // proxy: the admin API of every pgshift-proxy instance serving the routes
  // (admin_url gives one, instances several); none for pgbouncer.
  std::vector<std::string> admin_urls;
  std::string admin_conninfo;
  std::string config_file;
  std::string credential;  // pgbouncer admin password (secret name), optional

  // One def per instance, each with one admin URL (a pgbouncer router is one
  // instance): what a RouteSource reads.
  std::vector<RouterDef> Instances() const;
};

struct DatabaseEntry {
  std::string name;
  std::string team;
  SourceEndpoint source;
  std::string provider = "local";
  Placement placement;
  std::optional<Window> window;
  std::vector<std::string> tags;
  std::string router;  // a RouterDef name, or ""
  std::string route;
  nlohmann::json options = nlohmann::json::object();
  int line = 0;  // where the entry starts in the registry
};

class Secrets {
 public:
  // Checks the mode (0600) and owner first.
  static Result<Secrets> Load(const std::string& path);
  static Result<Secrets> Parse(const std::string& text, const std::string& path);
  std::optional<std::string> Get(const std::string& name) const;
  bool Has(const std::string& name) const { return values_.count(name) > 0; }
  const std::string& path() const { return path_; }
  // Every secret value (for tests that check nothing leaks).
  std::vector<std::string> Values() const;

 private:
  std::string path_;
  std::map<std::string, std::string> values_;
};

struct Registry {
  std::string path;
  std::string secrets_path;  // absolute, or ""
  std::vector<RouterDef> routers;
  std::map<std::string, DatabaseEntry> databases;

  // Parses and validates; every credential named must be in `secrets` when
  // given (else the error names the registry field that names it).
  static Result<Registry> Parse(const std::string& text, const std::string& path,
                                const Secrets* secrets);
  // Loads the registry and its secrets file (`secrets_override` when not
  // empty, else the registry's `secrets`).
  static Result<std::pair<Registry, Secrets>> Load(const std::string& path,
                                                   const std::string& secrets_override);

  const RouterDef* FindRouter(const std::string& name) const;
};

}  // namespace pgshift::inventory
