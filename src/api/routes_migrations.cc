// Migration routes: the expert create (operators), list, get, events and
// actions, each authorized by the team that owns the migration's database.
#include <httplib.h>
#include <spdlog/spdlog.h>

#include "api/handlers.h"
#include "api/http_util.h"
#include "api/migration_view.h"
#include "common/clock.h"
#include "inventory/inventory.h"
#include "store/state_store.h"

namespace pgshift::api {

using nlohmann::json;

std::map<std::string, std::string> Handlers::Links() const {
  if (!opts_.audit) return {};
  auto links = opts_.audit->MigrationDatabases();
  return links.ok() ? *links : std::map<std::string, std::string>{};
}

std::string Handlers::TeamOf(const std::string& database) const {
  if (!opts_.inventory || database.empty()) return "";
  const auto& dbs = opts_.inventory->registry().databases;
  auto it = dbs.find(database);
  return it == dbs.end() ? "" : it->second.team;
}

Handlers::Owner Handlers::OwnerOf(const std::string& id,
                                  const std::map<std::string, std::string>& links) const {
  auto it = links.find(id);
  if (it == links.end()) return {};
  return {it->second, TeamOf(it->second)};
}

json Handlers::View(const json& m, const Call& c,
                    const std::map<std::string, std::string>& links) const {
  const Owner o = OwnerOf(m.value("id", ""), links);
  return MigrationView(m, o.database, c.caller.CanActOn(o.team));
}

Result<json> Handlers::VisibleMigrations(const Call& c) const {
  PGSHIFT_ASSIGN_OR_RETURN(json list, Wrapped(svc_.List(), "migrations"));
  const auto links = Links();
  json out = json::array();
  for (const auto& m : list["migrations"]) {
    if (!c.caller.is_operator() && !c.caller.CanActOn(OwnerOf(m.value("id", ""), links).team)) {
      continue;
    }
    out.push_back(View(m, c, links));
  }
  return out;
}

Result<json> Handlers::AuthorizedMigration(Call& c, const std::string& id,
                                           const std::string& what) {
  PGSHIFT_ASSIGN_OR_RETURN(json m, svc_.Get(id));
  const auto links = Links();
  const Owner o = OwnerOf(id, links);
  PGSHIFT_RETURN_IF_ERROR(auth::RequireActOn(c.caller, o.database, o.team, what));
  return m;
}

void Handlers::Record(const Call& c, const std::string& action, const std::string& database,
                      const std::string& migration, const std::string& detail) const {
  if (!opts_.audit) return;
  Status st = opts_.audit->AppendAudit(
      {0, DefaultClock().NowMs(), c.caller.identity, action, database, migration, detail});
  if (!st.ok())
    spdlog::error("audit: cannot record {} by {}: {}", action, c.caller.identity, st.ToString());
}

void Handlers::CreateMigration(Call& c) {
  Status allowed =
      auth::RequireOperator(c.caller, "the expert form (POST /v1/migrations with a whole spec)");
  if (!allowed.ok()) {
    return c.Fail(Status(allowed.code(), allowed.message() +
                                             "; teams migrate their databases by name: POST "
                                             "/v1/databases/{name}/migrations"));
  }
  auto spec = ParseObjectBody(c.req.body, /*allow_empty=*/false, "the migration spec");
  if (!spec.ok()) return c.Fail(spec.status());
  auto created = svc_.Create(*spec);
  if (!created.ok()) return c.Fail(created.status());
  const std::string id = created->value("id", "");
  Record(c, "migration.create", "", id, "expert form, name '" + created->value("name", "") + "'");
  c.Reply(201, View(*created, c, Links()));
}

void Handlers::ListMigrations(Call& c) {
  auto list = VisibleMigrations(c);
  if (!list.ok()) return c.Fail(list.status());
  c.Reply(200, {{"migrations", *list}});
}

void Handlers::GetMigration(Call& c) {
  auto m = AuthorizedMigration(c, c.params[0], "reading migration " + c.params[0]);
  if (!m.ok()) return c.Fail(m.status());
  c.Reply(200, View(*m, c, Links()));
}

void Handlers::MigrationEvents(Call& c) {
  const std::string& id = c.params[0];
  if (opts_.auth) {
    // Authorization needs the migration's owner; the service answers 404 itself.
    auto m = AuthorizedMigration(c, id, "reading the events of migration " + id);
    if (!m.ok() && m.status().code() != Code::kNotFound) return c.Fail(m.status());
  }
  auto events = Wrapped(svc_.Events(id), "events");
  if (!events.ok()) return c.Fail(events.status());
  c.Reply(200, *events);
}

void Handlers::Act(Call& c) {
  const std::string& id = c.params[0];
  const std::string action = SplitPath(c.req.path).back();
  auto body = ParseObjectBody(c.req.body, /*allow_empty=*/true, "the " + action + " options");
  if (!body.ok()) return c.Fail(body.status());
  const auto links = Links();
  if (opts_.auth) {
    auto m = AuthorizedMigration(c, id, action + " of migration " + id);
    if (!m.ok()) return c.Fail(m.status());
  }
  auto m = svc_.Act(id, action, *body);
  if (!m.ok() && m.status().code() == Code::kFailedPrecondition) {
    // Say what the migration accepts now, so the caller need not guess.
    if (auto now = svc_.Get(id); now.ok()) {
      std::string accepts;
      for (const auto& a : AvailableActions(*now)) accepts += (accepts.empty() ? "" : ", ") + a;
      return c.Fail(FailedPrecondition(m.status().message() + " [phase " + now->value("phase", "") +
                                       ", state " + now->value("state", "") + ": " +
                                       (accepts.empty() ? "no action" : accepts) +
                                       " possible now]"));
    }
  }
  if (!m.ok()) return c.Fail(m.status());
  // A dry run changes nothing: its plan is the answer, not the migration.
  if (body->value("dry_run", false) == true) return c.Reply(200, *m);
  // The why: a reason, the slot, or the rollback's confirmation; never more.
  std::string detail;
  if (body->contains("reason") && (*body)["reason"].is_string()) {
    detail = (*body)["reason"].get<std::string>();
  }
  for (const char* key : {"finding", "subject", "slot"}) {
    if (body->contains(key) && (*body)[key].is_string()) {
      detail +=
          std::string(detail.empty() ? "" : "; ") + key + " " + (*body)[key].get<std::string>();
    }
  }
  if (body->value("discard_target_writes", false)) {
    detail += std::string(detail.empty() ? "" : "; ") + "discard_target_writes";
  }
  Record(c, "migration." + action, OwnerOf(id, links).database, id, detail);
  c.Reply(action == "override" ? 200 : 202, View(*m, c, links));
}

}  // namespace pgshift::api
