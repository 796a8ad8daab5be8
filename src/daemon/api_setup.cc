#include "daemon/api_setup.h"

#include <arpa/inet.h>

namespace pgshift::daemon {

bool IsLoopback(const std::string& host) {
  if (host == "localhost" || host == "::1" || host == "[::1]") return true;
  in_addr a{};
  if (inet_pton(AF_INET, host.c_str(), &a) != 1) return false;
  return (ntohl(a.s_addr) >> 24) == 127;
}

std::string DevModeWarning(const std::string& host, int port) {
  return "DEVELOPMENT MODE: no --tokens and no --client-ca, so every caller of the API on " + host +
         ":" + std::to_string(port) +
         " is an operator and /metrics is open; only allowed on loopback. Give --tokens FILE "
         "and/or --client-ca FILE with --access FILE before anyone else uses this host";
}

Result<ApiSetup> LoadApiSetup(const Flags& f, const std::string& host) {
  ApiSetup s;
  if (f.tls_cert.empty() != f.tls_key.empty()) {
    return InvalidArgument("--tls-cert and --tls-key go together");
  }
  if (!f.client_ca.empty() && f.tls_cert.empty()) {
    return InvalidArgument("--client-ca needs HTTPS: give --tls-cert and --tls-key too");
  }
  s.tls = {.cert = f.tls_cert, .key = f.tls_key, .client_ca = f.client_ca};
  const bool authenticated = !f.tokens.empty() || !f.client_ca.empty();
  if (authenticated) {
    if (f.access.empty()) {
      return InvalidArgument(
          "--access FILE is required with --tokens or --client-ca: it says which identities "
          "are operators and which belong to which team");
    }
    PGSHIFT_ASSIGN_OR_RETURN(auto access, auth::AccessPolicy::Load(f.access));
    std::optional<auth::TokenTable> tokens;
    if (!f.tokens.empty()) {
      PGSHIFT_ASSIGN_OR_RETURN(tokens, auth::TokenTable::Load(f.tokens));
    }
    s.auth = std::make_unique<auth::Authenticator>(std::move(tokens), !f.client_ca.empty(),
                                                   std::move(access));
  } else {
    if (!f.access.empty()) {
      return InvalidArgument("--access has no effect without --tokens or --client-ca");
    }
    if (!IsLoopback(host)) {
      return InvalidArgument("pgshiftd would listen on " + host +
                             " without authentication: give --tokens FILE and/or --client-ca "
                             "FILE (with --access FILE), or listen on 127.0.0.1 for development");
    }
  }
  if (!f.registry.empty()) {
    PGSHIFT_ASSIGN_OR_RETURN(auto loaded, inventory::Registry::Load(f.registry, f.secrets));
    s.secrets = std::make_unique<inventory::Secrets>(std::move(loaded.second));
    s.routes = std::make_unique<inventory::LiveRouteSource>(*s.secrets);
    s.inventory =
        std::make_unique<inventory::Inventory>(std::move(loaded.first), *s.secrets, *s.routes);
  } else if (!f.secrets.empty()) {
    return InvalidArgument("--secrets has no effect without --registry");
  }
  return s;
}

}  // namespace pgshift::daemon
