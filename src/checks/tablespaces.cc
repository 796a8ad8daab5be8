#include "checks/tablespaces.h"

#include <cctype>

#include "checks/hazards.h"

namespace pgshift::checks {
namespace {

constexpr const char* kId = "tablespaces";
constexpr const char* kInPlaceSetting = "allow_in_place_tablespaces";

bool TurnedOn(const std::map<std::string, std::string>& settings, const std::string& name) {
  auto it = settings.find(name);
  if (it == settings.end()) return false;
  std::string v;
  for (char c : it->second) {
    if (c != '\'' && c != ' ') v += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return v == "on" || v == "true" || v == "1" || v == "yes";
}

}  // namespace

Result<std::vector<TablespaceInfo>> ReadTablespaces(PgConn& conn) {
  PGSHIFT_ASSIGN_OR_RETURN(
      Rows rows,
      conn.Query("select oid::bigint as oid, spcname, pg_tablespace_location(oid) as loc "
                 "from pg_tablespace where spcname not in ('pg_default', 'pg_global') "
                 "order by oid"));
  std::vector<TablespaceInfo> out;
  for (size_t i = 0; i < rows.size(); ++i) {
    TablespaceInfo t{
        .oid = rows.Int(i, "oid"), .name = rows.Str(i, "spcname"), .location = rows.Str(i, "loc")};
    t.in_place = t.location.empty() || t.location[0] != '/';
    out.push_back(std::move(t));
  }
  return out;
}

std::string MappedTablespaceDir(const std::string& tablespace_dir, int64_t oid) {
  return tablespace_dir + "/" + std::to_string(oid);
}

std::vector<Finding> EvaluateTablespaces(
    const std::vector<TablespaceInfo>& tablespaces, const std::string& tablespace_dir,
    const std::map<std::string, std::string>& target_settings) {
  std::vector<Finding> out;
  const bool in_place_allowed = TurnedOn(target_settings, kInPlaceSetting);
  for (const TablespaceInfo& t : tablespaces) {
    Finding f{.id = kId,
              .subject = t.name,
              .value = {{"oid", t.oid}, {"location", t.location}, {"in_place", t.in_place}}};
    const std::string what = "tablespace " + t.name + " (oid " + std::to_string(t.oid) + ")";
    if (t.in_place) {
      f.severity = in_place_allowed ? Severity::kOk : Severity::kWarning;
      f.threshold = {{kInPlaceSetting, "on"}};
      f.message = what + " is in place (" + t.location + "): copied with the data directory" +
                  (in_place_allowed ? "; the target allows in-place tablespaces"
                                    : ", but a target recovering without " +
                                          std::string(kInPlaceSetting) + " = on stops at it");
      f.remedy = "run the target with " + std::string(kInPlaceSetting) + " = on";
    } else if (!tablespace_dir.empty()) {
      const std::string mapped = MappedTablespaceDir(tablespace_dir, t.oid);
      f.severity = Severity::kOk;
      f.value["target_location"] = mapped;
      f.message = what + " keeps its files in " + t.location + ", outside the data directory; " +
                  "the target gets its own copy in " + mapped;
      f.remedy = "make sure " + tablespace_dir + " has room for it";
    } else {
      f.severity = Severity::kWarning;
      f.message = what + " keeps its files in " + t.location +
                  ", outside the data directory: the target's base backup must map it to a "
                  "directory of its own";
      f.remedy = "pg_basebackup --tablespace-mapping=" + t.location + "=<target directory>";
    }
    out.push_back(std::move(f));
  }
  AddOkIfClean(out, kId, "no tablespaces besides pg_default and pg_global");
  return out;
}

}  // namespace pgshift::checks
