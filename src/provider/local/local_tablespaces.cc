// The source's tablespaces on the target (checks/tablespaces.h): each one
// with a directory of its own is copied into <target data_dir>.tblspc/<oid>
// by the base backup; one the source creates later reaches the standby only
// as a WAL record, which it replays by linking to the source's own directory
// on this host (measured: the standby then writes into the source's files).
// The guard finds that from the files themselves and stops the standby.
#include <filesystem>

#include "provider/local/local_env.h"

namespace pgshift {
namespace {

// pg_basebackup's --tablespace-mapping separates OLD and NEW with '=': a
// path's own '=' is escaped.
std::string EscapeMapping(const std::string& path) {
  std::string out;
  for (char c : path) {
    if (c == '=') out += '\\';
    out += c;
  }
  return out;
}

}  // namespace

std::string LocalEnv::TablespaceDir() const { return spec_.target.data_dir + ".tblspc"; }

Result<std::vector<std::string>> LocalEnv::TablespaceMappings() {
  PGSHIFT_ASSIGN_OR_RETURN(auto tablespaces,
                           OnSource<std::vector<checks::TablespaceInfo>>(checks::ReadTablespaces));
  std::vector<std::string> args;
  for (const auto& t : tablespaces) {
    if (t.in_place) continue;  // inside the data directory: copied with it
    args.push_back("--tablespace-mapping=" + EscapeMapping(t.location) + "=" +
                   EscapeMapping(checks::MappedTablespaceDir(TablespaceDir(), t.oid)));
  }
  return args;
}

Result<std::vector<checks::Finding>> LocalEnv::TablespaceFindings() {
  PGSHIFT_ASSIGN_OR_RETURN(auto tablespaces,
                           OnSource<std::vector<checks::TablespaceInfo>>(checks::ReadTablespaces));
  std::vector<checks::Finding> out;
  for (const auto& t : tablespaces) {
    if (t.in_place) continue;
    const std::string mapped = checks::MappedTablespaceDir(TablespaceDir(), t.oid);
    std::error_code ec;
    const auto link = std::filesystem::read_symlink(
        spec_.target.data_dir + "/pg_tblspc/" + std::to_string(t.oid), ec);
    if (!ec && link == mapped) continue;
    const std::string now = ec ? "the standby has not replayed it (or could not)"
                               : "the standby replayed it as a link to " + link.string() +
                                     (link == t.location ? ", the source's own directory" : "");
    out.push_back(
        {.id = checks::kTablespaceCreatedDuringSync,
         .severity = checks::Severity::kBlocking,
         .subject = t.name,
         .value = {{"oid", t.oid}, {"location", t.location}, {"standby_link", link.string()}},
         .threshold = {{"target_location", mapped}},
         .message = "tablespace " + t.name + " (" + t.location +
                    ") was created on the source after the base backup, so the target has no "
                    "copy of its own: " +
                    now +
                    "; the standby is stopped so that it cannot "
                    "write into the source's files",
         .remedy = "roll back this migration and create it again: the new base backup copies "
                   "the tablespace into " +
                   mapped + "; create no tablespace on the source until the cutover"});
  }
  if (out.empty()) {
    out.push_back({.id = checks::kTablespaceCreatedDuringSync,
                   .severity = checks::Severity::kOk,
                   .message = "every tablespace of the source has its own copy on the target"});
  }
  return out;
}

Status LocalEnv::GuardTablespaces() {
  PGSHIFT_ASSIGN_OR_RETURN(tablespace_findings_, TablespaceFindings());
  std::string blocking;
  for (const auto& f : tablespace_findings_) {
    if (f.Blocks()) blocking += (blocking.empty() ? "" : "; ") + f.message;
  }
  if (blocking.empty()) return Status::OK();
  Status stopped = StopTarget();
  if (!stopped.ok()) blocking += " (stopping the standby failed: " + stopped.message() + ")";
  return FailedPrecondition(blocking + "; " + tablespace_findings_.front().remedy);
}

}  // namespace pgshift
