// Authentication and team authorization of pgshiftd's API callers.
//
// A request proves an identity with a bearer token (the tokens file) or a
// client certificate verified against --client-ca (the identity is its CN or
// a SAN, whichever the access file names). The access file gives the
// identity its role: operator (acts on everything, may use the expert
// migration form) or member of one team (acts only on the databases that
// team owns in the registry, and on their migrations).
//
// Development mode (no --tokens and no --client-ca, loopback only): every
// caller is the operator "anonymous". pgshiftd says so loudly at start-up.
//
// Errors: no credentials or an unknown token → Unauthenticated (HTTP 401);
// a known identity without the right role → PermissionDenied (403).
// Immutable after construction; thread-safe.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "auth/credentials.h"
#include "common/status.h"

namespace pgshift::auth {

inline constexpr const char* kDevIdentity = "anonymous";

// Who is calling, once authenticated.
struct Caller {
  std::string identity;
  Role role;
  bool dev_mode = false;

  bool is_operator() const { return role.is_operator; }
  const std::string& team() const { return role.team; }
  // May act on a database owned by `owner_team` ("" = owned by no team).
  bool CanActOn(const std::string& owner_team) const {
    return role.is_operator || (!role.team.empty() && role.team == owner_team);
  }
};

// What a request carries that can prove an identity.
struct Credentials {
  std::string authorization;            // the Authorization header, as sent
  std::vector<std::string> cert_names;  // a verified client certificate's CN, then SANs
};

class Authenticator {
 public:
  // Every caller is the operator kDevIdentity.
  static Authenticator DevMode();
  // `tokens` may be empty (no --tokens); `certs` says --client-ca is set.
  Authenticator(std::optional<TokenTable> tokens, bool certs, AccessPolicy access);

  bool dev_mode() const { return dev_mode_; }

  // The caller, whose role may be none (see RequireRole).
  Result<Caller> Authenticate(const Credentials& creds) const;

 private:
  Authenticator() = default;
  bool dev_mode_ = false;
  std::optional<TokenTable> tokens_;
  bool certs_ = false;
  AccessPolicy access_;
};

// PermissionDenied unless the caller has a role (operator or a team).
Status RequireRole(const Caller& c);
// PermissionDenied unless the caller is an operator; `what` names the request.
Status RequireOperator(const Caller& c, const std::string& what);
// PermissionDenied unless the caller may act on `database` owned by
// `owner_team`; `what` names the request.
Status RequireActOn(const Caller& c, const std::string& database, const std::string& owner_team,
                    const std::string& what);

}  // namespace pgshift::auth
