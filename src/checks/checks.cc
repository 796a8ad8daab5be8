#include "checks/checks.h"

#include <algorithm>
#include <cstdio>

#include "checks/extensions.h"
#include "checks/install.h"
#include "checks/params.h"

namespace pgshift::checks {

namespace {

void Append(std::vector<Finding>& out, std::vector<Finding> more) {
  for (Finding& f : more) out.push_back(std::move(f));
}

struct SourceCounts {
  int logical_slots = 0;
  int used_slots = 0;
  int active_senders = 0;
};

SourceCounts CountSlots(const SlotSnapshot& snap, int active_senders) {
  SourceCounts c;
  c.used_slots = static_cast<int>(snap.slots.size());
  for (const SlotInfo& s : snap.slots) c.logical_slots += s.slot_type == "logical";
  c.active_senders = active_senders;
  return c;
}

Result<int> ActiveSenders(PgConn& source) {
  PGSHIFT_ASSIGN_OR_RETURN(Rows rows,
                           source.Query("select count(*) as n from pg_stat_replication"));
  return static_cast<int>(rows.Int(0, "n"));
}

// The checks that only read the source.
Status AddSourceHazards(PgConn& source, const CheckOptions& options, std::vector<Finding>& out) {
  PGSHIFT_ASSIGN_OR_RETURN(auto unlogged, CheckUnloggedTables(source));
  Append(out, std::move(unlogged));
  PGSHIFT_ASSIGN_OR_RETURN(auto prepared, CheckPreparedXacts(source));
  Append(out, std::move(prepared));
  PGSHIFT_ASSIGN_OR_RETURN(auto longtx, CheckLongTransactions(source, options.hazards));
  Append(out, std::move(longtx));
  PGSHIFT_ASSIGN_OR_RETURN(auto nopk, CheckNoPrimaryKey(source));
  Append(out, std::move(nopk));
  PGSHIFT_ASSIGN_OR_RETURN(auto lobs, CheckLargeObjects(source));
  Append(out, std::move(lobs));
  return Status::OK();
}

}  // namespace

Result<std::vector<Finding>> RunPreflight(PgConn& source, const TargetPlan& target) {
  return RunPreflight(source, target, CheckOptions{});
}

Result<std::vector<Finding>> RunPreflight(PgConn& source, const TargetPlan& target,
                                          const CheckOptions& options) {
  PGSHIFT_ASSIGN_OR_RETURN(Installation inst, ResolveInstallation(target.bin_dir));
  std::vector<Finding> out;

  PGSHIFT_ASSIGN_OR_RETURN(SlotSnapshot slots, ReadSlots(source));
  Append(out, EvaluateSlots(slots, options.slots));

  PGSHIFT_ASSIGN_OR_RETURN(Settings src_settings, ReadSettings(source));
  PGSHIFT_ASSIGN_OR_RETURN(int senders, ActiveSenders(source));
  const SourceCounts counts = CountSlots(slots, senders);
  std::vector<Finding> params;
  const Settings planned = PlanTargetSettings(src_settings, target.settings, &params);
  Append(params, CompareParams(src_settings, planned, counts.logical_slots));
  Append(params, SourceCapacity(src_settings, counts.used_slots, counts.active_senders));
  Append(out, std::move(params));
  // Without the capacity a rollback after the switch loses the target's
  // writes (and asks first): a warning, as for a table without a key.
  PGSHIFT_ASSIGN_OR_RETURN(ReverseReplicationLoad reverse,
                           ReadReverseReplicationLoad(source, /*own_prefix=*/""));
  Append(out, ReverseReplicationCapacity(src_settings, reverse, Severity::kWarning));

  PGSHIFT_ASSIGN_OR_RETURN(auto installed, ReadInstalledExtensions(source));
  PGSHIFT_ASSIGN_OR_RETURN(ExtensionCatalog catalog, ScanInstallation(inst));
  Append(out, CompareExtensions(installed, catalog));

  PGSHIFT_RETURN_IF_ERROR(AddSourceHazards(source, options, out));

  PGSHIFT_ASSIGN_OR_RETURN(auto tablespaces, ReadTablespaces(source));
  Append(out, EvaluateTablespaces(tablespaces, target.tablespace_dir, target.settings));

  PGSHIFT_ASSIGN_OR_RETURN(ServerIdentity src_id, ReadServerIdentity(source));
  ServerIdentity tgt_id;
  PGSHIFT_ASSIGN_OR_RETURN(tgt_id.major, InstalledMajorVersion(inst.bin_dir));
  auto arch = ElfArchitecture(inst.bin_dir + "/postgres");
  if (arch.ok()) tgt_id.arch = *arch;
  Append(out, CompareVersion(src_id, tgt_id, inst.bin_dir));
  return out;
}

Result<std::vector<Finding>> RunValidate(PgConn& source, PgConn& target, const TargetPlan& plan) {
  return RunValidate(source, target, plan, CheckOptions{});
}

Result<std::vector<Finding>> RunValidate(PgConn& source, PgConn& target, const TargetPlan& plan,
                                         const CheckOptions& options) {
  std::vector<Finding> out;
  PGSHIFT_ASSIGN_OR_RETURN(SlotSnapshot slots, ReadSlots(source));
  Append(out, EvaluateSlots(slots, options.slots));

  PGSHIFT_ASSIGN_OR_RETURN(Settings src_settings, ReadSettings(source));
  PGSHIFT_ASSIGN_OR_RETURN(Settings tgt_settings, ReadSettings(target));
  const SourceCounts counts = CountSlots(slots, 0);
  Append(out, CompareParams(src_settings, tgt_settings, counts.logical_slots));

  PGSHIFT_ASSIGN_OR_RETURN(
      auto installed,
      ReadInstalledExtensions(
          source, options.source_databases ? options.source_databases : NewSessionsLike(source)));
  PGSHIFT_ASSIGN_OR_RETURN(ExtensionCatalog catalog, ReadAvailableExtensions(target));
  Append(out, CompareExtensions(installed, catalog));

  PGSHIFT_ASSIGN_OR_RETURN(ServerIdentity src_id, ReadServerIdentity(source));
  PGSHIFT_ASSIGN_OR_RETURN(ServerIdentity tgt_id, ReadServerIdentity(target));
  Append(out, CompareVersion(src_id, tgt_id, "running target"));
  return out;
}

Result<nlohmann::json> RunCheckCommand(const std::string& source_conninfo,
                                       const std::string& target_install_dir) {
  PGSHIFT_ASSIGN_OR_RETURN(auto source, PgConn::Connect(source_conninfo));
  TargetPlan plan;
  plan.bin_dir = target_install_dir;
  PGSHIFT_ASSIGN_OR_RETURN(auto findings, RunPreflight(*source, plan));
  return FindingsToJson(findings);
}

std::string RenderFindingsTable(const std::vector<Finding>& findings) {
  size_t w_id = 2, w_subject = 7;
  for (const Finding& f : findings) {
    w_id = std::max(w_id, f.id.size());
    w_subject = std::max(w_subject, f.subject.size());
  }
  w_subject = std::min<size_t>(w_subject, 40);
  auto pad = [](std::string s, size_t w) {
    if (s.size() < w) s.append(w - s.size(), ' ');
    return s;
  };
  std::string out =
      pad("SEVERITY", 10) + pad("ID", w_id + 2) + pad("SUBJECT", w_subject + 2) + "MESSAGE\n";
  int blocking = 0, warnings = 0;
  for (const Finding& f : findings) {
    std::string sev = SeverityName(f.severity);
    if (f.overridden) sev += "*";
    if (f.Blocks()) ++blocking;
    if (f.severity == Severity::kWarning) ++warnings;
    out += pad(sev, 10) + pad(f.id, w_id + 2) +
           pad(f.subject.empty() ? "-" : f.subject, w_subject + 2) + f.message + "\n";
    if (f.overridden) out += std::string(10, ' ') + "overridden: " + f.override_reason + "\n";
    if (!f.remedy.empty() && f.severity != Severity::kOk) {
      out += std::string(10, ' ') + "remedy: " + f.remedy + "\n";
    }
  }
  out += std::to_string(findings.size()) + " finding(s): " + std::to_string(blocking) +
         " blocking, " + std::to_string(warnings) + " warning(s)\n";
  return out;
}

Status ApplyOverride(std::vector<Finding>& findings, const std::string& id,
                     const std::string& subject, const std::string& reason) {
  if (reason.find_first_not_of(" \t\n") == std::string::npos) {
    return InvalidArgument("an override needs a reason; say why finding '" + id + "' (" +
                           (subject.empty() ? "whole cluster" : subject) + ") may be ignored");
  }
  bool found = false;
  for (Finding& f : findings) {
    if (f.id == id && f.subject == subject && f.severity == Severity::kBlocking) {
      f.overridden = true;
      f.override_reason = reason;
      found = true;
    }
  }
  if (found) return Status::OK();
  std::string known;
  for (const Finding& f : findings) {
    if (f.severity != Severity::kBlocking) continue;
    known +=
        (known.empty() ? "" : ", ") + f.id + " (" + (f.subject.empty() ? "\"\"" : f.subject) + ")";
  }
  return NotFound(
      "no blocking finding '" + id + "' with subject '" + subject + "' to override" +
      (known.empty() ? "; there are no blocking findings" : "; blocking findings are: " + known));
}

bool AnyBlocking(const std::vector<Finding>& findings) {
  return std::any_of(findings.begin(), findings.end(), [](const Finding& f) { return f.Blocks(); });
}

}  // namespace pgshift::checks
