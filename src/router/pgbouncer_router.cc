#include "router/pgbouncer_router.h"

#include <algorithm>
#include <optional>
#include <thread>
#include <vector>

#include "common/os.h"
#include "pg/conn.h"
#include "router/pgbouncer_admin.h"

namespace pgshift {
namespace {

using pgbouncer::AdminConnection;
using pgbouncer::AdminIdent;
using pgbouncer::Deadline;
using pgbouncer::DeadlineIn;

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

std::string Trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && IsSpace(s[b])) ++b;
  while (e > b && IsSpace(s[e - 1])) --e;
  return s.substr(b, e - b);
}

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// A value in a libpq-style connection string, quoted when it needs to be.
std::string ConnstrValue(const std::string& v) {
  bool plain = !v.empty() && v.find_first_of(" \t'\\") == std::string::npos;
  if (plain) return v;
  std::string q = "'";
  for (char c : v) {
    if (c == '\'' || c == '\\') q += '\\';
    q += c;
  }
  return q + "'";
}

// Rewrites host/port inside the connection string `value` (the text after '=').
std::string RewriteConnstr(const std::string& value, const Endpoint& to) {
  struct Span {
    size_t begin, end;
    std::string text;
  };
  std::vector<Span> edits;
  bool saw_host = false, saw_port = false;
  size_t i = 0;
  const size_t n = value.size();
  while (i < n) {
    while (i < n && IsSpace(value[i])) ++i;
    if (i >= n) break;
    size_t key_begin = i;
    while (i < n && value[i] != '=' && !IsSpace(value[i])) ++i;
    std::string key = value.substr(key_begin, i - key_begin);
    while (i < n && IsSpace(value[i])) ++i;
    if (i >= n || value[i] != '=') continue;  // malformed; PgBouncer will say so on RELOAD
    ++i;
    while (i < n && IsSpace(value[i])) ++i;
    size_t val_begin = i;
    if (i < n && value[i] == '\'') {
      ++i;
      while (i < n && value[i] != '\'') {
        if (value[i] == '\\' && i + 1 < n) ++i;
        ++i;
      }
      if (i < n) ++i;
    } else {
      while (i < n && !IsSpace(value[i])) ++i;
    }
    if (key == "host") {
      saw_host = true;
      edits.push_back({val_begin, i, ConnstrValue(to.host)});
    } else if (key == "port") {
      saw_port = true;
      edits.push_back({val_begin, i, std::to_string(to.port)});
    }
  }
  std::string out = value;
  for (auto it = edits.rbegin(); it != edits.rend(); ++it) {
    out.replace(it->begin, it->end - it->begin, it->text);
  }
  if (!saw_host || !saw_port) {
    size_t end = out.size();
    while (end > 0 && IsSpace(out[end - 1])) --end;
    std::string add;
    if (!saw_host) add += " host=" + ConnstrValue(to.host);
    if (!saw_port) add += " port=" + std::to_string(to.port);
    out.insert(end, add);
  }
  return out;
}

// The `name` column of SHOW DATABASES / `database` of SHOW POOLS matching the route.
std::optional<size_t> FindRow(const Rows& rows, const std::string& column,
                              const std::string& route) {
  for (size_t r = 0; r < rows.size(); ++r) {
    if (rows.Str(r, column) == route) return r;
  }
  return std::nullopt;
}

Status NoSuchRoute(const PgBouncerRouterConfig& c) {
  return NotFound("PgBouncer (" + c.admin_conninfo + ") has no database '" + c.route +
                  "': add a line '" + c.route + " = host=... port=... dbname=...' to the " +
                  "[databases] section of " + c.config_file + " and RELOAD, or fix \"route\"");
}

// Maps an admin error about the route to NotFound; other errors pass through.
Status RouteError(const Status& s, const PgBouncerRouterConfig& c) {
  if (Contains(s.message(), "no such database")) return NoSuchRoute(c);
  return s;
}

}  // namespace

Result<std::string> RewriteRouteInIni(const std::string& ini, const std::string& route,
                                      const Endpoint& to) {
  if (to.host.empty() || to.port <= 0 || to.port > 65535) {
    return InvalidArgument("cannot point route '" + route + "' at '" + to.ToString() +
                           "': the endpoint needs a host and a port in 1..65535");
  }
  std::string section;
  std::vector<std::pair<size_t, size_t>> matches;  // [begin, end) of the line body
  size_t pos = 0;
  while (pos < ini.size()) {
    size_t nl = ini.find('\n', pos);
    size_t line_end = nl == std::string::npos ? ini.size() : nl;
    std::string line = ini.substr(pos, line_end - pos);
    std::string t = Trim(line);
    if (!t.empty() && t.front() == '[' && t.find(']') != std::string::npos) {
      section = Trim(t.substr(1, t.find(']') - 1));
      std::transform(section.begin(), section.end(), section.begin(), ::tolower);
    } else if (section == "databases" && !t.empty() && t[0] != ';' && t[0] != '#') {
      size_t eq = line.find('=');
      if (eq != std::string::npos) {
        std::string key = Trim(line.substr(0, eq));
        if (key.size() >= 2 && key.front() == '"' && key.back() == '"') {
          key = key.substr(1, key.size() - 2);
        }
        if (key == route) matches.emplace_back(pos, line_end);
      }
    }
    pos = nl == std::string::npos ? ini.size() : nl + 1;
  }
  if (matches.empty()) {
    return NotFound("route '" + route + "' has no line in the [databases] section; add '" +
                    route + " = host=... port=... dbname=...' there or fix \"route\"");
  }
  if (matches.size() > 1) {
    return FailedPrecondition("route '" + route + "' has " + std::to_string(matches.size()) +
                              " lines in the [databases] section; keep exactly one");
  }
  auto [begin, end] = matches.front();
  size_t eq = ini.find('=', begin);
  std::string value = ini.substr(eq + 1, end - eq - 1);
  std::string out = ini;
  out.replace(eq + 1, end - eq - 1, RewriteConnstr(value, to));
  return out;
}

Status PgBouncerRouter::Hold(int64_t timeout_ms) {
  if (timeout_ms <= 0) {
    return InvalidArgument("hold timeout must be positive, got " + std::to_string(timeout_ms));
  }
  const Deadline deadline = DeadlineIn(timeout_ms);
  const std::string pause = "PAUSE " + AdminIdent(config_.route);
  const std::string what = "pausing route '" + config_.route + "' within " +
                           std::to_string(timeout_ms) + " ms";
  auto conn = AdminConnection::Connect(config_.admin_conninfo, deadline);
  if (!conn.ok()) return conn.status().Wrap(what + " (nothing was paused)");

  // PAUSE answers only once every server connection of the route is back in
  // the pool, i.e. no transaction is in flight upstream.
  Status drained = (*conn)->Send(pause);
  if (drained.ok()) drained = (*conn)->Wait(pause, deadline).status();
  if (!drained.ok() && drained.code() == Code::kFailedPrecondition &&
      Contains(drained.message(), "already paused")) {
    // Versions that refuse a second PAUSE: held already; wait for the drain ourselves.
    drained = Timeout("still draining");
    while (std::chrono::steady_clock::now() < deadline) {
      auto pools = (*conn)->Run("SHOW POOLS", deadline);
      if (!pools.ok()) {
        drained = pools.status();
        break;
      }
      int64_t active = 0;
      for (size_t r = 0; r < pools->size(); ++r) {
        if (pools->Str(r, "database") == config_.route) active += pools->Int(r, "sv_active");
      }
      if (active == 0) {
        drained = Status::OK();
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  if (drained.ok()) return Status::OK();
  if (drained.code() == Code::kFailedPrecondition) {
    // PgBouncer refused the PAUSE itself (e.g. no such database): nothing is paused.
    return RouteError(drained, config_);
  }
  // Timed out, or the connection broke mid-PAUSE: the route may be paused, so
  // resume it from a second connection before dropping the first.
  Status resumed = Release();
  conn->reset();
  std::string resume_note =
      resumed.ok() ? "; the route was resumed"
                   : "; RESUME failed too (" + resumed.message() + ") — run 'RESUME " +
                         AdminIdent(config_.route) + "' on the admin console";
  if (drained.code() == Code::kTimeout) {
    return Timeout("PgBouncer could not finish " + what +
                   ": transactions were still running on it" + resume_note);
  }
  return drained.Wrap(what + resume_note);
}

Status PgBouncerRouter::Release() {
  const Deadline deadline = DeadlineIn(config_.admin_timeout_ms);
  PGSHIFT_ASSIGN_OR_RETURN(auto conn, AdminConnection::Connect(config_.admin_conninfo, deadline));
  auto r = conn->Run("RESUME " + AdminIdent(config_.route), deadline);
  if (r.ok()) return Status::OK();
  if (r.status().code() == Code::kFailedPrecondition && Contains(r.status().message(), "not paused")) {
    return Status::OK();  // idempotent
  }
  return RouteError(r.status(), config_);
}

Status PgBouncerRouter::Repoint(const Endpoint& to) {
  PGSHIFT_ASSIGN_OR_RETURN(std::string ini, ReadFile(config_.config_file));
  auto rewritten = RewriteRouteInIni(ini, config_.route, to);
  if (!rewritten.ok()) return rewritten.status().Wrap(config_.config_file);
  if (*rewritten != ini) {
    PGSHIFT_RETURN_IF_ERROR(WriteFileAtomic(config_.config_file, *rewritten));
  }
  return Reload(to);
}

Status PgBouncerRouter::Reload(const Endpoint& expected) {
  const Deadline deadline = DeadlineIn(config_.admin_timeout_ms);
  PGSHIFT_ASSIGN_OR_RETURN(auto conn, AdminConnection::Connect(config_.admin_conninfo, deadline));
  PGSHIFT_RETURN_IF_ERROR(conn->Run("RELOAD", deadline).status());
  PGSHIFT_ASSIGN_OR_RETURN(Rows dbs, conn->Run("SHOW DATABASES", deadline));
  auto row = FindRow(dbs, "name", config_.route);
  if (!row) return NoSuchRoute(config_);
  Endpoint now{dbs.Str(*row, "host"), static_cast<int>(dbs.Int(*row, "port"))};
  if (now == expected) return Status::OK();
  std::string loaded = "(unknown)";
  auto cfg = conn->Run("SHOW CONFIG", deadline);
  if (cfg.ok()) {
    auto r = FindRow(*cfg, "key", "conffile");
    if (r) loaded = cfg->Str(*r, "value");
  }
  return FailedPrecondition("after RELOAD PgBouncer still routes '" + config_.route + "' to " +
                            now.ToString() + ", not " + expected.ToString() + "; it loaded " +
                            loaded + " while pgshift edited " + config_.config_file +
                            " — make config_file the file PgBouncer runs with, and check its log "
                            "for errors in the file");
}

Result<Endpoint> PgBouncerRouter::Current() {
  const Deadline deadline = DeadlineIn(config_.admin_timeout_ms);
  PGSHIFT_ASSIGN_OR_RETURN(auto conn, AdminConnection::Connect(config_.admin_conninfo, deadline));
  PGSHIFT_ASSIGN_OR_RETURN(Rows dbs, conn->Run("SHOW DATABASES", deadline));
  auto row = FindRow(dbs, "name", config_.route);
  if (!row) return NoSuchRoute(config_);
  return Endpoint{dbs.Str(*row, "host"), static_cast<int>(dbs.Int(*row, "port"))};
}

Result<RouteStats> PgBouncerRouter::Stats() {
  const Deadline deadline = DeadlineIn(config_.admin_timeout_ms);
  PGSHIFT_ASSIGN_OR_RETURN(auto conn, AdminConnection::Connect(config_.admin_conninfo, deadline));
  PGSHIFT_ASSIGN_OR_RETURN(Rows dbs, conn->Run("SHOW DATABASES", deadline));
  auto db_row = FindRow(dbs, "name", config_.route);
  if (!db_row) return NoSuchRoute(config_);
  const bool paused = dbs.Int(*db_row, "paused") != 0;
  PGSHIFT_ASSIGN_OR_RETURN(Rows pools, conn->Run("SHOW POOLS", deadline));
  RouteStats stats;
  for (size_t r = 0; r < pools.size(); ++r) {
    if (pools.Str(r, "database") != config_.route) continue;
    stats.sessions += pools.Int(r, "cl_active") + pools.Int(r, "cl_waiting");
    if (paused) stats.held_sessions += pools.Int(r, "cl_waiting");
  }
  PGSHIFT_ASSIGN_OR_RETURN(Rows totals, conn->Run("SHOW STATS", deadline));
  auto stats_row = FindRow(totals, "database", config_.route);
  if (stats_row) {
    stats.transactions = totals.Int(*stats_row, "total_xact_count");
    // Every transaction is timed, as an average only (no distribution).
    stats.timed_transactions = stats.transactions;
    stats.latency_sum_us = totals.Int(*stats_row, "total_xact_time");
  }
  // PgBouncer keeps no per-database error count: errors stay 0 and
  // failed_transactions unknown.
  return stats;
}

Result<std::unique_ptr<PgBouncerRouter>> PgBouncerRouter::FromJson(const nlohmann::json& config) {
  if (!config.is_object()) {
    return InvalidArgument("pgbouncer router config must be a JSON object");
  }
  static const std::vector<std::string> kFields = {"type", "admin_conninfo", "config_file",
                                                   "route"};
  for (const auto& [key, value] : config.items()) {
    if (std::find(kFields.begin(), kFields.end(), key) == kFields.end()) {
      return InvalidArgument("pgbouncer router config has unknown field \"" + key +
                             "\"; allowed: type, admin_conninfo, config_file, route");
    }
  }
  auto get = [&](const std::string& key, const std::string& hint) -> Result<std::string> {
    if (!config.contains(key)) {
      return InvalidArgument("pgbouncer router config is missing \"" + key + "\": add " + hint);
    }
    if (!config[key].is_string() || config[key].get<std::string>().empty()) {
      return InvalidArgument("pgbouncer router config field \"" + key +
                             "\" must be a non-empty string: " + hint);
    }
    return config[key].get<std::string>();
  };
  PgBouncerRouterConfig c;
  PGSHIFT_ASSIGN_OR_RETURN(
      c.admin_conninfo,
      get("admin_conninfo",
          "the libpq conninfo of the admin console, e.g. \"host=127.0.0.1 port=6432 "
          "dbname=pgbouncer user=postgres\""));
  PGSHIFT_ASSIGN_OR_RETURN(c.config_file,
                           get("config_file", "the path of the pgbouncer.ini PgBouncer runs with"));
  PGSHIFT_ASSIGN_OR_RETURN(c.route,
                           get("route", "the name of the [databases] entry to control, e.g. \"app\""));
  auto kv = ParseConninfo(c.admin_conninfo);
  if (!kv.ok()) return kv.status().Wrap("pgbouncer router config field \"admin_conninfo\"");
  auto db = kv->find("dbname");
  if (db == kv->end() || db->second != "pgbouncer") {
    return InvalidArgument("pgbouncer router config field \"admin_conninfo\" must connect to the "
                           "admin console: add dbname=pgbouncer");
  }
  if (!PathExists(c.config_file)) {
    return InvalidArgument("pgbouncer router config field \"config_file\": " + c.config_file +
                           " does not exist; give the path of the pgbouncer.ini PgBouncer runs with");
  }
  return std::make_unique<PgBouncerRouter>(std::move(c));
}

}  // namespace pgshift
