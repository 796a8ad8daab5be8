#include "checks/extensions.h"

#include <deque>
#include <filesystem>
#include <regex>
#include <sstream>

#include "checks/server_scan.h"
#include "common/os.h"

namespace pgshift::checks {

Result<std::vector<InstalledExtension>> ReadInstalledExtensions(PgConn& source) {
  return ReadInstalledExtensions(source, NewSessionsLike(source));
}

Result<std::vector<InstalledExtension>> ReadInstalledExtensions(
    PgConn& source, const DatabaseSessions& session_for) {
  PGSHIFT_ASSIGN_OR_RETURN(std::vector<std::string> dbs, ListDatabases(source));
  std::map<std::pair<std::string, std::string>, InstalledExtension> by_key;
  for (const std::string& db : dbs) {
    PGSHIFT_ASSIGN_OR_RETURN(PgConn * conn, session_for(db));
    PGSHIFT_ASSIGN_OR_RETURN(Rows rows,
                             conn->Query("select extname, extversion from pg_extension"));
    for (size_t i = 0; i < rows.size(); ++i) {
      auto key = std::make_pair(rows.Str(i, "extname"), rows.Str(i, "extversion"));
      auto& e = by_key[key];
      e.name = key.first;
      e.version = key.second;
      e.databases.push_back(db);
    }
  }
  std::vector<InstalledExtension> out;
  for (auto& [k, e] : by_key) out.push_back(std::move(e));
  return out;
}

std::set<std::string> ExtensionVersionsFromFiles(const std::string& name,
                                                 const std::vector<std::string>& files) {
  std::set<std::string> installable;
  std::multimap<std::string, std::string> updates;
  const std::string prefix = name + "--";
  for (const std::string& f : files) {
    if (f.rfind(prefix, 0) != 0 || f.size() < prefix.size() + 5) continue;
    if (f.compare(f.size() - 4, 4, ".sql") != 0) continue;
    const std::string rest = f.substr(prefix.size(), f.size() - prefix.size() - 4);
    const size_t sep = rest.find("--");
    if (sep == std::string::npos) {
      installable.insert(rest);
    } else {
      updates.emplace(rest.substr(0, sep), rest.substr(sep + 2));
    }
  }
  std::set<std::string> available = installable;
  std::deque<std::string> queue(installable.begin(), installable.end());
  while (!queue.empty()) {
    const std::string from = queue.front();
    queue.pop_front();
    auto [b, e] = updates.equal_range(from);
    for (auto it = b; it != e; ++it) {
      if (available.insert(it->second).second) queue.push_back(it->second);
    }
  }
  return available;
}

Result<ExtensionCatalog> ScanInstallation(const Installation& inst) {
  namespace fs = std::filesystem;
  ExtensionCatalog cat;
  cat.origin = inst.share_dir + "/extension";
  std::error_code ec;
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(cat.origin, ec)) {
    files.push_back(entry.path().filename().string());
  }
  if (ec) return NotFound("cannot list " + cat.origin + ": " + ec.message());
  const std::regex module_re(R"(^\s*module_pathname\s*=\s*'([^']*)')");
  for (const std::string& f : files) {
    if (f.size() < 9 || f.compare(f.size() - 8, 8, ".control") != 0) continue;
    const std::string name = f.substr(0, f.size() - 8);
    if (name.find("--") != std::string::npos) continue;  // secondary control file
    cat.versions[name] = ExtensionVersionsFromFiles(name, files);
    auto control = ReadFile(cat.origin + "/" + f);
    if (!control.ok()) continue;
    std::smatch m;
    std::string text = *control;
    std::istringstream lines(text);
    for (std::string line; std::getline(lines, line);) {
      if (!std::regex_search(line, m, module_re)) continue;
      std::string module = m[1].str();
      if (module.rfind("$libdir/", 0) == 0) module = inst.pkglib_dir + module.substr(7);
      if (module.find('/') == std::string::npos) module = inst.pkglib_dir + "/" + module;
      if (!PathExists(module) && !PathExists(module + ".so")) {
        cat.missing_module[name] = module + ".so";
      }
    }
  }
  return cat;
}

Result<ExtensionCatalog> ReadAvailableExtensions(PgConn& target) {
  PGSHIFT_ASSIGN_OR_RETURN(
      Rows rows, target.Query("select name, version from pg_available_extension_versions"));
  ExtensionCatalog cat;
  cat.origin = "server";
  for (size_t i = 0; i < rows.size(); ++i) {
    cat.versions[rows.Str(i, "name")].insert(rows.Str(i, "version"));
  }
  return cat;
}

std::vector<Finding> CompareExtensions(const std::vector<InstalledExtension>& installed,
                                       const ExtensionCatalog& target) {
  std::vector<Finding> out;
  nlohmann::json checked = nlohmann::json::array();
  for (const InstalledExtension& e : installed) {
    checked.push_back(e.name + " " + e.version);
    Finding f;
    f.id = "extensions";
    f.subject = e.name;
    f.threshold = {{"version", e.version}};
    const std::string where = "installed on the source at " + e.version + " in database(s) " +
                              nlohmann::json(e.databases).dump();
    auto it = target.versions.find(e.name);
    if (it == target.versions.end()) {
      f.severity = Severity::kBlocking;
      f.value = {{"source_version", e.version},
                 {"target_versions", nlohmann::json::array()},
                 {"databases", e.databases}};
      f.message = "extension " + e.name + " is " + where + " but not available on the target (" +
                  target.origin + ")";
      f.remedy = "install the " + e.name + " extension files (version " + e.version +
                 ") into the target installation, or point the target at one that has them";
    } else if (!it->second.count(e.version)) {
      f.severity = Severity::kBlocking;
      f.value = {{"source_version", e.version},
                 {"target_versions", it->second},
                 {"databases", e.databases}};
      f.message = "extension " + e.name + " is " + where + " but the target offers only " +
                  nlohmann::json(it->second).dump();
      f.remedy = "install version " + e.version + " of " + e.name +
                 " into the target installation (same package version as the source)";
    } else if (auto mm = target.missing_module.find(e.name); mm != target.missing_module.end()) {
      f.severity = Severity::kBlocking;
      f.value = {{"source_version", e.version}, {"missing_module", mm->second}};
      f.message = "extension " + e.name + " has its scripts on the target but its module " +
                  mm->second + " is missing";
      f.remedy = "install the " + e.name + " shared library into the target installation";
    } else {
      continue;
    }
    out.push_back(std::move(f));
  }
  if (out.empty()) {
    Finding ok;
    ok.id = "extensions";
    ok.severity = Severity::kOk;
    ok.value = {{"checked", checked}};
    ok.message = "all " + std::to_string(installed.size()) +
                 " extension(s) installed on the source are available on the target at the "
                 "same version";
    out.push_back(std::move(ok));
  }
  return out;
}

}  // namespace pgshift::checks
