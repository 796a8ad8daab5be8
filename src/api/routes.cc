// The route table, and the routes that are neither migrations nor
// databases: health, the phase table, whoami, metrics and the audit view.
#include <httplib.h>

#include <algorithm>

#include "api/handlers.h"
#include "api/http_util.h"
#include "api/metrics.h"
#include "api/migration_view.h"
#include "common/clock.h"
#include "inventory/inventory.h"
#include "model/phase.h"
#include "store/state_store.h"

namespace pgshift::api {

using nlohmann::json;

const std::vector<Route>& RouteTable() {
  static const std::vector<Route> kRoutes = {
      {"GET", "/healthz", Access::kPublic, &Handlers::Healthz},
      {"GET", "/metrics", Access::kMetrics, &Handlers::Metrics},
      {"GET", "/v1/phases", Access::kPublic, &Handlers::Phases},
      {"GET", "/v1/whoami", Access::kCaller, &Handlers::WhoAmI},
      {"GET", "/v1/audit", Access::kMember, &Handlers::Audit},
      {"GET", "/v1/databases", Access::kMember, &Handlers::ListDatabases},
      {"GET", "/v1/databases/{name}", Access::kMember, &Handlers::GetDatabase},
      {"POST", "/v1/databases/{name}/migrations", Access::kMember, &Handlers::MigrateDatabase},
      {"GET", "/v1/migrations", Access::kMember, &Handlers::ListMigrations},
      {"POST", "/v1/migrations", Access::kMember, &Handlers::CreateMigration},
      {"GET", "/v1/migrations/{id}", Access::kMember, &Handlers::GetMigration},
      {"GET", "/v1/migrations/{id}/events", Access::kMember, &Handlers::MigrationEvents},
      {"POST", "/v1/migrations/{id}/cutover", Access::kMember, &Handlers::Act},
      {"POST", "/v1/migrations/{id}/rollback", Access::kMember, &Handlers::Act},
      {"POST", "/v1/migrations/{id}/finalize", Access::kMember, &Handlers::Act},
      {"POST", "/v1/migrations/{id}/override", Access::kMember, &Handlers::Act},
      {"POST", "/v1/migrations/{id}/retry", Access::kMember, &Handlers::Act},
      {"POST", "/v1/migrations/{id}/drop_slot", Access::kMember, &Handlers::Act},
      {"POST", "/v1/fleet/plan", Access::kMember, &Handlers::FleetPlan},
      {"GET", "/v1/fleet/runs", Access::kMember, &Handlers::FleetList},
      {"POST", "/v1/fleet/runs", Access::kMember, &Handlers::FleetCreate},
      {"GET", "/v1/fleet/runs/{id}", Access::kMember, &Handlers::FleetGet},
      {"POST", "/v1/fleet/runs/{id}/pause", Access::kMember, &Handlers::FleetPause},
      {"POST", "/v1/fleet/runs/{id}/resume", Access::kMember, &Handlers::FleetResume},
  };
  return kRoutes;
}

void Handlers::Healthz(Call& c) { c.Reply(200, {{"ok", true}}); }

void Handlers::Phases(Call& c) { c.Reply(200, PhaseTableJson()); }

void Handlers::WhoAmI(Call& c) {
  const auto& k = c.caller;
  c.Reply(200, {{"identity", k.identity},
                {"team", k.team().empty() ? json(nullptr) : json(k.team())},
                {"operator", k.is_operator()},
                {"dev_mode", k.dev_mode}});
}

void Handlers::Metrics(Call& c) {
  auto list = Wrapped(svc_.List(), "migrations");
  if (!list.ok()) return c.Fail(list.status());
  const auto links = Links();
  json views = json::array();
  for (const auto& m : (*list)["migrations"]) {
    views.push_back(
        MigrationView(m, links.count(m.value("id", "")) ? links.at(m["id"]) : "", false));
  }
  c.res.status = 200;
  c.res.set_content(RenderMetrics(views, DefaultClock().NowMs()), kPrometheusContentType);
}

void Handlers::Audit(Call& c) {
  int64_t limit = kMaxAuditEntries;
  if (c.req.has_param("limit")) {
    try {
      limit = std::stoll(c.req.get_param_value("limit"));
    } catch (const std::exception&) {
      limit = 0;
    }
    if (limit < 1 || limit > kMaxAuditEntries) {
      return c.Fail(InvalidArgument("limit must be from 1 to " + std::to_string(kMaxAuditEntries)));
    }
  }
  auto visible = [&](const std::string& database) {
    return c.caller.is_operator() || (!database.empty() && c.caller.CanActOn(TeamOf(database)));
  };
  std::vector<json> entries;
  if (opts_.audit) {
    auto rows = opts_.audit->ListAudit(limit);
    if (!rows.ok()) return c.Fail(rows.status());
    for (const auto& e : *rows) {
      if (!visible(e.database)) continue;
      entries.push_back({{"at", FormatTimeMs(e.at_ms)},
                         {"at_ms", e.at_ms},
                         {"identity", e.identity},
                         {"action", e.action},
                         {"database", e.database.empty() ? json(nullptr) : json(e.database)},
                         {"migration", e.migration.empty() ? json(nullptr) : json(e.migration)},
                         {"detail", e.detail}});
    }
  }
  // State changes are not recorded twice: they are the phase changes in the
  // migrations' own event timelines, joined here.
  auto migrations = VisibleMigrations(c);
  if (!migrations.ok()) return c.Fail(migrations.status());
  for (const auto& m : *migrations) {
    const std::string id = m.value("id", "");
    auto events = Wrapped(svc_.Events(id), "events");
    if (!events.ok()) continue;
    std::string previous;
    for (const auto& e : (*events)["events"]) {
      const std::string phase = e.value("phase", "");
      if (!previous.empty() && phase != previous) {
        entries.push_back({{"at", e.value("at", "")},
                           {"at_ms", e.value("at_ms", int64_t{0})},
                           {"identity", "pgshiftd"},
                           {"action", "phase." + phase},
                           {"database", m["database"]},
                           {"migration", id},
                           {"detail", e.value("message", "")}});
      }
      previous = phase;
    }
  }
  std::stable_sort(entries.begin(), entries.end(), [](const json& a, const json& b) {
    return a.value("at_ms", int64_t{0}) < b.value("at_ms", int64_t{0});
  });
  if (static_cast<int64_t>(entries.size()) > limit) {
    entries.erase(entries.begin(), entries.end() - limit);
  }
  c.Reply(200, {{"entries", entries}});
}

}  // namespace pgshift::api
