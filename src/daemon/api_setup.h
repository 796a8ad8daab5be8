// pgshiftd's API set-up from its flags: authentication (tokens, client
// certificates, the access file), HTTPS, the inventory (registry, secrets,
// the routers it reads) — loaded and checked before anything listens.
//
// Development mode (no --tokens and no --client-ca) is allowed only on a
// loopback address; anywhere else pgshiftd refuses to start. Not
// thread-safe; built once by main().
#pragma once

#include <memory>
#include <string>

#include "api/http_server.h"
#include "auth/authenticator.h"
#include "common/status.h"
#include "inventory/inventory.h"

namespace pgshift::daemon {

struct Flags {
  std::string registry, secrets;
  std::string tokens, access;
  std::string tls_cert, tls_key, client_ca;
};

struct ApiSetup {
  std::unique_ptr<auth::Authenticator> auth;  // null in development mode
  // Heap-held: the route source keeps a reference across moves of ApiSetup.
  std::unique_ptr<inventory::Secrets> secrets;
  std::unique_ptr<inventory::LiveRouteSource> routes;
  std::unique_ptr<inventory::Inventory> inventory;  // null without --registry
  api::TlsOptions tls;
  bool dev_mode() const { return auth == nullptr; }
};

// 127.0.0.0/8, ::1 and localhost.
bool IsLoopback(const std::string& host);

// InvalidArgument naming the flag or file at fault.
Result<ApiSetup> LoadApiSetup(const Flags& flags, const std::string& host);

// The loud start-up line of development mode.
std::string DevModeWarning(const std::string& host, int port);

}  // namespace pgshift::daemon
