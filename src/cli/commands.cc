#include "cli/commands.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <thread>

#include "cli/cli_config.h"
#include "cli/render.h"
#include "cli/spec_builder.h"

namespace pgshift::cli {
namespace {

using nlohmann::json;

constexpr const char* kDefaultServer = "http://127.0.0.1:7432";
constexpr const char* kClearScreen = "\033[H\033[2J";
// How long `status --watch` keeps retrying after losing contact with pgshiftd
// (a restarting pgshiftd resumes its migrations; the watcher should too).
constexpr std::chrono::milliseconds kWatchReconnectWindow{60000};

constexpr const char* kExitCodesHelp =
    "Exit codes:\n"
    "  0    success; status --watch: the migration was finalized\n"
    "  1    the request failed (unknown migration, wrong state, server error);\n"
    "       status --watch: the migration failed\n"
    "  2    status --watch: the migration was rolled back\n"
    "  3    pgshiftd (or a dependency it reports) could not be reached\n"
    "  64   bad command line or input (flags, connection string, spec file)\n"
    "  130  interrupted (Ctrl-C) while watching";

void PrintJson(CliContext& ctx, const json& j) { *ctx.io.out << j.dump(2) << "\n"; }

void Sleep(CliContext& ctx, std::chrono::milliseconds d) {
  if (ctx.io.sleep) {
    ctx.io.sleep(d);
  } else {
    std::this_thread::sleep_for(d);
  }
}

// Sleeps `d` in small steps; false when interrupted.
bool InterruptibleSleep(CliContext& ctx, std::chrono::milliseconds d) {
  const std::chrono::milliseconds step{50};
  while (d.count() > 0) {
    if (ctx.io.interrupted()) return false;
    auto s = std::min(d, step);
    Sleep(ctx, s);
    d -= s;
  }
  return !ctx.io.interrupted();
}

std::string StrField(const json& j, const char* key) {
  return j.is_object() && j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : "";
}

// --- commands -------------------------------------------------------------

struct CreateArgs {
  CreateFlags flags;
  std::string spec_file;
  int target_port = 0;
  int64_t lag_threshold_bytes = 0;
  double sustain_seconds = 0;
  double verify_seconds = 0;
  int64_t hold_timeout_ms = 0;
  bool json_out = false;
  CLI::Option* port_opt = nullptr;
  CLI::Option* lag_opt = nullptr;
  CLI::Option* sustain_opt = nullptr;
  CLI::Option* verify_opt = nullptr;
  CLI::Option* hold_opt = nullptr;
};

void RunCreate(CliContext& ctx, CreateArgs& a) {
  Result<json> spec = [&]() -> Result<json> {
    if (!a.spec_file.empty()) return LoadSpecFile(a.spec_file);
    CreateFlags f = a.flags;
    if (a.port_opt->count()) f.target_port = a.target_port;
    if (a.lag_opt->count()) f.lag_threshold_bytes = a.lag_threshold_bytes;
    if (a.sustain_opt->count()) f.sustain_seconds = a.sustain_seconds;
    if (a.verify_opt->count()) f.verify_seconds = a.verify_seconds;
    if (a.hold_opt->count()) f.hold_timeout_ms = a.hold_timeout_ms;
    return BuildSpec(f);
  }();
  if (!spec.ok()) return ctx.Fail(spec.status());
  auto client = ctx.Client();
  if (!client) return;
  auto m = client->CreateMigration(*spec);
  if (!m.ok()) return ctx.Fail(m.status());
  if (a.json_out) return PrintJson(ctx, *m);
  std::string id = StrField(*m, "id");
  *ctx.io.out << "Created migration " << StrField(*m, "name") << " (" << id << "), phase "
              << StrField(*m, "phase") << ".\n"
              << "Follow it with: pgshift migration status " << id << " --watch\n";
}

void RunList(CliContext& ctx, bool json_out) {
  auto client = ctx.Client();
  if (!client) return;
  auto list = client->ListMigrations();
  if (!list.ok()) return ctx.Fail(list.status());
  if (json_out) return PrintJson(ctx, *list);
  *ctx.io.out << RenderList(*list);
}

void RunEvents(CliContext& ctx, const std::string& id, bool json_out) {
  auto client = ctx.Client();
  if (!client) return;
  auto events = client->Events(id);
  if (!events.ok()) return ctx.Fail(events.status());
  if (json_out) return PrintJson(ctx, *events);
  *ctx.io.out << RenderEvents(*events);
}

// The status view (or JSON) of one migration, plus its state.
struct Snapshot {
  std::string text;
  std::string state;
  std::string phase;
};

Result<Snapshot> FetchView(ApiClient& client, const std::string& id, bool json_out) {
  PGSHIFT_ASSIGN_OR_RETURN(json m, client.GetMigration(id));
  Snapshot s{"", StrField(m, "state"), StrField(m, "phase")};
  if (json_out) {
    s.text = m.dump(2) + "\n";
    return s;
  }
  // Events decorate the view; a failure to fetch them only leaves them out.
  auto events = client.Events(id);
  s.text = RenderStatus(m, events.ok() ? *events : json(nullptr));
  return s;
}

void RunStatus(CliContext& ctx, const std::string& id, bool json_out) {
  auto client = ctx.Client();
  if (!client) return;
  auto view = FetchView(*client, id, json_out);
  if (!view.ok()) return ctx.Fail(view.status());
  *ctx.io.out << view->text;
}

int ExitForTerminal(const std::string& state, const std::string& phase) {
  if (state == "finalized" || (state.empty() && phase == "finalized")) return kExitOk;
  if (state == "rolled_back" || (state.empty() && phase == "rolled_back")) return kExitRolledBack;
  return kExitFailed;
}

bool Terminal(const Snapshot& s) {
  return IsTerminalState(s.state) ||
         (s.state.empty() && (s.phase == "finalized" || s.phase == "rolled_back"));
}

void RunWatch(CliContext& ctx, const std::string& id, bool json_out, int interval_ms) {
  auto client = ctx.Client();
  if (!client) return;
  if (ctx.io.watch_interrupts) ctx.io.watch_interrupts();
  const std::chrono::milliseconds interval{std::max(interval_ms, 100)};
  const int max_failures =
      static_cast<int>(std::max<int64_t>(1, kWatchReconnectWindow.count() / interval.count()));
  std::string last_text;
  bool seen = false;
  int failures = 0;
  while (true) {
    auto view = FetchView(*client, id, json_out);
    if (!view.ok()) {
      // Retry only a lost connection to a server we have already reached.
      if (!seen || view.status().code() != Code::kUnavailable || ++failures > max_failures) {
        return ctx.Fail(view.status());
      }
      if (failures == 1) *ctx.io.err << "warning: " << view.status().message() << "; retrying\n";
    } else {
      if (failures > 0) *ctx.io.err << "reconnected to pgshiftd at " << client->base_url() << "\n";
      failures = 0;
      if (ctx.io.out_is_tty) {
        *ctx.io.out << kClearScreen << view->text << "\nWatching every " << interval.count()
                    << " ms; Ctrl-C to stop.\n";
      } else if (view->text != last_text) {
        if (seen) *ctx.io.out << "\n";
        *ctx.io.out << view->text;
      }
      ctx.io.out->flush();
      seen = true;
      last_text = view->text;
      if (Terminal(*view)) {
        ctx.exit_code = ExitForTerminal(view->state, view->phase);
        return;
      }
    }
    if (!InterruptibleSleep(ctx, interval)) {
      *ctx.io.err << "interrupted; the migration continues in pgshiftd\n";
      ctx.exit_code = kExitInterrupted;
      return;
    }
  }
}

void RunAction(CliContext& ctx, const std::string& id, const std::string& action, const json& body,
               bool json_out) {
  auto client = ctx.Client();
  if (!client) return;
  auto m = client->Act(id, action, body);
  if (!m.ok()) return ctx.Fail(m.status());
  if (json_out) return PrintJson(ctx, *m);
  *ctx.io.out << action << " accepted for " << StrField(*m, "name") << " (" << id << "): phase "
              << StrField(*m, "phase") << ", state " << StrField(*m, "state") << ".\n";
  if (action != "override") {
    *ctx.io.out << "Follow it with: pgshift migration status " << id << " --watch\n";
  }
}

}  // namespace

int ExitCodeFor(const Status& st) {
  switch (st.code()) {
    case Code::kOk:
      return kExitOk;
    case Code::kInvalidArgument:
      return kExitUsage;
    case Code::kUnavailable:
      return kExitUnreachable;
    default:
      return kExitFailed;
  }
}

std::unique_ptr<ApiClient> CliContext::Client() {
  auto c = ApiClient::Make(server_url, client_options);
  if (!c.ok()) {
    Fail(c.status());
    return nullptr;
  }
  return std::move(*c);
}

void CliContext::Fail(const Status& st) {
  *io.err << "error: " << st.message() << "\n";
  exit_code = ExitCodeFor(st);
}

void AddMigrationCommands(CLI::App& app, CliContext& ctx) {
  CLI::App* mig = app.add_subcommand("migration", "Create, watch and drive migrations");
  mig->require_subcommand(1);

  // create
  auto create = std::make_shared<CreateArgs>();
  CLI::App* c =
      mig->add_subcommand("create", "Create a migration (from flags, or a whole --spec FILE.json)");
  auto* spec_opt = c->add_option("--spec", create->spec_file, "Whole migration spec as a JSON file")
                       ->check(CLI::ExistingFile);
  CreateFlags& f = create->flags;
  std::vector<CLI::Option*> flag_opts = {
      c->add_option("--name", f.name, "Migration name"),
      c->add_option("--source", f.source_conninfo,
                    "Source connection string (libpq key=value or URI)"),
      c->add_option("--source-replication", f.replication_conninfo,
                    "Where the target reaches the source for replication when not at --source's "
                    "address (host/hostaddr/port/ssl* keywords; the login stays --source's)"),
      c->add_option("--target-dir", f.target_dir, "Target data directory (absolute path)"),
      create->port_opt = c->add_option("--target-port", create->target_port, "Target TCP port")
                             ->check(CLI::Range(1, 65535)),
      c->add_option("--target-bin-dir", f.target_bin_dir, "PostgreSQL binaries for the target"),
      c->add_option("--target-setting", f.target_settings, "Target setting key=value (repeatable)"),
      c->add_option("--router-type", f.router_type, "Traffic router: pgbouncer, proxy or none")
          ->check(CLI::IsMember({"pgbouncer", "proxy", "none"})),
      c->add_option("--router-admin", f.router_admins,
                    "Router admin endpoint: PgBouncer admin conninfo, or the proxy's admin URL "
                    "(repeat it, or give a comma list, for every proxy instance of the route)")
          ->expected(1)
          ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll),
      c->add_option("--router-config", f.router_config,
                    "pgbouncer.ini to rewrite (pgbouncer only)"),
      c->add_option("--route", f.route, "Route (proxy) or database (pgbouncer) to switch"),
      create->lag_opt = c->add_option("--lag-threshold-bytes", create->lag_threshold_bytes,
                                      "Replication lag (bytes) counted as in sync")
                            ->check(CLI::NonNegativeNumber),
      create->sustain_opt = c->add_option("--sustain-seconds", create->sustain_seconds,
                                          "How long lag must stay under the threshold")
                                ->check(CLI::NonNegativeNumber),
      c->add_flag("--auto-cutover", f.auto_cutover, "Cut over without waiting for approval"),
      c->add_flag("--auto-finalize", f.auto_finalize, "Finalize after verify without approval"),
      create->verify_opt =
          c->add_option("--verify-seconds", create->verify_seconds, "Post-cutover health window")
              ->check(CLI::NonNegativeNumber),
      create->hold_opt = c->add_option("--hold-timeout-ms", create->hold_timeout_ms,
                                       "Longest time clients are held at cutover")
                             ->check(CLI::PositiveNumber),
  };
  for (auto* o : flag_opts) spec_opt->excludes(o);
  c->add_flag("--json", create->json_out, "Print the server's JSON");
  c->callback([&ctx, create] { RunCreate(ctx, *create); });

  // list
  auto list_json = std::make_shared<bool>(false);
  CLI::App* l = mig->add_subcommand("list", "List migrations");
  l->add_flag("--json", *list_json, "Print the server's JSON");
  l->callback([&ctx, list_json] { RunList(ctx, *list_json); });

  // status
  struct StatusArgs {
    std::string id;
    bool json_out = false;
    bool watch = false;
    int interval_ms = 2000;
  };
  auto st = std::make_shared<StatusArgs>();
  CLI::App* s = mig->add_subcommand("status", "Show a migration; --watch follows it to the end");
  s->add_option("id", st->id, "Migration id")->required();
  s->add_flag("--json", st->json_out, "Print the server's JSON");
  auto* watch =
      s->add_flag("--watch", st->watch,
                  "Redraw until finalized (exit 0), failed (exit 1) or rolled back (exit 2)");
  s->add_option("--interval-ms", st->interval_ms, "Watch poll interval (default 2000)")
      ->check(CLI::Range(100, 3600000))
      ->needs(watch);
  s->callback([&ctx, st] {
    if (st->watch) {
      RunWatch(ctx, st->id, st->json_out, st->interval_ms);
    } else {
      RunStatus(ctx, st->id, st->json_out);
    }
  });

  // events
  struct IdJson {
    std::string id;
    bool json_out = false;
  };
  auto ev = std::make_shared<IdJson>();
  CLI::App* e = mig->add_subcommand("events", "Show a migration's event log");
  e->add_option("id", ev->id, "Migration id")->required();
  e->add_flag("--json", ev->json_out, "Print the server's JSON");
  e->callback([&ctx, ev] { RunEvents(ctx, ev->id, ev->json_out); });

  // cutover / finalize / retry
  for (const auto& [action, help] : std::vector<std::pair<const char*, const char*>>{
           {"cutover", "Approve the cutover of a ready migration"},
           {"finalize", "Retire the source after a verified cutover"},
           {"retry", "Run a failed or blocked step again once its cause is fixed"}}) {
    auto args = std::make_shared<IdJson>();
    CLI::App* a = mig->add_subcommand(action, help);
    a->add_option("id", args->id, "Migration id")->required();
    a->add_flag("--json", args->json_out, "Print the server's JSON");
    std::string name = action;
    a->callback(
        [&ctx, args, name] { RunAction(ctx, args->id, name, json::object(), args->json_out); });
  }

  // rollback
  struct RollbackArgs {
    std::string id;
    bool discard = false;
    bool dry_run = false;
    bool json_out = false;
  };
  auto rb = std::make_shared<RollbackArgs>();
  CLI::App* r = mig->add_subcommand("rollback", "Route traffic back to the source");
  r->add_option("id", rb->id, "Migration id")->required();
  r->add_flag("--discard-target-writes", rb->discard,
              "Confirm that writes made on the target after the switch are discarded");
  r->add_flag("--dry-run", rb->dry_run,
              "Say which path the rollback would take, what moves back, what would be lost "
              "and the expected hold, without rolling back");
  r->add_flag("--json", rb->json_out, "Print the server's JSON");
  r->callback([&ctx, rb] {
    json body{{"discard_target_writes", rb->discard}};
    if (!rb->dry_run) return RunAction(ctx, rb->id, "rollback", body, rb->json_out);
    body["dry_run"] = true;
    auto client = ctx.Client();
    if (!client) return;
    auto plan = client->Act(rb->id, "rollback", body);
    if (!plan.ok()) return ctx.Fail(plan.status());
    if (rb->json_out) return PrintJson(ctx, *plan);
    *ctx.io.out << RenderRollbackPlan(*plan);
  });

  // override
  struct OverrideArgs {
    std::string id, finding, subject, reason;
    bool json_out = false;
  };
  auto ov = std::make_shared<OverrideArgs>();
  CLI::App* o = mig->add_subcommand("override", "Accept a blocking finding, with a reason");
  o->add_option("id", ov->id, "Migration id")->required();
  o->add_option("--finding", ov->finding, "Finding id (see `status`)")->required();
  auto* subject =
      o->add_option("--subject", ov->subject, "Finding subject, when several share an id");
  o->add_option("--reason", ov->reason, "Why it is safe to proceed (recorded)")->required();
  o->add_flag("--json", ov->json_out, "Print the server's JSON");
  o->callback([&ctx, ov, subject] {
    if (ov->reason.find_first_not_of(" \t") == std::string::npos) {
      return ctx.Fail(InvalidArgument("--reason must say why overriding is safe; it is recorded"));
    }
    json body = {{"finding", ov->finding}, {"reason", ov->reason}};
    if (subject->count()) body["subject"] = ov->subject;
    RunAction(ctx, ov->id, "override", body, ov->json_out);
  });

  // drop-slot
  struct DropSlotArgs {
    std::string id, slot, reason;
    bool json_out = false;
  };
  auto ds = std::make_shared<DropSlotArgs>();
  CLI::App* d = mig->add_subcommand(
      "drop-slot", "Drop an inactive replication slot on the source that slot_health named");
  d->add_option("id", ds->id, "Migration id")->required();
  d->add_option("--slot", ds->slot, "Slot name")->required();
  d->add_option("--reason", ds->reason, "Why the slot can go (recorded)")->required();
  d->add_flag("--json", ds->json_out, "Print the server's JSON");
  d->callback([&ctx, ds] {
    RunAction(ctx, ds->id, "drop_slot", {{"slot", ds->slot}, {"reason", ds->reason}}, ds->json_out);
  });
}

int RunCli(const std::vector<std::string>& args, CliIo io,
           const std::vector<CommandRegistrar>& registrars) {
  CliContext ctx;
  ctx.io = std::move(io);
  CLI::App app{"pgshift: move a live PostgreSQL cluster onto a new one, through pgshiftd",
               "pgshift"};
  app.footer(kExitCodesHelp);
  app.fallthrough();
  app.require_subcommand(1);
  // The config file gives defaults; a flag or its environment variable wins.
  auto config = LoadCliConfig(CliConfigPath());
  if (!config.ok()) {
    *ctx.io.err << "error: " << config.status().message() << "\n";
    return kExitUsage;
  }
  if (!config->warning.empty()) *ctx.io.err << "warning: " << config->warning << "\n";
  ctx.server_url = config->server.empty() ? kDefaultServer : config->server;
  ApiClientOptions& co = ctx.client_options;
  co.token = config->token;
  co.ca_cert = config->cacert;
  co.client_cert = config->cert;
  co.client_key = config->key;
  app.add_option("--server", ctx.server_url, "pgshiftd URL")
      ->envname("PGSHIFT_SERVER")
      ->default_str(kDefaultServer);
  app.add_option("--token", co.token, "API token (sent as Authorization: Bearer)")
      ->envname("PGSHIFT_TOKEN");
  app.add_option("--cacert", co.ca_cert, "CA certificate to verify an https:// pgshiftd")
      ->envname("PGSHIFT_CACERT");
  app.add_option("--cert", co.client_cert, "Client certificate for an https:// pgshiftd")
      ->envname("PGSHIFT_CERT");
  app.add_option("--key", co.client_key, "Key of --cert")->envname("PGSHIFT_KEY");
  for (const auto& add : registrars) add(app, ctx);

  std::vector<std::string> reversed(args.rbegin(), args.rend());
  try {
    app.parse(std::move(reversed));
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e, *ctx.io.out, *ctx.io.err);
    return code == 0 ? kExitOk : kExitUsage;
  }
  ctx.io.out->flush();
  return ctx.exit_code;
}

}  // namespace pgshift::cli
