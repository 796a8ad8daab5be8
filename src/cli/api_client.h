// ApiClient: the CLI's HTTP client for pgshiftd's REST API (see
// api/http_server.h for the routes). Turns transport failures and error
// answers into Status values whose messages are ready to show the operator:
// an unreachable server is Unavailable ("cannot reach pgshiftd at URL: ... —
// is it running?"), an error answer carries the server's message and its code.
//
// Thread-compatible: one ApiClient per thread.
#pragma once

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "common/status.h"

namespace httplib {
class Client;
}

namespace pgshift::cli {

struct ApiClientOptions {
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds read_timeout{30000};
  std::string token;        // sent as "Authorization: Bearer <token>" when set
  std::string ca_cert;      // https: verify pgshiftd's certificate against this CA
  std::string client_cert;  // https: present this client certificate (with client_key)
  std::string client_key;
};

class ApiClient {
 public:
  // `base_url` is http[s]://host[:port]; anything else is InvalidArgument.
  static Result<std::unique_ptr<ApiClient>> Make(const std::string& base_url,
                                                 ApiClientOptions options = {});
  ~ApiClient();

  const std::string& base_url() const { return base_url_; }

  Result<nlohmann::json> Health();
  Result<nlohmann::json> CreateMigration(const nlohmann::json& spec);
  // {"migrations":[...]} as the server sent it.
  Result<nlohmann::json> ListMigrations();
  Result<nlohmann::json> GetMigration(const std::string& id);
  // {"events":[...]} as the server sent it.
  Result<nlohmann::json> Events(const std::string& id);
  // action: cutover | rollback | finalize | override.
  Result<nlohmann::json> Act(const std::string& id, const std::string& action,
                             const nlohmann::json& body);

  // The self-service routes (inventory, migrate by name, identity, audit).
  Result<nlohmann::json> ListDatabases();
  Result<nlohmann::json> GetDatabase(const std::string& name);
  Result<nlohmann::json> MigrateDatabase(const std::string& name, const nlohmann::json& body);
  Result<nlohmann::json> WhoAmI();
  Result<nlohmann::json> Audit(int limit);

  // One request; `body` is sent as JSON when not null. The 2xx answer's JSON.
  Result<nlohmann::json> Request(const std::string& method, const std::string& path,
                                 const nlohmann::json* body);

 private:
  ApiClient(std::string base_url, std::unique_ptr<httplib::Client> http);

  std::string base_url_;
  std::unique_ptr<httplib::Client> http_;
};

// Percent-encodes one path segment (a migration id).
std::string EncodePathSegment(const std::string& s);
// The Code whose CodeName is `name`; kInternal when unknown.
Code CodeFromName(const std::string& name);

}  // namespace pgshift::cli
