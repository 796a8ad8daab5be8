// pgshiftd: the control plane process — REST API + workflow engine + state
// store. Killed at any point (even SIGKILL) and started again with the same
// --state file, it resumes every unfinished migration.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <thread>

#include "api/http_server.h"
#include "common/faults.h"
#include "provider/local/local_env.h"
#include "provider/registry.h"
#include "store/state_store.h"
#include "workflow/engine.h"

namespace {

volatile std::sig_atomic_t g_stop = 0;
void OnSignal(int) { g_stop = 1; }

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"pgshiftd — pgshift control plane (REST API, workflow engine, state store)"};
  std::string state_path = "pgshift-state.db";
  std::string listen = "127.0.0.1:7432";
  std::string log_level = "info";
  app.add_option("--state", state_path, "SQLite state file (created if missing)");
  app.add_option("--listen", listen, "HOST:PORT for the REST API (port 0 = any free port)");
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));
  CLI11_PARSE(app, argc, argv);

  spdlog::set_level(spdlog::level::from_str(log_level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  auto colon = listen.rfind(':');
  if (colon == std::string::npos) {
    std::fprintf(stderr, "pgshiftd: --listen must be HOST:PORT, got '%s'\n", listen.c_str());
    return 2;
  }
  const std::string host = listen.substr(0, colon);
  int port = 0;
  try {
    port = std::stoi(listen.substr(colon + 1));
  } catch (...) {
    std::fprintf(stderr, "pgshiftd: bad port in --listen '%s'\n", listen.c_str());
    return 2;
  }

  auto store = pgshift::SqliteStateStore::Open(state_path);
  if (!store.ok()) {
    std::fprintf(stderr, "pgshiftd: %s\n", store.status().message().c_str());
    return 1;
  }
  // Each migration's env comes from the provider its spec names.
  pgshift::ProviderRegistry envs;
  if (auto st =
          envs.Register(pgshift::kLocalProvider, std::make_unique<pgshift::LocalEnvFactory>());
      !st.ok()) {
    std::fprintf(stderr, "pgshiftd: %s\n", st.message().c_str());
    return 1;
  }
  pgshift::Engine engine(**store, envs);
  pgshift::api::ApiServer server(engine, host, port);
  if (auto st = server.Start(); !st.ok()) {
    std::fprintf(stderr, "pgshiftd: %s\n", st.message().c_str());
    return 1;
  }
  if (!pgshift::ArmedFaults().empty()) {
    spdlog::warn(
        "TEST FAULTS ARMED (PGSHIFT_FAULTS={}): this pgshiftd will crash or fail on "
        "purpose; never set this outside tests",
        pgshift::ArmedFaults());
  }
  spdlog::info("pgshiftd listening on http://{}:{} (state: {})", host, server.port(), state_path);
  std::printf("pgshiftd listening on http://%s:%d\n", host.c_str(), server.port());
  std::fflush(stdout);
  if (auto st = engine.ResumeAll(); !st.ok()) {
    spdlog::error("cannot resume migrations: {}", st.ToString());
  }

  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  while (!g_stop) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  spdlog::info("pgshiftd stopping; unfinished migrations resume on the next start");
  server.Stop();
  engine.Stop();
  return 0;
}
