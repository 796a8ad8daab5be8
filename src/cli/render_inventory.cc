#include "cli/render_inventory.h"

#include <algorithm>
#include <sstream>
#include <vector>

namespace pgshift::cli {
namespace {

using nlohmann::json;

std::string Str(const json& j, const char* key, const std::string& none = "-") {
  if (!j.is_object() || !j.contains(key)) return none;
  const json& v = j[key];
  if (v.is_string()) return v.get<std::string>().empty() ? none : v.get<std::string>();
  if (v.is_number() || v.is_boolean()) return v.dump();
  return none;
}

std::string Join(const json& arr) {
  if (!arr.is_array() || arr.empty()) return "-";
  std::string out;
  for (const auto& v : arr)
    out += (out.empty() ? "" : ",") + (v.is_string() ? v.get<std::string>() : v.dump());
  return out;
}

std::string Source(const json& db) {
  const json s = db.value("source", json::object());
  if (!s.is_object() || s.empty()) return "-";
  return Str(s, "host") + ":" + Str(s, "port") + "/" + Str(s, "dbname");
}

std::string Router(const json& db) {
  const json r = db.value("router", json::object());
  const std::string type = Str(r, "type");
  if (type == "none" || type == "-") return "none";
  // A route on several instances: how many could not be read, if any.
  const json instances = r.value("instances", json::array());
  const auto down = std::count_if(instances.begin(), instances.end(),
                                  [](const json& i) { return !i.value("reachable", false); });
  const std::string unreachable =
      down == 0
          ? ""
          : " (" + std::to_string(down) + "/" + std::to_string(instances.size()) + " unreachable)";
  return type + " " + Str(r, "name") + "/" + Str(r, "route") + unreachable;
}

// The live migration (not finalized or rolled back), else the latest.
std::string Migration(const json& db) {
  const json ms = db.value("migrations", json::array());
  if (!ms.is_array() || ms.empty()) return "-";
  const json* pick = &ms.back();
  for (const auto& m : ms) {
    const std::string p = Str(m, "phase");
    if (p != "finalized" && p != "rolled_back") pick = &m;
  }
  return Str(*pick, "id") + " " + Str(*pick, "phase") + "/" + Str(*pick, "state");
}

std::string Table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& r : rows) {
    width.resize(std::max(width.size(), r.size()));
    for (size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
  }
  std::ostringstream o;
  for (const auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      line += r[i];
      if (i + 1 < r.size()) line += std::string(width[i] - r[i].size() + 2, ' ');
    }
    o << line << "\n";
  }
  return o.str();
}

std::string Warnings(const json& j) {
  std::string out;
  for (const auto& w : j.value("warnings", json::array())) {
    if (w.is_string()) out += "warning: " + w.get<std::string>() + "\n";
  }
  return out;
}

}  // namespace

std::string RenderDatabases(const json& list) {
  const json dbs = list.value("databases", json::array());
  if (!dbs.is_array() || dbs.empty()) return "No databases.\n" + Warnings(list);
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "TEAM", "ROUTER", "SOURCE", "MIGRATION", "YOU"}};
  for (const auto& db : dbs) {
    rows.push_back({Str(db, "name"), Str(db, "team"), Router(db), Source(db), Migration(db),
                    db.value("can_act", false) ? "can act" : "read only"});
  }
  return Table(rows) + Warnings(list);
}

std::string RenderDatabase(const json& db) {
  std::ostringstream o;
  o << "Database " << Str(db, "name") << (db.value("can_act", false) ? "" : " (read only for you)")
    << "\n";
  std::vector<std::vector<std::string>> rows = {
      {"  team", Str(db, "team")},
      {"  source", Source(db)},
      {"  router", Router(db)},
  };
  // Each instance of a router of several: where it points, or why it was not read.
  for (const auto& i : db.value("router", json::object()).value("instances", json::array())) {
    const json up = i.value("upstream", json());
    const std::string state =
        !i.value("reachable", false)
            ? "unreachable: " + Str(i, "error")
            : (up.is_object() ? Str(up, "host") + ":" + Str(up, "port") : "no such route");
    rows.push_back({"    " + Str(i, "admin_url"), state});
  }
  rows.push_back({"  provider", Str(db, "provider")});
  rows.push_back({"  tags", Join(db.value("tags", json::array()))});
  const json w = db.value("window", json());
  if (w.is_object()) {
    rows.push_back({"  window", Join(w.value("days", json::array())) + " " + Str(w, "start") + "-" +
                                    Str(w, "end") + " " + Str(w, "timezone")});
  } else {
    rows.push_back({"  window", "-"});
  }
  o << Table(rows);
  const json ms = db.value("migrations", json::array());
  if (ms.is_array() && !ms.empty()) {
    o << "Migrations:\n";
    for (const auto& m : ms) {
      o << "  " << Str(m, "id") << "  " << Str(m, "phase") << "/" << Str(m, "state") << "\n";
    }
  }
  if (db.value("can_act", false) && Migration(db) == "-") {
    o << "Migrate it with: pgshift migrate " << Str(db, "name") << "\n";
  }
  return o.str() + Warnings(db);
}

std::string RenderWhoAmI(const json& who) {
  std::string role = who.value("operator", false) ? "operator" : "";
  if (who.contains("team") && who["team"].is_string()) {
    role += (role.empty() ? "" : ", ") + std::string("team ") + who["team"].get<std::string>();
  }
  if (role.empty()) role = "no role (ask an operator to add you to the access file)";
  return Str(who, "identity") + ": " + role +
         (who.value("dev_mode", false) ? " (pgshiftd runs in development mode)" : "") + "\n";
}

std::string RenderAudit(const json& audit) {
  const json entries = audit.value("entries", json::array());
  if (!entries.is_array() || entries.empty()) return "No audit entries.\n";
  std::vector<std::vector<std::string>> rows = {
      {"AT", "WHO", "ACTION", "DATABASE", "MIGRATION", "DETAIL"}};
  for (const auto& e : entries) {
    rows.push_back({Str(e, "at"), Str(e, "identity"), Str(e, "action"), Str(e, "database"),
                    Str(e, "migration"), Str(e, "detail")});
  }
  return Table(rows);
}

}  // namespace pgshift::cli
