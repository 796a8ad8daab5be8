// pgshift-proxy: the PostgreSQL data access proxy of pgshift (see README.md).
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <csignal>
#include <iostream>

#include "proxy/config.h"
#include "proxy/proxy.h"

int main(int argc, char** argv) {
  CLI::App app{"pgshift-proxy: PostgreSQL wire-protocol proxy with mTLS, routes and switch-over"};
  std::string config_path;
  app.add_option("-c,--config", config_path, "JSON config file")->required();
  CLI11_PARSE(app, argc, argv);

  auto cfg = pgshift::proxy::LoadProxyConfig(config_path);
  if (!cfg.ok()) {
    std::cerr << "pgshift-proxy: " << cfg.status().message() << "\n";
    return 2;
  }
  // Signals are taken by sigwait below; the worker threads inherit the block.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  pgshift::proxy::Proxy proxy(std::move(*cfg));
  pgshift::Status st = proxy.Start();
  if (!st.ok()) {
    std::cerr << "pgshift-proxy: " << st.message() << "\n";
    return 1;
  }
  int sig = 0;
  sigwait(&set, &sig);
  spdlog::info("pgshift-proxy: signal {}, stopping", sig);
  proxy.Stop();
  return 0;
}
