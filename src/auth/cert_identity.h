// The identities a client certificate carries: its subject CN, then its
// SAN DNS, email and URI entries, in order: pgshiftd's API and
// pgshift-proxy's policy both name a client by these.
// Pure functions; thread-safe.
#pragma once

#include <openssl/ssl.h>

#include <string>
#include <vector>

namespace pgshift::auth {

std::vector<std::string> CertIdentities(X509* cert);
// The names of the peer certificate on `ssl`, only when it verified
// (SSL_get_verify_result OK); empty otherwise or when there is none.
std::vector<std::string> VerifiedPeerNames(const SSL* ssl);

}  // namespace pgshift::auth
