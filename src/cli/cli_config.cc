#include "cli/cli_config.h"

#include <cstdlib>

#include "auth/config_doc.h"
#include "common/os.h"

namespace pgshift::cli {

std::string CliConfigPath() {
  if (const char* p = std::getenv("PGSHIFT_CONFIG"); p && *p) return p;
  if (const char* x = std::getenv("XDG_CONFIG_HOME"); x && *x) {
    return std::string(x) + "/pgshift/config.json";
  }
  if (const char* h = std::getenv("HOME"); h && *h) {
    return std::string(h) + "/.config/pgshift/config.json";
  }
  return "";
}

Result<CliConfig> LoadCliConfig(const std::string& path) {
  CliConfig c;
  if (path.empty() || !PathExists(path)) return c;
  PGSHIFT_ASSIGN_OR_RETURN(auth::ConfigDoc doc, auth::LoadConfigDoc(path));
  c.path = path;
  if (doc.root.is_null()) return c;
  if (!doc.root.is_object()) return doc.Error("", "must be a JSON object");
  const std::pair<const char*, std::string*> fields[] = {{"server", &c.server},
                                                         {"token", &c.token},
                                                         {"cacert", &c.cacert},
                                                         {"cert", &c.cert},
                                                         {"key", &c.key}};
  for (const auto& [k, v] : doc.root.items()) {
    std::string* out = nullptr;
    for (const auto& [name, field] : fields) {
      if (k == name) out = field;
    }
    if (!out) {
      return doc.Error("/" + auth::PointerToken(k),
                       "unknown field (allowed: server, token, cacert, cert, key)");
    }
    if (!v.is_string()) return doc.Error("/" + k, "must be a string");
    *out = v.get<std::string>();
  }
  if (!c.token.empty()) {
    Status st = auth::CheckPrivateFile(path, "the pgshift config file");
    if (!st.ok()) c.warning = st.message();
  }
  return c;
}

}  // namespace pgshift::cli
