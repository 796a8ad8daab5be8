// MakeRouter: builds a Router from its JSON config (see router.h).
#include <memory>

#include "router/multi_router.h"
#include "router/none_router.h"
#include "router/pgbouncer_router.h"
#include "router/proxy_router.h"
#include "router/router.h"

namespace pgshift {

Result<std::unique_ptr<Router>> MakeRouter(const nlohmann::json& config) {
  if (!config.is_object()) {
    return InvalidArgument("router config must be a JSON object like {\"type\":\"none\"}, got: " +
                           config.dump());
  }
  if (!config.contains("type")) {
    return InvalidArgument(
        "router config is missing \"type\": add \"type\": \"pgbouncer\", "
        "\"proxy\" or \"none\"");
  }
  if (!config["type"].is_string()) {
    return InvalidArgument(
        "router config field \"type\" must be a string: \"pgbouncer\", "
        "\"proxy\" or \"none\"");
  }
  const std::string type = config["type"].get<std::string>();
  if (type == "pgbouncer") {
    PGSHIFT_ASSIGN_OR_RETURN(auto router, PgBouncerRouter::FromJson(config));
    return std::unique_ptr<Router>(std::move(router));
  }
  if (type == "none") {
    for (const auto& [key, value] : config.items()) {
      if (key != "type") {
        return InvalidArgument("router config of type \"none\" has unknown field \"" + key +
                               "\"; it takes no other fields");
      }
    }
    return std::unique_ptr<Router>(std::make_unique<NoneRouter>());
  }
  if (type == "proxy") {
    // One route, several pgshift-proxy instances: hold, switch and reconcile them all.
    if (config.contains("instances")) return MakeMultiProxyRouter(config);
    return MakeProxyRouter(config);
  }
  return InvalidArgument("router config field \"type\" has unknown value \"" + type +
                         "\"; use \"pgbouncer\", \"proxy\" or \"none\"");
}

}  // namespace pgshift
