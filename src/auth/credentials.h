// The two files pgshiftd authenticates and authorizes API callers with.
//
// Tokens file (--tokens FILE, mode 0600 checked at load): either lines
//   <token> <identity>        (blank lines and lines starting with # ignored)
// or a YAML/JSON mapping {"<token>": "<identity>"}. Tokens are at least
// kMinTokenLength characters; only their SHA-256 digests are kept in memory.
//
// Access file (--access FILE): who may do what.
//   operators: [alice, ops-bot]          # act on every database and migration
//   teams:
//     payments: [bob, payments-ci]       # act on the databases team payments owns
// An identity is a token's identity or a client certificate's CN or SAN.
// An identity belongs to at most one team. Immutable after load; thread-safe.
#pragma once

#include <map>
#include <set>
#include <string>

#include "common/status.h"

namespace pgshift::auth {

inline constexpr size_t kMinTokenLength = 16;

class TokenTable {
 public:
  static Result<TokenTable> Load(const std::string& path);
  // `text` as the file's content; `path` labels errors. No mode check.
  static Result<TokenTable> Parse(const std::string& text, const std::string& path);

  // The identity a token stands for; empty when the token is unknown.
  std::string IdentityOf(const std::string& token) const;
  size_t size() const { return by_digest_.size(); }

 private:
  Status Add(const std::string& token, const std::string& identity, const std::string& where);
  std::map<std::string, std::string> by_digest_;  // SHA-256(token) → identity
};

struct Role {
  bool is_operator = false;
  std::string team;  // "" = none
  bool any() const { return is_operator || !team.empty(); }
};

class AccessPolicy {
 public:
  static Result<AccessPolicy> Load(const std::string& path);
  static Result<AccessPolicy> Parse(const std::string& text, const std::string& path);

  // The role of `identity`; none when the file does not name it.
  Role RoleOf(const std::string& identity) const;
  bool Knows(const std::string& identity) const { return RoleOf(identity).any(); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::set<std::string> operators_;
  std::map<std::string, std::string> team_of_;
};

// Lowercase hex SHA-256 of `data`.
std::string Sha256Hex(const std::string& data);

}  // namespace pgshift::auth
