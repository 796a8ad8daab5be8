// The CLI's config file: defaults for the global flags, so a team member
// sets the server and token once.
//
//   ~/.config/pgshift/config.json (or $XDG_CONFIG_HOME/pgshift/config.json,
//   or the file $PGSHIFT_CONFIG names):
//   {"server":"https://pgshift.example:7432","token":"...",
//    "cacert":"/path/ca.crt","cert":"/path/me.crt","key":"/path/me.key"}
//
// Precedence: a flag, then its environment variable (PGSHIFT_SERVER,
// PGSHIFT_TOKEN, PGSHIFT_CACERT, PGSHIFT_CERT, PGSHIFT_KEY), then this file,
// then the built-in default. Pure functions; thread-compatible.
#pragma once

#include <string>

#include "common/status.h"

namespace pgshift::cli {

struct CliConfig {
  std::string path;  // the file read, "" when there is none
  std::string server, token, cacert, cert, key;
  // Set when the file holds a token but others may read it.
  std::string warning;
};

// The path the config is read from (it may not exist).
std::string CliConfigPath();
// A missing file is an empty config; a malformed one is InvalidArgument
// naming the file and the field.
Result<CliConfig> LoadCliConfig(const std::string& path);

}  // namespace pgshift::cli
