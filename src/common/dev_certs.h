// Development certificates for pgshift-proxy sandboxes and tests, made with
// the openssl CLI: CA "ca" signs "server" (SAN IP:127.0.0.1, DNS:localhost),
// "app-client" and "other-client"; a second CA "evil-ca" signs "evil-client"
// (CN app-client), for refusal tests. Keys are 0600. Thread-compatible.
#pragma once

#include <string>

#include "common/status.h"

namespace pgshift {

Status MakeDevCerts(const std::string& dir);

}  // namespace pgshift
