#include "auth/authenticator.h"

#include <cstring>

namespace pgshift::auth {
namespace {

constexpr const char* kBearer = "Bearer ";

std::string HowToAuthenticate(bool tokens, bool certs) {
  if (tokens && certs) {
    return "send 'Authorization: Bearer <token>' or present a client certificate";
  }
  if (certs) return "present a client certificate signed by pgshiftd's --client-ca";
  return "send 'Authorization: Bearer <token>' (pgshift: --token, $PGSHIFT_TOKEN or "
         "~/.config/pgshift/config.json)";
}

}  // namespace

Authenticator Authenticator::DevMode() {
  Authenticator a;
  a.dev_mode_ = true;
  return a;
}

Authenticator::Authenticator(std::optional<TokenTable> tokens, bool certs, AccessPolicy access)
    : tokens_(std::move(tokens)), certs_(certs), access_(std::move(access)) {}

Result<Caller> Authenticator::Authenticate(const Credentials& creds) const {
  if (dev_mode_) {
    return Caller{.identity = kDevIdentity, .role = {.is_operator = true}, .dev_mode = true};
  }
  if (!creds.authorization.empty()) {
    if (creds.authorization.rfind(kBearer, 0) != 0) {
      return Unauthenticated("the Authorization header must be 'Bearer <token>'");
    }
    if (!tokens_) {
      return Unauthenticated("bearer tokens are not enabled on this pgshiftd; " +
                             HowToAuthenticate(false, certs_));
    }
    std::string identity = tokens_->IdentityOf(creds.authorization.substr(std::strlen(kBearer)));
    if (identity.empty()) return Unauthenticated("the bearer token is not valid");
    return Caller{.identity = identity, .role = access_.RoleOf(identity)};
  }
  if (!creds.cert_names.empty()) {
    // The first name the access file knows; else the CN, so the refusal names it.
    for (const auto& name : creds.cert_names) {
      if (access_.Knows(name)) return Caller{.identity = name, .role = access_.RoleOf(name)};
    }
    return Caller{.identity = creds.cert_names.front()};
  }
  return Unauthenticated("no credentials: " + HowToAuthenticate(tokens_.has_value(), certs_));
}

Status RequireRole(const Caller& c) {
  if (c.role.any()) return Status::OK();
  return PermissionDenied("identity '" + c.identity +
                          "' is neither an operator nor in a team; ask an operator to add it to "
                          "pgshiftd's access file");
}

Status RequireOperator(const Caller& c, const std::string& what) {
  PGSHIFT_RETURN_IF_ERROR(RequireRole(c));
  if (c.is_operator()) return Status::OK();
  return PermissionDenied(what + " is for operators; '" + c.identity + "' is in team '" + c.team() +
                          "'");
}

Status RequireActOn(const Caller& c, const std::string& database, const std::string& owner_team,
                    const std::string& what) {
  PGSHIFT_RETURN_IF_ERROR(RequireRole(c));
  if (c.CanActOn(owner_team)) return Status::OK();
  std::string owner = owner_team.empty() ? "no team (operators only)" : "team '" + owner_team + "'";
  if (database.empty()) owner = "no database of team '" + c.team() + "' (operators only)";
  return PermissionDenied(what + ": " +
                          (database.empty() ? "this migration belongs to " + owner
                                            : "database '" + database + "' belongs to " + owner) +
                          "; '" + c.identity + "' is in team '" + c.team() + "'");
}

}  // namespace pgshift::auth
