// The local provider's own preflight and validate checks: the conditions
// under which it could not build or run the replica at all. The replication
// validation suite (src/checks) adds the deeper ones.
#include "checks/checks.h"
#include "common/os.h"
#include "provider/local/local_env.h"

namespace pgshift {
namespace {

using checks::Finding;
using checks::Severity;

Finding Ok(const std::string& id, const std::string& subject, nlohmann::json value,
           const std::string& message) {
  return {.id = id,
          .severity = Severity::kOk,
          .subject = subject,
          .value = std::move(value),
          .message = message};
}

Finding Block(const std::string& id, const std::string& subject, nlohmann::json value,
              nlohmann::json threshold, const std::string& message, const std::string& remedy) {
  return {.id = id,
          .severity = Severity::kBlocking,
          .subject = subject,
          .value = std::move(value),
          .threshold = std::move(threshold),
          .message = message,
          .remedy = remedy};
}

// Both sessions are on one server: the same cluster (system identifier) and
// data directory, which a standby of it would not share.
Result<bool> SameServer(PgConn& a, PgConn& b) {
  static constexpr const char* kWho =
      "select (select system_identifier from pg_control_system())::text || ':' || "
      "current_setting('data_directory') as who";
  PGSHIFT_ASSIGN_OR_RETURN(Rows ra, a.Query(kWho));
  PGSHIFT_ASSIGN_OR_RETURN(Rows rb, b.Query(kWho));
  return ra.Str(0, "who") == rb.Str(0, "who");
}

}  // namespace

checks::TargetPlan LocalEnv::Plan() const {
  checks::TargetPlan plan{.bin_dir = target_.spec().bin_dir,
                          .settings = spec_.target.settings,
                          .tablespace_dir = TablespaceDir()};
  // CreateReplica writes it before the operator's settings, which win.
  plan.settings.emplace(kInPlaceTablespaces, "on");
  return plan;
}

Result<std::vector<checks::Finding>> LocalEnv::PreflightFindings() {
  PGSHIFT_ASSIGN_OR_RETURN(PgConn * source, Source());
  PGSHIFT_ASSIGN_OR_RETURN(std::vector<Finding> out, checks::RunPreflight(*source, Plan()));
  PGSHIFT_ASSIGN_OR_RETURN(SourceInfo src, InspectSource());
  if (auto dir = LocalDataDirectory(*source); !dir.ok()) {
    out.push_back(Block("source_host", source_ep_.ToString(), "elsewhere", "this host",
                        dir.status().message(),
                        "run pgshiftd on the source's host, or use a provider for the source's "
                        "platform"));
  } else {
    out.push_back(Ok("source_host", source_ep_.ToString(), *dir,
                     "the source runs on this host (data directory " + *dir + ")"));
  }
  if (src.in_recovery) {
    out.push_back(Block("source_role", "", "standby", "primary", "the source is itself a standby",
                        "point source.conninfo at the primary"));
  }
  if (src.max_replication_slots - src.used_replication_slots < 1) {
    out.push_back(Block("replication_capacity", "max_replication_slots", src.used_replication_slots,
                        src.max_replication_slots,
                        "no free replication slot on the source for the replica",
                        "raise max_replication_slots (restart) or drop an unused slot"));
  } else {
    out.push_back(Ok("replication_capacity", "max_replication_slots",
                     src.max_replication_slots - src.used_replication_slots,
                     "a replication slot is free"));
  }
  if (!spec_.replication_conninfo.empty()) {
    // The target replicates from another address than pgshiftd's: it must
    // lead to the same server, reachable from here.
    PGSHIFT_ASSIGN_OR_RETURN(std::string ci, ReplicationConninfo());
    const std::string where = spec_.replication_conninfo;
    auto probe = WithConninfo(ci, {{"connect_timeout", std::to_string(options_.connect_timeout_s)},
                                   {"application_name", "pgshiftd"}});
    PGSHIFT_RETURN_IF_ERROR(probe.status());
    auto conn = PgConn::Connect(*probe, options_.connect_timeout_s);
    Result<bool> same = conn.ok() ? SameServer(*source, **conn) : Result<bool>(conn.status());
    if (!same.ok()) {
      out.push_back(Block("replication_endpoint", where, "unreachable", "reachable",
                          "the target cannot reach the source at source.replication_conninfo: " +
                              same.status().message(),
                          "fix source.replication_conninfo, or the network between them"));
    } else if (!*same) {
      out.push_back(Block("replication_endpoint", where, "another server", "the source",
                          "source.replication_conninfo leads to another server than "
                          "source.conninfo",
                          "point source.replication_conninfo at the source"));
    } else {
      out.push_back(Ok("replication_endpoint", where, "reachable",
                       "the target reaches the source at source.replication_conninfo"));
    }
  }

  const std::string& dir = spec_.target.data_dir;
  if (target_.Exists()) {
    auto marker = ReadFile(dir + kMarkerFile);
    if (!marker.ok() || *marker != id_) {
      out.push_back(Block("target_dir", dir, "in use", "empty",
                          "target.data_dir already holds a PostgreSQL cluster",
                          "choose an empty or non-existent directory for target.data_dir"));
    }
  } else if (PortOpen(kTargetHost, spec_.target.port)) {
    out.push_back(Block("target_port", std::to_string(spec_.target.port), "in use", "free",
                        "something already listens on " + TargetEndpoint().ToString(),
                        "choose a free target.port"));
  }
  return out;
}

Result<std::vector<checks::Finding>> LocalEnv::ValidateFindings() {
  PGSHIFT_ASSIGN_OR_RETURN(PgConn * source, Source());
  PGSHIFT_ASSIGN_OR_RETURN(PgConn * target, Target());
  // Each database's extensions are read on the standby sessions the cutover
  // keeps open (a standby in sync has the source's catalogs): a new backend
  // per database here cost ~40 ms of CPU each just before the hold.
  std::unique_ptr<PgConn> opened;
  checks::CheckOptions options;
  options.source_databases = [&](const std::string& db) -> Result<PgConn*> {
    for (auto& [name, session] : standby_sessions_) {
      if (name == db && session && session->Exec("select 1").ok()) return session.get();
    }
    PGSHIFT_ASSIGN_OR_RETURN(opened, checks::ConnectSameServer(*source, db));
    return opened.get();
  };
  PGSHIFT_ASSIGN_OR_RETURN(std::vector<Finding> out,
                           checks::RunValidate(*source, *target, Plan(), options));
  PGSHIFT_ASSIGN_OR_RETURN(std::vector<Finding> tablespaces, TablespaceFindings());
  out.insert(out.end(), tablespaces.begin(), tablespaces.end());
  const std::string slot = SlotNameFor(id_);
  PGSHIFT_ASSIGN_OR_RETURN(
      Rows rows,
      source->Query("select active from pg_replication_slots where slot_name = $1", {slot}));
  if (rows.empty() || !rows.Bool(0, "active")) {
    out.push_back(Block("replica_streaming", slot, rows.empty() ? "missing" : "inactive", "active",
                        "the replica is not streaming from its slot",
                        "check the target's log (" + target_.LogFile() + ")"));
  } else {
    out.push_back(Ok("replica_streaming", slot, "active", "the replica streams from its slot"));
  }
  return out;
}

std::vector<checks::Finding> LocalEnv::SyncFindings() {
  std::vector<Finding> out = monitor_.Findings();
  out.insert(out.end(), tablespace_findings_.begin(), tablespace_findings_.end());
  return out;
}

}  // namespace pgshift
