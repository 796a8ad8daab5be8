#include "cli/fleet_commands.h"

#include <CLI/CLI.hpp>
#include <memory>

#include "cli/api_client.h"
#include "cli/self_service.h"
#include "fleet/plan.h"
#include "fleet/report.h"

namespace pgshift::cli {
namespace {

using nlohmann::json;

struct RequestArgs {
  std::string by;
  std::vector<std::string> waves, databases, options;
  int max_concurrent = 0, wave_concurrency = 0, stop_after = 0;  // 0: the server's default
  bool approve = false;
  bool json_out = false;

  void AddFlags(CLI::App* c) {
    c->add_option("--by", by, "What a wave is chosen by (size: each source's, measured now)")
        ->check(CLI::IsMember({"tag", "team", "size"}));
    c->add_option("--wave", waves,
                  "A wave's tag or team value in order, or by size its upper bound like 10GB "
                  "(repeatable)");
    c->add_option("--database", databases, "Only this database (repeatable)");
    c->add_option("--max-concurrent", max_concurrent, "Live migrations at most, overall");
    c->add_option("--wave-concurrency", wave_concurrency, "Live migrations at most in a wave");
    c->add_option("--stop-after", stop_after, "Failures or rollbacks in a wave that stop the run");
    c->add_flag("--approve-outside-window", approve,
                "Cut over even outside the databases' maintenance windows");
    c->add_option("--option", options, "Migration option KEY=VALUE (repeatable)");
    c->add_flag("--json", json_out, "Print the server's JSON");
  }

  Result<json> Body() const {
    json b = json::object();
    if (!by.empty()) b["by"] = by;
    if (!waves.empty()) b["waves"] = waves;
    if (!databases.empty()) b["databases"] = databases;
    if (max_concurrent) b["max_concurrent"] = max_concurrent;
    if (wave_concurrency) b["wave_concurrency"] = wave_concurrency;
    if (stop_after) b["stop_after"] = stop_after;
    if (approve) b["approve_outside_window"] = true;
    PGSHIFT_ASSIGN_OR_RETURN(json o, ParseOptionPairs(options));
    if (!o.empty()) b["options"] = o;
    return b;
  }
};

// Sends one request and prints the JSON or `render` of the answer.
template <typename Render>
void Send(CliContext& ctx, bool json_out, const std::string& method, const std::string& path,
          const json* body, Render render) {
  auto client = ctx.Client();
  if (!client) return;
  auto r = client->Request(method, path, body);
  if (!r.ok()) return ctx.Fail(r.status());
  *ctx.io.out << (json_out ? r->dump(2) + "\n" : render(*r));
}

std::string RenderRuns(const json& answer) {
  std::string out;
  for (const auto& r : answer.value("runs", json::array())) {
    int done = 0;
    for (const auto& d : r.value("databases", json::array())) {
      const std::string s = d.value("status", "");
      done += s == "succeeded" || s == "failed" || s == "rolled_back";
    }
    out += r.value("id", "") + "  " + r.value("status", "") + "  " + std::to_string(done) + "/" +
           std::to_string(r.value("databases", json::array()).size()) + " done";
    if (!r.value("reason", "").empty()) out += "  " + r.value("reason", "");
    out += "\n";
  }
  return out.empty() ? "no fleet runs\n" : out;
}

}  // namespace

void AddFleetCommands(CLI::App& app, CliContext& ctx) {
  CLI::App* f = app.add_subcommand("fleet", "Migrate the inventory in waves (operators)");
  f->require_subcommand(1);

  auto plan = std::make_shared<RequestArgs>();
  CLI::App* p = f->add_subcommand("plan", "Show the waves a run would follow (a dry run)");
  plan->AddFlags(p);
  p->callback([&ctx, plan] {
    auto body = plan->Body();
    if (!body.ok()) return ctx.Fail(body.status());
    Send(ctx, plan->json_out, "POST", "/v1/fleet/plan", &*body, fleet::RenderPlanText);
  });

  auto run = std::make_shared<RequestArgs>();
  CLI::App* r = f->add_subcommand("run", "Start a fleet run");
  run->AddFlags(r);
  r->callback([&ctx, run] {
    auto body = run->Body();
    if (!body.ok()) return ctx.Fail(body.status());
    Send(ctx, run->json_out, "POST", "/v1/fleet/runs", &*body, [](const json& created) {
      const std::string id = created.value("id", "");
      return fleet::RenderPlanText(created.value("plan", json::object())) + "Fleet run " + id +
             " started.\nFollow it with: pgshift fleet status " + id + "\n";
    });
  });

  struct IdArgs {
    std::string id;
    bool json_out = false;
  };
  auto st = std::make_shared<IdArgs>();
  CLI::App* s = f->add_subcommand("status", "Show a fleet run and its report, or every run");
  s->add_option("id", st->id, "Fleet run id (none: list the runs)");
  s->add_flag("--json", st->json_out, "Print the server's JSON");
  s->callback([&ctx, st] {
    if (st->id.empty()) {
      return Send(ctx, st->json_out, "GET", "/v1/fleet/runs", nullptr, RenderRuns);
    }
    Send(ctx, st->json_out, "GET", "/v1/fleet/runs/" + EncodePathSegment(st->id), nullptr,
         fleet::RenderRunText);
  });

  for (const char* action : {"pause", "resume"}) {
    auto args = std::make_shared<IdArgs>();
    CLI::App* a = f->add_subcommand(action, std::string(action) == "pause"
                                                ? "Start no new migration and no cutover"
                                                : "Resume a paused fleet run");
    a->add_option("id", args->id, "Fleet run id")->required();
    a->add_flag("--json", args->json_out, "Print the server's JSON");
    a->callback([&ctx, args, action] {
      const json empty = json::object();
      Send(ctx, args->json_out, "POST",
           "/v1/fleet/runs/" + EncodePathSegment(args->id) + "/" + action, &empty,
           [](const json& run) {
             return "fleet run " + run.value("id", "") + ": " + run.value("status", "") + "\n";
           });
    });
  }
}

}  // namespace pgshift::cli
