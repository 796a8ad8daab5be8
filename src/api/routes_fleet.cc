// Fleet routes (operators only): plan a fleet run (a dry run), start one,
// read it with its report, pause and resume it. The runner (fleet/runner.h)
// does the work; these map its answers to HTTP and audit every act.
#include <httplib.h>

#include "api/handlers.h"
#include "api/http_util.h"
#include "fleet/runner.h"

namespace pgshift::api {

using nlohmann::json;

Handlers::Handlers(MigrationService& svc, const ApiOptions& options)
    : svc_(svc), opts_(options), starter_(options.starter) {
  if (!starter_ && opts_.inventory && opts_.audit) {
    own_starter_ = std::make_unique<fleet::ByNameStarter>(svc_, *opts_.inventory, *opts_.audit);
    starter_ = own_starter_.get();
  }
}

Result<fleet::FleetRunner*> Handlers::FleetFor(const Call& c, const std::string& what) const {
  PGSHIFT_RETURN_IF_ERROR(auth::RequireOperator(c.caller, what));
  if (!opts_.fleet) {
    return FailedPrecondition("pgshiftd runs no fleet runner: start it with --registry FILE");
  }
  return opts_.fleet;
}

void Handlers::FleetPlan(Call& c) {
  auto fleet = FleetFor(c, "planning a fleet run");
  if (!fleet.ok()) return c.Fail(fleet.status());
  auto body = ParseObjectBody(c.req.body, /*allow_empty=*/true, "a fleet request");
  if (!body.ok()) return c.Fail(body.status());
  auto plan = (*fleet)->Plan(*body);
  if (!plan.ok()) return c.Fail(plan.status());
  c.Reply(200, *plan);
}

void Handlers::FleetCreate(Call& c) {
  auto fleet = FleetFor(c, "starting a fleet run");
  if (!fleet.ok()) return c.Fail(fleet.status());
  auto body = ParseObjectBody(c.req.body, /*allow_empty=*/true, "a fleet request");
  if (!body.ok()) return c.Fail(body.status());
  auto run = (*fleet)->Create(*body);
  if (!run.ok()) return c.Fail(run.status());
  Record(c, "fleet.run", "", "", run->value("id", "") + " " + body->dump());
  c.Reply(201, *run);
}

void Handlers::FleetList(Call& c) {
  auto fleet = FleetFor(c, "listing fleet runs");
  if (!fleet.ok()) return c.Fail(fleet.status());
  auto runs = (*fleet)->List();
  if (!runs.ok()) return c.Fail(runs.status());
  c.Reply(200, {{"runs", *runs}});
}

void Handlers::FleetGet(Call& c) {
  auto fleet = FleetFor(c, "reading a fleet run");
  if (!fleet.ok()) return c.Fail(fleet.status());
  auto run = (*fleet)->Get(c.params[0]);
  if (!run.ok()) return c.Fail(run.status());
  c.Reply(200, *run);
}

void Handlers::FleetPause(Call& c) {
  auto fleet = FleetFor(c, "pausing a fleet run");
  if (!fleet.ok()) return c.Fail(fleet.status());
  auto run = (*fleet)->Pause(c.params[0]);
  if (!run.ok()) return c.Fail(run.status());
  Record(c, "fleet.pause", "", "", c.params[0]);
  c.Reply(200, *run);
}

void Handlers::FleetResume(Call& c) {
  auto fleet = FleetFor(c, "resuming a fleet run");
  if (!fleet.ok()) return c.Fail(fleet.status());
  auto run = (*fleet)->Resume(c.params[0]);
  if (!run.ok()) return c.Fail(run.status());
  Record(c, "fleet.resume", "", "", c.params[0]);
  c.Reply(200, *run);
}

}  // namespace pgshift::api
