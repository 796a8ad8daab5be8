// pgshiftd: the control plane process — REST API + workflow engine + state
// store (+ inventory, authentication, audit log, metrics, webhook, web page).
// Killed at any point (even SIGKILL) and started again with the same store,
// it resumes every unfinished migration. Several pgshiftd may share one
// PostgreSQL store (--store postgresql://...; docs/store.md): each drives the
// migrations it holds the lease of and takes over those of one that died.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <thread>

#include "api/http_server.h"
#include "api/notifier.h"
#include "api/web_assets.h"
#include "common/faults.h"
#include "daemon/api_setup.h"
#include "fleet/runner.h"
#include "fleet/size.h"
#include "provider/local/local_env.h"
#include "provider/registry.h"
#include "store/open_store.h"
#include "workflow/engine.h"

namespace {

volatile std::sig_atomic_t g_stop = 0;
void OnSignal(int) { g_stop = 1; }

int Fail(const std::string& message, int code) {
  std::fprintf(stderr, "pgshiftd: %s\n", message.c_str());
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"pgshiftd — pgshift control plane (REST API, workflow engine, state store)"};
  std::string state_path = "pgshift-state.db";
  std::string store_url;
  pgshift::EngineOptions engine_opts;
  std::string listen = "127.0.0.1:7432";
  std::string log_level = "info";
  std::string webhook;
  pgshift::daemon::Flags flags;
  app.add_option("--state", state_path,
                 "SQLite state file (created if missing, mode 0600; locked to this process)");
  app.add_option("--store", store_url,
                 "State store: sqlite:/path (as --state) or postgresql://... shared by several "
                 "pgshiftd (docs/store.md); overrides --state");
  app.add_option("--workers", engine_opts.workers,
                 "Migration steps run at once, at most (the worker pool)")
      ->check(CLI::PositiveNumber);
  app.add_option("--lease-ms", engine_opts.lease_ttl_ms,
                 "How long a migration's (and a fleet run's) lease lasts unless renewed: another "
                 "pgshiftd takes a dead one's over after it; a cutover's hold lease defaults to 3 "
                 "times it (at least 10 s), so a takeover inside a hold adopts it (docs/store.md)")
      ->check(CLI::Range(int64_t{300}, int64_t{3600000}));
  app.add_option("--listen", listen, "HOST:PORT for the REST API (port 0 = any free port)");
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));
  app.add_option("--registry", flags.registry,
                 "Inventory registry (YAML/JSON): owner team, source endpoint, credential name, "
                 "placement per database");
  app.add_option("--secrets", flags.secrets,
                 "Secrets file (credential name → password, mode 0600); default: the registry's "
                 "'secrets' field");
  app.add_option("--tokens", flags.tokens, "Bearer tokens file (mode 0600): '<token> <identity>'");
  app.add_option("--access", flags.access, "Access file: operators and teams' identities");
  app.add_option("--tls-cert", flags.tls_cert, "Serve HTTPS with this certificate (PEM)");
  app.add_option("--tls-key", flags.tls_key, "Key of --tls-cert (PEM)");
  app.add_option("--client-ca", flags.client_ca,
                 "CA whose client certificates authenticate (identity: CN or a SAN)");
  app.add_option("--webhook", webhook,
                 "POST JSON here on phase changes and findings (best effort)");
  CLI11_PARSE(app, argc, argv);

  spdlog::set_level(spdlog::level::from_str(log_level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  auto colon = listen.rfind(':');
  if (colon == std::string::npos)
    return Fail("--listen must be HOST:PORT, got '" + listen + "'", 2);
  const std::string host = listen.substr(0, colon);
  int port = 0;
  try {
    port = std::stoi(listen.substr(colon + 1));
  } catch (...) {
    return Fail("bad port in --listen '" + listen + "'", 2);
  }
  auto setup = pgshift::daemon::LoadApiSetup(flags, host);
  if (!setup.ok()) return Fail(setup.status().message(), 2);

  if (store_url.empty()) store_url = "sqlite:" + state_path;
  auto store = pgshift::OpenStore(store_url);
  if (!store.ok()) return Fail(store.status().message(), 1);
  pgshift::Store& st = **store;
  // Each migration's env comes from the provider its spec names.
  pgshift::ProviderRegistry envs;
  if (auto s = envs.Register(pgshift::kLocalProvider, std::make_unique<pgshift::LocalEnvFactory>());
      !s.ok()) {
    return Fail(s.message(), 1);
  }
  pgshift::Engine engine(st, envs, pgshift::DefaultClock(), engine_opts);
  // The webhook reads migrations as the API does, on its own threads.
  std::unique_ptr<pgshift::api::Notifier> notifier;
  if (!webhook.empty()) {
    auto n = pgshift::api::Notifier::Make(
        engine, {.url = webhook, .links = [&st] {
                   auto l = st.MigrationDatabases();
                   return l.ok() ? *l : std::map<std::string, std::string>{};
                 }});
    if (!n.ok()) return Fail(n.status().message(), 2);
    notifier = std::move(*n);
  }
  // Fleet runs (with an inventory) are in the store, leased like migrations.
  std::unique_ptr<pgshift::fleet::ByNameStarter> starter;
  std::unique_ptr<pgshift::fleet::FleetRunner> fleet;
  if (setup->inventory) {
    // Runs of an older pgshiftd, kept next to its state file: moved into the store once.
    const std::string legacy = state_path + ".fleet";
    auto imported = pgshift::fleet::ImportFleetDir(legacy, st);
    if (!imported.ok()) return Fail(imported.status().message(), 1);
    if (*imported > 0) {
      spdlog::info("fleet: {} run(s) imported from {} into the store ({} renamed to {}.imported)",
                   *imported, legacy, legacy, legacy);
    }
    starter = std::make_unique<pgshift::fleet::ByNameStarter>(engine, *setup->inventory, st);
    fleet = std::make_unique<pgshift::fleet::FleetRunner>(
        engine, *starter, st, &setup->inventory->registry(), pgshift::DefaultClock(),
        pgshift::fleet::FleetRunnerOptions{
            .owner = engine.owner(),
            .lease_ttl_ms = engine_opts.lease_ttl_ms,
            .sizes = [inv = setup->inventory.get()](
                         const pgshift::inventory::DatabaseEntry& e) -> pgshift::Result<int64_t> {
              PGSHIFT_ASSIGN_OR_RETURN(std::string conninfo, inv->SourceConninfo(e));
              return pgshift::fleet::MeasureClusterSize(conninfo);
            }});
    if (auto s = fleet->Load(); !s.ok()) return Fail(s.message(), 1);
  }
  pgshift::api::ApiServer server(engine, host, port,
                                 {.auth = setup->auth.get(),
                                  .inventory = setup->inventory.get(),
                                  .audit = &st,
                                  .fleet = fleet.get(),
                                  .starter = starter.get(),
                                  .tls = setup->tls,
                                  .fallback = pgshift::api::ServeWebAsset});
  if (auto s = server.Start(); !s.ok()) return Fail(s.message(), 1);
  if (!pgshift::ArmedFaults().empty()) {
    spdlog::warn(
        "TEST FAULTS ARMED (PGSHIFT_FAULTS={}): this pgshiftd will crash or fail on "
        "purpose; never set this outside tests",
        pgshift::ArmedFaults());
  }
  const char* scheme = setup->tls.enabled() ? "https" : "http";
  if (setup->dev_mode()) {
    const std::string warning = pgshift::daemon::DevModeWarning(host, server.port());
    spdlog::warn("{}", warning);
    std::printf("WARNING: %s\n", warning.c_str());
  }
  spdlog::info("pgshiftd listening on {}://{}:{} (store: {}, owner id: {}, inventory: {})", scheme,
               host, server.port(), pgshift::RedactStoreUrl(store_url), engine.owner(),
               flags.registry.empty() ? "none" : flags.registry);
  std::printf("pgshiftd listening on %s://%s:%d\n", scheme, host.c_str(), server.port());
  std::fflush(stdout);

  if (notifier) {
    notifier->Start();
    spdlog::info("webhook: notifying {}", webhook);
  }
  if (auto s = engine.ResumeAll(); !s.ok()) {
    spdlog::error("cannot resume migrations: {}", s.ToString());
  }
  if (fleet) fleet->Start();

  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  while (!g_stop) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  spdlog::info("pgshiftd stopping; unfinished migrations resume on the next start");
  if (notifier) notifier->Stop();
  if (fleet) fleet->Stop();
  server.Stop();
  // Ends a running pg_basebackup (or other long provider work) so the
  // engine's workers can return; they resume on the next start.
  envs.RequestStop();
  engine.Stop();
  return 0;
}
