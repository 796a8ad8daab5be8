// CredentialSource: where a provider gets the login it uses on a cluster, so
// the env asks for it instead of assuming a superuser conninfo string.
// Local: the user and password written in the conninfo (libpq finds a
// missing password itself: passfile, PGPASSFILE, trust, certificates). A
// cloud provider reads a secret store (AWS Secrets Manager, a Kubernetes
// Secret). Get() is called before every new connection, so a rotated secret
// is picked up at the next one. Implementations are thread-safe: parity
// threads connect while the engine worker does.
#pragma once

#include <string>

#include "common/status.h"

namespace pgshift {

struct Credentials {
  std::string user;      // "" = libpq's default (the OS user)
  std::string password;  // "" = libpq looks it up itself
};

class CredentialSource {
 public:
  virtual ~CredentialSource() = default;
  virtual Result<Credentials> Get() const = 0;
  // Where the credentials come from, for messages; never the secret itself.
  virtual std::string Describe() const = 0;
};

// The user and password of a libpq conninfo (either may be absent).
class ConninfoCredentials : public CredentialSource {
 public:
  explicit ConninfoCredentials(std::string conninfo) : conninfo_(std::move(conninfo)) {}
  Result<Credentials> Get() const override;
  std::string Describe() const override { return "the conninfo's user and password"; }

 private:
  std::string conninfo_;
};

// `conninfo` with the user and password of `c` in place of its own; an empty
// field keeps what `conninfo` has.
Result<std::string> WithCredentials(const std::string& conninfo, const Credentials& c);

}  // namespace pgshift
