#include "checks/params.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <set>

namespace pgshift::checks {

namespace {

// Settings that legitimately differ between two instances, or that describe
// a standby's recovery rather than the database's behaviour
// (allow_in_place_tablespaces: a standby needs it to replay in-place
// tablespaces, tablespaces.h).
const std::set<std::string>& PerInstanceSettings() {
  static const std::set<std::string> kNames = {"port",
                                               "listen_addresses",
                                               "unix_socket_directories",
                                               "data_directory",
                                               "config_file",
                                               "hba_file",
                                               "ident_file",
                                               "external_pid_file",
                                               "cluster_name",
                                               "primary_conninfo",
                                               "primary_slot_name",
                                               "restore_command",
                                               "archive_cleanup_command",
                                               "recovery_end_command",
                                               "promote_trigger_file",
                                               "recovery_target",
                                               "recovery_target_action",
                                               "recovery_target_inclusive",
                                               "recovery_target_lsn",
                                               "recovery_target_name",
                                               "recovery_target_time",
                                               "recovery_target_timeline",
                                               "recovery_target_xid",
                                               "in_hot_standby",
                                               "transaction_read_only",
                                               "hot_standby",
                                               "application_name",
                                               "log_directory",
                                               "log_filename",
                                               "ssl_cert_file",
                                               "ssl_key_file",
                                               "ssl_ca_file",
                                               "allow_in_place_tablespaces"};
  return kNames;
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string Trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

std::string Unquote(const std::string& raw) {
  std::string s = Trim(raw);
  if (s.size() >= 2 && s.front() == '\'' && s.back() == '\'') {
    std::string inner = s.substr(1, s.size() - 2), out;
    for (size_t i = 0; i < inner.size(); ++i) {
      out += inner[i];
      if (inner[i] == '\'' && i + 1 < inner.size() && inner[i + 1] == '\'') ++i;
    }
    return out;
  }
  return s;
}

// Unit multiplier: memory in bytes (kind 'm'), time in milliseconds (kind 't').
bool UnitFactor(const std::string& unit, double* factor, char* kind) {
  std::string u = unit;
  double scale = 1;
  size_t digits = 0;
  while (digits < u.size() && std::isdigit(static_cast<unsigned char>(u[digits]))) ++digits;
  if (digits > 0) {
    scale = std::atof(u.substr(0, digits).c_str());
    u = u.substr(digits);
  }
  static const std::map<std::string, std::pair<double, char>> kUnits = {
      {"B", {1, 'm'}},
      {"kB", {1024, 'm'}},
      {"MB", {1048576.0, 'm'}},
      {"GB", {1073741824.0, 'm'}},
      {"TB", {1099511627776.0, 'm'}},
      {"us", {0.001, 't'}},
      {"ms", {1, 't'}},
      {"s", {1000, 't'}},
      {"min", {60000, 't'}},
      {"h", {3600000, 't'}},
      {"d", {86400000, 't'}}};
  auto it = kUnits.find(u);
  if (it == kUnits.end()) return false;
  *factor = scale * it->second.first;
  *kind = it->second.second;
  return true;
}

std::string FormatNumber(double v, bool integer) {
  char buf[64];
  if (integer) {
    std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(std::llround(v)));
  } else {
    std::snprintf(buf, sizeof buf, "%.15g", v);
  }
  return buf;
}

bool ParseDouble(const std::string& s, double* out) {
  if (s.empty()) return false;
  char* end = nullptr;
  *out = std::strtod(s.c_str(), &end);
  return end && *end == '\0';
}

nlohmann::json AsJson(const SettingInfo& s) {
  double d;
  if ((s.vartype == "integer" || s.vartype == "real") && ParseDouble(s.value, &d)) {
    if (s.vartype == "integer") return static_cast<int64_t>(std::llround(d));
    return d;
  }
  return s.value;
}

Finding ParamFinding(Severity sev, const std::string& subject, nlohmann::json value,
                     nlohmann::json threshold, std::string message, std::string remedy) {
  Finding f;
  f.id = "params";
  f.severity = sev;
  f.subject = subject;
  f.value = std::move(value);
  f.threshold = std::move(threshold);
  f.message = std::move(message);
  f.remedy = std::move(remedy);
  return f;
}

double NumberOr(const Settings& s, const std::string& name, double fallback) {
  auto it = s.find(name);
  double d;
  if (it != s.end() && ParseDouble(it->second.value, &d)) return d;
  return fallback;
}

std::string ValueOr(const Settings& s, const std::string& name, const std::string& fallback) {
  auto it = s.find(name);
  return it == s.end() ? fallback : it->second.value;
}

}  // namespace

Result<Settings> ReadSettings(PgConn& conn) {
  PGSHIFT_ASSIGN_OR_RETURN(
      Rows rows, conn.Query("select name, coalesce(reset_val, setting, '') as value, "
                            "coalesce(boot_val, '') as boot_val, coalesce(unit, '') as unit, "
                            "vartype, context from pg_settings"));
  Settings out;
  for (size_t i = 0; i < rows.size(); ++i) {
    SettingInfo s{rows.Str(i, "name"), rows.Str(i, "value"),   rows.Str(i, "boot_val"),
                  rows.Str(i, "unit"), rows.Str(i, "vartype"), rows.Str(i, "context")};
    out[s.name] = s;
  }
  return out;
}

const std::vector<std::string>& StandbyMinimumSettings() {
  static const std::vector<std::string> kNames = {"max_connections", "max_worker_processes",
                                                  "max_wal_senders", "max_prepared_transactions",
                                                  "max_locks_per_transaction"};
  return kNames;
}

Result<std::string> NormalizeSettingValue(const SettingInfo& def, const std::string& raw) {
  const std::string v = Unquote(raw);
  if (def.vartype == "bool") {
    const std::string l = Lower(v);
    if (l.empty()) return InvalidArgument(def.name + ": empty value for a boolean setting");
    for (const char* on : {"on", "true", "yes", "1"}) {
      if (std::string(on).rfind(l, 0) == 0 && l != "o") return std::string("on");
    }
    for (const char* off : {"off", "false", "no", "0"}) {
      if (std::string(off).rfind(l, 0) == 0 && l != "o") return std::string("off");
    }
    return InvalidArgument(def.name + ": '" + raw + "' is not a boolean (use on or off)");
  }
  if (def.vartype == "integer" || def.vartype == "real") {
    size_t i = 0;
    while (i < v.size() && (std::isdigit(static_cast<unsigned char>(v[i])) || v[i] == '.' ||
                            v[i] == '-' || v[i] == '+' || v[i] == 'e' || v[i] == 'E')) {
      ++i;
    }
    double number;
    if (!ParseDouble(v.substr(0, i), &number)) {
      return InvalidArgument(def.name + ": '" + raw + "' is not a number");
    }
    const std::string suffix = Trim(v.substr(i));
    if (!suffix.empty()) {
      double from_f, to_f;
      char from_k, to_k;
      if (!UnitFactor(suffix, &from_f, &from_k)) {
        return InvalidArgument(def.name + ": unknown unit '" + suffix +
                               "' (memory: B kB MB GB TB; time: us ms s min h d)");
      }
      if (def.unit.empty() || !UnitFactor(def.unit, &to_f, &to_k) || from_k != to_k) {
        return InvalidArgument(def.name + ": '" + raw + "' has a unit this setting does not take" +
                               (def.unit.empty() ? "" : " (its unit is " + def.unit + ")"));
      }
      number = number * from_f / to_f;
    }
    return FormatNumber(number, def.vartype == "integer");
  }
  if (def.vartype == "enum") return Lower(v);
  return v;
}

Settings PlanTargetSettings(const Settings& source,
                            const std::map<std::string, std::string>& overrides,
                            std::vector<Finding>* problems) {
  Settings target = source;
  for (const auto& [name, raw] : overrides) {
    auto it = source.find(name);
    if (it == source.end()) {
      if (name.find('.') != std::string::npos) continue;  // extension-defined; not checkable
      problems->push_back(ParamFinding(Severity::kBlocking, name, raw, nullptr,
                                       "the target plan sets '" + name +
                                           "', which PostgreSQL does not know: it would refuse "
                                           "to start",
                                       "remove or correct '" + name + "' in the target settings"));
      continue;
    }
    auto norm = NormalizeSettingValue(it->second, raw);
    if (!norm.ok()) {
      problems->push_back(
          ParamFinding(Severity::kBlocking, name, raw, nullptr,
                       "the target plan's value is invalid: " + norm.status().message(),
                       "correct '" + name + "' in the target settings"));
      continue;
    }
    target[name].value = *norm;
  }
  return target;
}

std::vector<Finding> CompareParams(const Settings& source, const Settings& target,
                                   int logical_slots) {
  std::vector<Finding> out;
  std::set<std::string> handled;
  for (const std::string& name : StandbyMinimumSettings()) {
    handled.insert(name);
    auto s = source.find(name), t = target.find(name);
    if (s == source.end() || t == target.end()) continue;
    double sv = 0, tv = 0;
    ParseDouble(s->second.value, &sv);
    ParseDouble(t->second.value, &tv);
    nlohmann::json value = {{"source", AsJson(s->second)}, {"target", AsJson(t->second)}};
    nlohmann::json threshold = {{"min", AsJson(s->second)}};
    if (tv < sv) {
      out.push_back(ParamFinding(
          Severity::kBlocking, name, value, threshold,
          "target " + name + " = " + t->second.value + " is lower than the source's " +
              s->second.value + ": a standby refuses to start with it",
          "set " + name + " >= " + s->second.value + " on the target (or lower it on the source)"));
    } else {
      out.push_back(ParamFinding(
          Severity::kOk, name, value, threshold,
          "target " + name + " = " + t->second.value + " >= source " + s->second.value, ""));
    }
  }
  if (logical_slots > 0) {
    const std::string wal_level = ValueOr(target, "wal_level", "");
    handled.insert("wal_level");
    out.push_back(ParamFinding(
        wal_level == "logical" ? Severity::kOk : Severity::kBlocking, "wal_level",
        {{"target", wal_level}, {"logical_slots", logical_slots}}, "logical",
        wal_level == "logical"
            ? "target wal_level is logical, as the " + std::to_string(logical_slots) +
                  " CDC slot(s) need after promotion"
            : "target wal_level is '" + wal_level + "' but the source has " +
                  std::to_string(logical_slots) +
                  " logical slot(s) that must be recreated on the target after promotion",
        wal_level == "logical" ? "" : "set wal_level = logical on the target"));
    for (const char* name : {"max_replication_slots", "max_wal_senders"}) {
      const double tv = NumberOr(target, name, 0);
      handled.insert(name);
      if (tv < logical_slots) {
        out.push_back(ParamFinding(
            Severity::kBlocking, name, {{"target", tv}, {"logical_slots", logical_slots}},
            {{"min", logical_slots}},
            std::string("target ") + name + " = " + FormatNumber(tv, true) + " cannot serve the " +
                std::to_string(logical_slots) + " CDC slot(s) after promotion",
            std::string("set ") + name + " >= " + std::to_string(logical_slots) +
                " on the target"));
      }
    }
  }
  for (const auto& [name, t] : target) {
    if (handled.count(name) || PerInstanceSettings().count(name) || t.context == "internal") {
      continue;
    }
    auto s = source.find(name);
    const std::string sval = s == source.end() ? "" : s->second.value;
    if (sval == t.value) continue;
    const bool source_default = s == source.end() || sval == s->second.boot_val;
    const bool target_default = t.value == t.boot_val;
    if (source_default && target_default) continue;
    out.push_back(ParamFinding(
        Severity::kWarning, name,
        {{"source", s == source.end() ? nlohmann::json() : AsJson(s->second)},
         {"target", AsJson(t)}},
        nullptr,
        name + " differs: source " + (sval.empty() ? "(unset)" : sval) + ", target " + t.value,
        "make sure the difference is intended; set it on the target to match otherwise"));
  }
  return out;
}

std::vector<Finding> SourceCapacity(const Settings& source, int used_slots, int active_senders) {
  std::vector<Finding> out;
  const std::string wal_level = ValueOr(source, "wal_level", "");
  const bool wal_ok = wal_level == "replica" || wal_level == "logical";
  out.push_back(ParamFinding(
      wal_ok ? Severity::kOk : Severity::kBlocking, "source:wal_level", wal_level, "replica",
      "source wal_level is '" + wal_level + "'" +
          (wal_ok ? "" : ": a physical replica cannot be built from it"),
      wal_ok ? "" : "set wal_level = replica (or logical) on the source and restart it"));
  const double slots = NumberOr(source, "max_replication_slots", 0);
  const bool slot_free = slots - used_slots >= 1;
  out.push_back(ParamFinding(
      slot_free ? Severity::kOk : Severity::kBlocking, "source:max_replication_slots",
      {{"max", slots}, {"used", used_slots}}, {{"free_min", 1}},
      "source has " + FormatNumber(slots - used_slots, true) + " free replication slot(s)" +
          (slot_free ? "" : "; the replica needs one"),
      slot_free ? "" : "raise max_replication_slots on the source (restart) or drop unused slots"));
  const double senders = NumberOr(source, "max_wal_senders", 0);
  const bool senders_free = senders - active_senders >= 2;
  out.push_back(ParamFinding(
      senders_free ? Severity::kOk : Severity::kBlocking, "source:max_wal_senders",
      {{"max", senders}, {"active", active_senders}}, {{"free_min", 2}},
      "source has " + FormatNumber(senders - active_senders, true) + " free WAL sender(s)" +
          (senders_free ? "" : "; a streaming base backup needs two"),
      senders_free ? "" : "raise max_wal_senders on the source (restart)"));
  return out;
}

Result<ReverseReplicationLoad> ReadReverseReplicationLoad(PgConn& source,
                                                          const std::string& own_prefix) {
  // Background workers are every backend_type but the server's own
  // processes and client backends; parallel workers come and go.
  PGSHIFT_ASSIGN_OR_RETURN(
      Rows r,
      source.Query(
          "with own as (select oid from pg_subscription where $1 <> '' and "
          "left(subname, length($1)) = $1) "
          "select (select count(*) from pg_database where datallowconn and not datistemplate) "
          "as dbs, (select count(*) from pg_subscription where subenabled and oid not in "
          "(select oid from own)) as subs, (select count(*) from pg_replication_origin where "
          "roname not in (select 'pg_' || oid from own)) as origins, (select count(*) from "
          "pg_stat_activity where backend_type not in ('client backend', 'autovacuum launcher', "
          "'autovacuum worker', 'background writer', 'checkpointer', 'walwriter', 'archiver', "
          "'startup', 'walreceiver', 'walsender', 'parallel worker') and pid not in (select "
          "pid from pg_stat_subscription where pid is not null and subid in (select oid from "
          "own))) as workers",
          {own_prefix}));
  return ReverseReplicationLoad{.databases = static_cast<int>(r.Int(0, "dbs")),
                                .subscriptions = static_cast<int>(r.Int(0, "subs")),
                                .origins = static_cast<int>(r.Int(0, "origins")),
                                .background_workers = static_cast<int>(r.Int(0, "workers"))};
}

std::vector<Finding> ReverseReplicationCapacity(const Settings& source,
                                                const ReverseReplicationLoad& load,
                                                Severity short_severity) {
  struct Need {
    const char* name;
    int in_use;
    const char* what;
  };
  const Need needs[] = {
      {"max_logical_replication_workers", load.subscriptions, "an apply worker"},
      {"max_worker_processes", load.background_workers, "a background worker"},
      {"max_replication_slots", load.origins, "a replication origin"},
  };
  const std::string dbs = std::to_string(load.databases);
  std::vector<Finding> out;
  for (const Need& n : needs) {
    const double have = NumberOr(source, n.name, 0);
    const int need = n.in_use + load.databases;
    const bool enough = have >= need;
    Finding f = ParamFinding(
        enough ? Severity::kOk : short_severity, std::string("source:") + n.name,
        {{"source", have}, {"in_use", n.in_use}, {"databases", load.databases}}, {{"min", need}},
        "reverse replication subscribes the source to the target in each of its " + dbs +
            " database(s), " + n.what + " each: " + n.name + " = " + FormatNumber(have, true) +
            (enough ? " >= " : " < ") + std::to_string(need) + " needed (" +
            std::to_string(n.in_use) + " in use)",
        enough ? ""
               : std::string("set ") + n.name + " >= " + std::to_string(need) +
                     " on the source (restart), or a rollback after the switch loses the "
                     "target's writes");
    f.id = "reverse_replication";
    out.push_back(std::move(f));
  }
  return out;
}

}  // namespace pgshift::checks
