#include "cli/local_commands.h"

#include "checks/checks.h"
#include "demo/demo.h"

namespace pgshift::cli {

void AddDemoCommand(CLI::App& app, CliContext& ctx) {
  auto opts = std::make_shared<demo::DemoOptions>();
  CLI::App* d = app.add_subcommand(
      "demo", "Start a local sandbox (source, router, pgshiftd, load) and run a whole migration");
  d->add_option("--router", opts->router, "Router in front of the source")
      ->check(CLI::IsMember({"proxy", "pgbouncer"}));
  d->add_flag("--keep", opts->keep, "Keep the sandbox directory afterwards");
  d->add_option("--clients", opts->pgbench_clients, "pgbench clients")->check(CLI::Range(1, 64));
  d->add_option("--scale", opts->pgbench_scale, "pgbench scale factor")->check(CLI::Range(1, 1000));
  d->callback([&ctx, opts] { ctx.exit_code = demo::RunDemo(*opts, *ctx.io.out, *ctx.io.err); });
}

void AddCheckCommand(CLI::App& app, CliContext& ctx) {
  struct Args {
    std::string source, target_install;
    bool json_out = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* c = app.add_subcommand(
      "check", "Preflight-only dry run of the validation suite against a source; creates nothing");
  c->add_option("--source", a->source, "libpq connection string of the source (superuser)")
      ->required();
  c->add_option("--target-install", a->target_install,
                "PostgreSQL installation the target would run from (bin dir or its root)");
  c->add_flag("--json", a->json_out, "Print {\"findings\":[...]}");
  c->callback([&ctx, a] {
    auto r = checks::RunCheckCommand(a->source, a->target_install);
    if (!r.ok()) return ctx.Fail(r.status());
    std::vector<checks::Finding> findings;
    for (const auto& f : (*r)["findings"]) {
      auto parsed = checks::Finding::FromJson(f);
      if (parsed.ok()) findings.push_back(*parsed);
    }
    if (a->json_out) {
      *ctx.io.out << r->dump(2) << "\n";
    } else {
      *ctx.io.out << checks::RenderFindingsTable(findings);
    }
    // Blocking findings make the dry run fail, so scripts can gate on it.
    if (checks::AnyBlocking(findings)) ctx.exit_code = kExitFailed;
  });
}

}  // namespace pgshift::cli
