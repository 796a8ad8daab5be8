#include "cli/self_service.h"

#include <CLI/CLI.hpp>
#include <memory>

#include "cli/render_inventory.h"

namespace pgshift::cli {
namespace {

using nlohmann::json;

constexpr int kDefaultAuditLimit = 100;

// Runs `fetch` with a client, then prints the JSON or `render` of it.
template <typename Fetch, typename Render>
void Show(CliContext& ctx, bool json_out, Fetch fetch, Render render) {
  auto client = ctx.Client();
  if (!client) return;
  Result<json> r = fetch(*client);
  if (!r.ok()) return ctx.Fail(r.status());
  *ctx.io.out << (json_out ? r->dump(2) + "\n" : render(*r));
}

}  // namespace

Result<json> ParseOptionPairs(const std::vector<std::string>& pairs) {
  json out = json::object();
  for (const auto& p : pairs) {
    auto eq = p.find('=');
    if (eq == std::string::npos || eq == 0) {
      return InvalidArgument("--option '" + p + "' must be KEY=VALUE, e.g. sustain_seconds=30");
    }
    const std::string key = p.substr(0, eq), value = p.substr(eq + 1);
    json parsed = json::parse(value, nullptr, false);
    out[key] = !parsed.is_discarded() && (parsed.is_boolean() || parsed.is_number()) ? parsed
                                                                                     : json(value);
  }
  return out;
}

void AddSelfServiceCommands(CLI::App& app, CliContext& ctx) {
  // databases list / show
  CLI::App* dbs = app.add_subcommand("databases", "The databases you can migrate by name");
  dbs->require_subcommand(1);
  auto list_json = std::make_shared<bool>(false);
  CLI::App* l = dbs->add_subcommand("list", "List the inventory (your team's marked 'can act')");
  l->add_flag("--json", *list_json, "Print the server's JSON");
  l->callback([&ctx, list_json] {
    Show(
        ctx, *list_json, [](ApiClient& c) { return c.ListDatabases(); }, RenderDatabases);
  });
  struct NameJson {
    std::string name;
    bool json_out = false;
  };
  auto show = std::make_shared<NameJson>();
  CLI::App* s = dbs->add_subcommand("show", "Show one database and its migrations");
  s->add_option("name", show->name, "Database name")->required();
  s->add_flag("--json", show->json_out, "Print the server's JSON");
  s->callback([&ctx, show] {
    Show(
        ctx, show->json_out, [&](ApiClient& c) { return c.GetDatabase(show->name); },
        RenderDatabase);
  });

  // migrate NAME
  struct MigrateArgs {
    std::string name;
    std::vector<std::string> options;
    bool auto_cutover = false, auto_finalize = false, json_out = false;
  };
  auto mig = std::make_shared<MigrateArgs>();
  CLI::App* m = app.add_subcommand(
      "migrate", "Migrate a database by name: pgshiftd fills in source, target and router");
  m->add_option("name", mig->name, "Database name (see `pgshift databases list`)")->required();
  m->add_option("--option", mig->options, "Migration option KEY=VALUE (repeatable)");
  m->add_flag("--auto-cutover", mig->auto_cutover, "Cut over without waiting for approval");
  m->add_flag("--auto-finalize", mig->auto_finalize, "Finalize after verify without approval");
  m->add_flag("--json", mig->json_out, "Print the server's JSON");
  m->callback([&ctx, mig] {
    auto options = ParseOptionPairs(mig->options);
    if (!options.ok()) return ctx.Fail(options.status());
    if (mig->auto_cutover) (*options)["auto_cutover"] = true;
    if (mig->auto_finalize) (*options)["auto_finalize"] = true;
    json body = options->empty() ? json::object() : json{{"options", *options}};
    Show(
        ctx, mig->json_out, [&](ApiClient& c) { return c.MigrateDatabase(mig->name, body); },
        [&](const json& created) {
          const std::string id = created.value("id", "");
          return "Migrating " + mig->name + ": migration " + id + ", phase " +
                 created.value("phase", "") + ".\nFollow it with: pgshift migration status " + id +
                 " --watch\n";
        });
  });

  // whoami
  auto who_json = std::make_shared<bool>(false);
  CLI::App* w = app.add_subcommand("whoami", "Who pgshiftd takes you for, and your role");
  w->add_flag("--json", *who_json, "Print the server's JSON");
  w->callback([&ctx, who_json] {
    Show(
        ctx, *who_json, [](ApiClient& c) { return c.WhoAmI(); }, RenderWhoAmI);
  });

  // audit
  struct AuditArgs {
    int limit = kDefaultAuditLimit;
    bool json_out = false;
  };
  auto au = std::make_shared<AuditArgs>();
  CLI::App* a = app.add_subcommand("audit", "Who did what, when and why (newest last)");
  a->add_option("--limit", au->limit, "How many of the newest entries")->check(CLI::Range(1, 1000));
  a->add_flag("--json", au->json_out, "Print the server's JSON");
  a->callback([&ctx, au] {
    Show(
        ctx, au->json_out, [&](ApiClient& c) { return c.Audit(au->limit); }, RenderAudit);
  });
}

}  // namespace pgshift::cli
