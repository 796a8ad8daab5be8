#include "model/migration.h"

#include <charconv>
#include <set>

#include "model/json_fields.h"
#include "pg/conn.h"

namespace pgshift {
namespace {

using json = nlohmann::json;

// Rejects keys of `obj` not in `allowed`, naming the first one.
Status OnlyKnownKeys(const json& obj, const std::set<std::string>& allowed,
                     const std::string& where) {
  if (!obj.is_object()) return InvalidArgument(where + " must be a JSON object");
  for (const auto& [k, v] : obj.items()) {
    if (!allowed.count(k)) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      return InvalidArgument("unknown field '" + where + "." + k + "' (allowed: " + list + ")");
    }
  }
  return Status::OK();
}

template <typename T>
Status Read(const json& obj, const std::string& key, const std::string& where, T* out) {
  if (!obj.contains(key)) return Status::OK();
  Status st = json_fields::FromValue(obj.at(key), out);
  if (!st.ok()) return InvalidArgument("field '" + where + "." + key + "' " + st.message());
  return Status::OK();
}

// A "port" in `kv` is one TCP port (the provider takes an endpoint from it).
Status CheckPort(const std::map<std::string, std::string>& kv, const std::string& where) {
  auto port = kv.find("port");
  if (port == kv.end()) return Status::OK();
  int n = 0;
  auto [end, ec] =
      std::from_chars(port->second.data(), port->second.data() + port->second.size(), n);
  if (ec != std::errc() || end != port->second.data() + port->second.size() || n <= 0 ||
      n > 65535) {
    return InvalidArgument(where + ": port '" + port->second + "' is not a TCP port (1-65535)");
  }
  return Status::OK();
}

}  // namespace

const char* OnAnomalyName(OnAnomaly a) { return a == OnAnomaly::kRollback ? "rollback" : "alert"; }

std::string SlotNameFor(const std::string& migration_id) {
  std::string s = "pgshift_";
  for (char c : migration_id) s += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  return s;
}

std::string BlockingSummary(const json& findings) {
  std::string s;
  for (const auto& f : findings) {
    if (f.value("severity", "") == "blocking" && !f.value("overridden", false)) {
      s += (s.empty() ? "" : "; ") + f.value("id", "") +
           (f.value("subject", "").empty() ? "" : "(" + f.value("subject", "") + ")") + ": " +
           f.value("message", "");
    }
  }
  return s;
}

bool OverrideNames(const json& request, const json& finding) {
  const std::string subject = request.value("subject", "");
  return finding.value("severity", "") == "blocking" &&
         finding.value("id", "") == request.value("finding", "") &&
         (subject.empty() || finding.value("subject", "") == subject);
}

Result<MigrationSpec> MigrationSpec::FromJson(const json& j) {
  if (!j.is_object()) return InvalidArgument("the migration spec must be a JSON object");
  PGSHIFT_RETURN_IF_ERROR(
      OnlyKnownKeys(j, {"name", "source", "target", "router", "options"}, "spec"));
  MigrationSpec s;
  PGSHIFT_RETURN_IF_ERROR(Read(j, "name", "spec", &s.name));
  if (s.name.empty())
    return InvalidArgument("field 'spec.name' is required (a label for the migration)");

  if (!j.contains("source"))
    return InvalidArgument(
        "field 'spec.source' is required: {\"conninfo\":\"host=... port=... user=...\"}");
  const json& src = j.at("source");
  PGSHIFT_RETURN_IF_ERROR(OnlyKnownKeys(src, {"conninfo", "replication_conninfo"}, "source"));
  PGSHIFT_RETURN_IF_ERROR(Read(src, "conninfo", "source", &s.source_conninfo));
  if (s.source_conninfo.empty()) return InvalidArgument("field 'source.conninfo' is required");
  auto source_kv = ParseConninfo(s.source_conninfo);
  PGSHIFT_RETURN_IF_ERROR(source_kv.status().Wrap("source.conninfo"));
  // The provider takes the source's endpoint from it: one TCP port.
  PGSHIFT_RETURN_IF_ERROR(CheckPort(*source_kv, "source.conninfo"));
  PGSHIFT_RETURN_IF_ERROR(Read(src, "replication_conninfo", "source", &s.replication_conninfo));
  if (!s.replication_conninfo.empty()) {
    auto kv = ParseConninfo(s.replication_conninfo);
    PGSHIFT_RETURN_IF_ERROR(kv.status().Wrap("source.replication_conninfo"));
    const std::set<std::string> allowed(std::begin(kReplicationConninfoKeys),
                                        std::end(kReplicationConninfoKeys));
    for (const auto& [k, v] : *kv) {
      if (!allowed.count(k)) {
        return InvalidArgument("source.replication_conninfo: '" + k +
                               "' cannot be set there: it says only where and how the target "
                               "reaches the source (host, hostaddr, port, ssl*, keepalives*, "
                               "connect_timeout, tcp_user_timeout); the login is "
                               "source.conninfo's");
      }
    }
    PGSHIFT_RETURN_IF_ERROR(CheckPort(*kv, "source.replication_conninfo"));
  }

  if (!j.contains("target"))
    return InvalidArgument(
        "field 'spec.target' is required: {\"data_dir\":\"/abs/path\",\"port\":N}");
  const json& t = j.at("target");
  PGSHIFT_RETURN_IF_ERROR(OnlyKnownKeys(
      t, {"provider", "data_dir", "port", "bin_dir", "os_user", "settings"}, "target"));
  PGSHIFT_RETURN_IF_ERROR(Read(t, "provider", "target", &s.target.provider));
  PGSHIFT_RETURN_IF_ERROR(Read(t, "data_dir", "target", &s.target.data_dir));
  PGSHIFT_RETURN_IF_ERROR(Read(t, "port", "target", &s.target.port));
  PGSHIFT_RETURN_IF_ERROR(Read(t, "bin_dir", "target", &s.target.bin_dir));
  PGSHIFT_RETURN_IF_ERROR(Read(t, "os_user", "target", &s.target.os_user));
  PGSHIFT_RETURN_IF_ERROR(Read(t, "settings", "target", &s.target.settings));
  if (s.target.provider != "local") {
    return InvalidArgument("target.provider '" + s.target.provider +
                           "' is not available in this build (available: local)");
  }
  if (s.target.data_dir.empty() || s.target.data_dir[0] != '/') {
    return InvalidArgument("field 'target.data_dir' must be an absolute path");
  }
  if (s.target.port <= 0 || s.target.port > 65535) {
    return InvalidArgument("field 'target.port' must be a TCP port (1-65535)");
  }

  if (j.contains("router")) {
    s.router = j.at("router");
    if (!s.router.is_object() || !s.router.contains("type")) {
      return InvalidArgument(
          "field 'spec.router' must be an object with a 'type' (pgbouncer, proxy or none)");
    }
  }

  if (j.contains("options")) {
    const json& o = j.at("options");
    // clang-format off
    static const std::set<std::string> kOptionKeys = {
        "lag_threshold_bytes", "lag_threshold_seconds", "sustain_seconds", "auto_cutover",
        "auto_finalize", "verify_seconds", "hold_timeout_ms", "drain_timeout_ms", "poll_ms",
        "max_auto_cutover_attempts", "max_step_attempts", "parity", "parity_before_promote_ms",
        "parity_load_pct", "basebackup_max_rate_kbps", "cdc_drain_timeout_ms", "on_anomaly",
        "health_max_error_rate", "health_max_p99_ratio", "health_min_samples", "hold_lease_ms",
        "reverse_replication", "rollback_apply_timeout_ms"};
    // clang-format on
    PGSHIFT_RETURN_IF_ERROR(OnlyKnownKeys(o, kOptionKeys, "options"));
    auto& op = s.options;
    double sustain_s = op.sustain_ms / 1000.0, verify_s = op.verify_ms / 1000.0;
    PGSHIFT_RETURN_IF_ERROR(Read(o, "lag_threshold_bytes", "options", &op.lag_threshold_bytes));
    PGSHIFT_RETURN_IF_ERROR(Read(o, "lag_threshold_seconds", "options", &op.lag_threshold_seconds));
    PGSHIFT_RETURN_IF_ERROR(Read(o, "sustain_seconds", "options", &sustain_s));
    PGSHIFT_RETURN_IF_ERROR(Read(o, "auto_cutover", "options", &op.auto_cutover));
    PGSHIFT_RETURN_IF_ERROR(Read(o, "auto_finalize", "options", &op.auto_finalize));
    PGSHIFT_RETURN_IF_ERROR(Read(o, "verify_seconds", "options", &verify_s));
    PGSHIFT_RETURN_IF_ERROR(Read(o, "hold_timeout_ms", "options", &op.hold_timeout_ms));
    PGSHIFT_RETURN_IF_ERROR(Read(o, "drain_timeout_ms", "options", &op.drain_timeout_ms));
    PGSHIFT_RETURN_IF_ERROR(Read(o, "poll_ms", "options", &op.poll_ms));
    PGSHIFT_RETURN_IF_ERROR(
        Read(o, "max_auto_cutover_attempts", "options", &op.max_auto_cutover_attempts));
    PGSHIFT_RETURN_IF_ERROR(Read(o, "max_step_attempts", "options", &op.max_step_attempts));
    PGSHIFT_RETURN_IF_ERROR(Read(o, "parity", "options", &op.parity));
    PGSHIFT_RETURN_IF_ERROR(
        Read(o, "parity_before_promote_ms", "options", &op.parity_before_promote_ms));
    PGSHIFT_RETURN_IF_ERROR(Read(o, "parity_load_pct", "options", &op.parity_load_pct));
    PGSHIFT_RETURN_IF_ERROR(
        Read(o, "basebackup_max_rate_kbps", "options", &op.basebackup_max_rate_kbps));
    PGSHIFT_RETURN_IF_ERROR(Read(o, "cdc_drain_timeout_ms", "options", &op.cdc_drain_timeout_ms));
    std::string on_anomaly = OnAnomalyName(op.on_anomaly);
    PGSHIFT_RETURN_IF_ERROR(Read(o, "on_anomaly", "options", &on_anomaly));
    if (on_anomaly != "rollback" && on_anomaly != "alert")
      return InvalidArgument("options.on_anomaly must be \"rollback\" or \"alert\"");
    op.on_anomaly = on_anomaly == "rollback" ? OnAnomaly::kRollback : OnAnomaly::kAlert;
    PGSHIFT_RETURN_IF_ERROR(Read(o, "health_max_error_rate", "options", &op.health_max_error_rate));
    PGSHIFT_RETURN_IF_ERROR(Read(o, "health_max_p99_ratio", "options", &op.health_max_p99_ratio));
    PGSHIFT_RETURN_IF_ERROR(Read(o, "health_min_samples", "options", &op.health_min_samples));
    if (op.health_max_error_rate < 0 || op.health_max_error_rate > 1 ||
        op.health_max_p99_ratio < 1 || op.health_min_samples < 1) {
      return InvalidArgument(
          "options.health_max_error_rate must be from 0 to 1, health_max_p99_ratio >= 1 and "
          "health_min_samples >= 1");
    }
    PGSHIFT_RETURN_IF_ERROR(Read(o, "hold_lease_ms", "options", &op.hold_lease_ms));
    PGSHIFT_RETURN_IF_ERROR(Read(o, "reverse_replication", "options", &op.reverse_replication));
    PGSHIFT_RETURN_IF_ERROR(
        Read(o, "rollback_apply_timeout_ms", "options", &op.rollback_apply_timeout_ms));
    op.sustain_ms = static_cast<int64_t>(sustain_s * 1000);
    op.verify_ms = static_cast<int64_t>(verify_s * 1000);
    if (op.lag_threshold_bytes < 0 || op.lag_threshold_seconds < 0 || op.sustain_ms < 0 ||
        op.verify_ms < 0) {
      return InvalidArgument("options must not be negative");
    }
    if (op.hold_timeout_ms <= 0 || op.drain_timeout_ms <= 0 || op.poll_ms <= 0 ||
        op.cdc_drain_timeout_ms <= 0 || op.rollback_apply_timeout_ms <= 0) {
      return InvalidArgument(
          "options.hold_timeout_ms, drain_timeout_ms, cdc_drain_timeout_ms, "
          "rollback_apply_timeout_ms and poll_ms must be > 0");
    }
    if (op.hold_lease_ms < kMinHoldLeaseMs || op.hold_lease_ms > kMaxHoldLeaseMs) {
      return InvalidArgument("options.hold_lease_ms must be from " +
                             std::to_string(kMinHoldLeaseMs) + " to " +
                             std::to_string(kMaxHoldLeaseMs));
    }
    if (op.max_auto_cutover_attempts < 1 || op.max_step_attempts < 1) {
      return InvalidArgument(
          "options.max_auto_cutover_attempts and max_step_attempts must be >= 1");
    }
    if (op.parity_load_pct < 1 || op.parity_load_pct > 100) {
      return InvalidArgument(
          "options.parity_load_pct must be a percentage from 1 to 100 (100 = "
          "scan without pauses)");
    }
    // pg_basebackup accepts 32 kB/s to 1 GB/s.
    if (op.basebackup_max_rate_kbps != 0 &&
        (op.basebackup_max_rate_kbps < 32 || op.basebackup_max_rate_kbps > 1024 * 1024)) {
      return InvalidArgument(
          "options.basebackup_max_rate_kbps must be 0 (no limit) or from 32 "
          "to 1048576 kB/s");
    }
  }
  return s;
}

Result<std::string> MigrationSpec::ReplicationConninfo() const {
  if (replication_conninfo.empty()) return source_conninfo;
  PGSHIFT_ASSIGN_OR_RETURN(auto kv, ParseConninfo(replication_conninfo));
  return WithConninfo(source_conninfo, kv);
}

json MigrationSpec::ToJson() const {
  json source = {{"conninfo", source_conninfo}};
  if (!replication_conninfo.empty()) source["replication_conninfo"] = replication_conninfo;
  return {
      {"name", name},
      {"source", source},
      {"target",
       {{"provider", target.provider},
        {"data_dir", target.data_dir},
        {"port", target.port},
        {"bin_dir", target.bin_dir},
        {"os_user", target.os_user},
        {"settings", target.settings}}},
      {"router", router},
      {"options",
       {{"lag_threshold_bytes", options.lag_threshold_bytes},
        {"lag_threshold_seconds", options.lag_threshold_seconds},
        {"sustain_seconds", options.sustain_ms / 1000.0},
        {"auto_cutover", options.auto_cutover},
        {"auto_finalize", options.auto_finalize},
        {"verify_seconds", options.verify_ms / 1000.0},
        {"hold_timeout_ms", options.hold_timeout_ms},
        {"drain_timeout_ms", options.drain_timeout_ms},
        {"poll_ms", options.poll_ms},
        {"max_auto_cutover_attempts", options.max_auto_cutover_attempts},
        {"max_step_attempts", options.max_step_attempts},
        {"parity", options.parity},
        {"parity_before_promote_ms", options.parity_before_promote_ms},
        {"parity_load_pct", options.parity_load_pct},
        {"basebackup_max_rate_kbps", options.basebackup_max_rate_kbps},
        {"cdc_drain_timeout_ms", options.cdc_drain_timeout_ms},
        {"on_anomaly", OnAnomalyName(options.on_anomaly)},
        {"health_max_error_rate", options.health_max_error_rate},
        {"health_max_p99_ratio", options.health_max_p99_ratio},
        {"health_min_samples", options.health_min_samples},
        {"hold_lease_ms", options.hold_lease_ms},
        {"reverse_replication", options.reverse_replication},
        {"rollback_apply_timeout_ms", options.rollback_apply_timeout_ms}}},
  };
}

}  // namespace pgshift
