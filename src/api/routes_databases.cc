// Inventory routes: list and show databases (every member reads them all;
// "can_act" says whether this caller may act), and migrate one by name.
#include <httplib.h>

#include <set>

#include "api/handlers.h"
#include "api/http_util.h"
#include "api/migration_view.h"
#include "inventory/inventory.h"
#include "model/migration.h"
#include "store/state_store.h"

namespace pgshift::api {

using nlohmann::json;

namespace {

constexpr const char* kNoInventory =
    "pgshiftd has no inventory: start it with --registry FILE to serve databases by name";

}  // namespace

json Handlers::DatabaseJson(const json& view, const Call& c, const json& migrations,
                            const std::map<std::string, std::string>& links) const {
  json out = view;
  const std::string name = view.value("name", "");
  json mine = json::array();
  for (const auto& m : migrations) {
    auto it = links.find(m.value("id", ""));
    if (it == links.end() || it->second != name) continue;
    mine.push_back({{"id", m["id"]}, {"phase", m["phase"]}, {"state", m["state"]}});
  }
  out["migrations"] = mine;
  out["can_act"] =
      c.caller.CanActOn(view["team"].is_string() ? view["team"].get<std::string>() : "");
  return out;
}

void Handlers::ListDatabases(Call& c) {
  if (!opts_.inventory) {
    return c.Reply(200, {{"databases", json::array()}, {"warnings", {kNoInventory}}});
  }
  std::vector<std::string> warnings;
  auto views = opts_.inventory->List(&warnings);
  auto list = Wrapped(svc_.List(), "migrations");
  if (!list.ok()) return c.Fail(list.status());
  const auto links = Links();
  json out = json::array();
  for (const auto& v : views)
    out.push_back(DatabaseJson(v.ToJson(), c, (*list)["migrations"], links));
  c.Reply(200, {{"databases", out}, {"warnings", warnings}});
}

void Handlers::GetDatabase(Call& c) {
  if (!opts_.inventory) return c.Fail(NotFound(kNoInventory));
  std::vector<std::string> warnings;
  auto v = opts_.inventory->Find(c.params[0], &warnings);
  if (!v.ok()) return c.Fail(v.status());
  auto list = Wrapped(svc_.List(), "migrations");
  if (!list.ok()) return c.Fail(list.status());
  json out = DatabaseJson(v->ToJson(), c, (*list)["migrations"], Links());
  out["warnings"] = warnings;
  c.Reply(200, out);
}

void Handlers::MigrateDatabase(Call& c) {
  if (!opts_.inventory || !opts_.audit || !starter_) {
    return c.Fail(FailedPrecondition(kNoInventory));
  }
  const std::string& name = c.params[0];
  auto body = ParseObjectBody(c.req.body, /*allow_empty=*/true, "{\"options\":{...}}");
  if (!body.ok()) return c.Fail(body.status());
  for (const auto& [k, v] : body->items()) {
    if (k != "options") {
      return c.Fail(InvalidArgument("unknown field '" + k +
                                    "': the body is {} or {\"options\":{...}}; pgshiftd fills "
                                    "in the source, target and router from the registry"));
    }
  }
  const json options = body->value("options", json::object());
  if (!options.is_object()) return c.Fail(InvalidArgument("'options' must be a JSON object"));
  auto db = opts_.inventory->Find(name, nullptr);
  if (!db.ok()) return c.Fail(db.status());
  Status allowed = auth::RequireActOn(c.caller, name, db->team(), "migrating database " + name);
  if (!allowed.ok()) return c.Fail(allowed);

  auto created = starter_->Start(name, options, /*key=*/"");
  if (!created.ok()) return c.Fail(created.status());
  const std::string id = created->value("id", "");
  Record(c, "migration.create", name, id,
         options.empty() ? "by name" : "by name, options " + options.dump());
  c.Reply(201, MigrationView(*created, name, true));
}

}  // namespace pgshift::api
