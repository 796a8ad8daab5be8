#include "cli/api_client.h"

#include <httplib.h>

#include <cctype>
#include <regex>

namespace pgshift::cli {
namespace {

using nlohmann::json;

std::string DescribeTransportError(httplib::Error e) {
  switch (e) {
    case httplib::Error::Connection:
      return "connection refused or host unreachable";
    case httplib::Error::ConnectionTimeout:
      return "connection timed out";
    case httplib::Error::Read:
      return "no answer (reading the response failed or timed out)";
    case httplib::Error::Write:
      return "sending the request failed";
    case httplib::Error::BindIPAddress:
      return "cannot bind the local address";
    case httplib::Error::SSLConnection:
      return "TLS handshake failed";
    case httplib::Error::SSLLoadingCerts:
      return "cannot load TLS CA certificates";
    case httplib::Error::SSLServerVerification:
      return "the server's TLS certificate did not verify";
    default:
      return "request failed (" + httplib::to_string(e) + ")";
  }
}

}  // namespace

Code CodeFromName(const std::string& name) {
  for (Code c : {Code::kOk, Code::kInvalidArgument, Code::kNotFound, Code::kAlreadyExists,
                 Code::kFailedPrecondition, Code::kUnavailable, Code::kTimeout, Code::kAborted,
                 Code::kInternal, Code::kUnauthenticated, Code::kPermissionDenied}) {
    if (name == CodeName(c)) return c;
  }
  return Code::kInternal;
}

std::string EncodePathSegment(const std::string& s) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

Result<std::unique_ptr<ApiClient>> ApiClient::Make(const std::string& base_url,
                                                   ApiClientOptions options) {
  static const std::regex kUrl(
      R"(^(https?)://([A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?/?$)");
  if (!std::regex_match(base_url, kUrl)) {
    return InvalidArgument(
        "--server '" + base_url +
        "' is not a pgshiftd URL; use http://HOST:PORT (e.g. http://127.0.0.1:7432)");
  }
  std::string url = base_url;
  if (url.back() == '/') url.pop_back();
  const bool https = url.rfind("https://", 0) == 0;
  if (!https && (!options.client_cert.empty() || !options.ca_cert.empty())) {
    return InvalidArgument("--cert/--key/--cacert need an https:// --server, got " + url);
  }
  if (options.client_cert.empty() != options.client_key.empty()) {
    return InvalidArgument("--cert and --key go together");
  }
  auto http = options.client_cert.empty()
                  ? std::make_unique<httplib::Client>(url)
                  : std::make_unique<httplib::Client>(url, options.client_cert, options.client_key);
  if (!http->is_valid()) {
    return InvalidArgument("--server '" + base_url +
                           "': this build cannot use that URL (https needs TLS support)");
  }
  auto to_sec_usec = [](std::chrono::milliseconds ms) {
    return std::pair<time_t, time_t>(ms.count() / 1000, (ms.count() % 1000) * 1000);
  };
  auto [cs, cus] = to_sec_usec(options.connect_timeout);
  auto [rs, rus] = to_sec_usec(options.read_timeout);
  http->set_connection_timeout(cs, cus);
  http->set_read_timeout(rs, rus);
  http->set_write_timeout(rs, rus);
  if (!options.token.empty()) http->set_bearer_token_auth(options.token.c_str());
  if (https) {
    if (!options.ca_cert.empty()) http->set_ca_cert_path(options.ca_cert.c_str());
    http->enable_server_certificate_verification(true);
  }
  return std::unique_ptr<ApiClient>(new ApiClient(url, std::move(http)));
}

ApiClient::ApiClient(std::string base_url, std::unique_ptr<httplib::Client> http)
    : base_url_(std::move(base_url)), http_(std::move(http)) {}

ApiClient::~ApiClient() = default;

Result<json> ApiClient::Request(const std::string& method, const std::string& path,
                                const json* body) {
  httplib::Result r = [&] {
    if (method == "POST") {
      return http_->Post(path.c_str(), body ? body->dump() : std::string("{}"), "application/json");
    }
    return http_->Get(path.c_str());
  }();
  if (!r) {
    return Unavailable("cannot reach pgshiftd at " + base_url_ + ": " +
                       DescribeTransportError(r.error()) +
                       " — is it running? start it with `pgshiftd --state FILE`");
  }
  if (r->status == 401) {
    // Say where credentials come from; the server's message says what was wrong.
    json answer = json::parse(r->body, nullptr, false);
    std::string why = answer.is_object() ? answer.value("error", "") : "";
    return Unauthenticated(why +
                           " (pgshift takes a token from --token, $PGSHIFT_TOKEN or "
                           "~/.config/pgshift/config.json, and a client certificate from "
                           "--cert/--key)");
  }
  json answer;
  bool is_json = true;
  try {
    answer = json::parse(r->body);
  } catch (const json::parse_error&) {
    is_json = false;
  }
  if (r->status >= 200 && r->status < 300) {
    if (!is_json) {
      return Internal("pgshiftd at " + base_url_ + " answered " + method + " " + path +
                      " with something that is not JSON; is that URL really pgshiftd?");
    }
    return answer;
  }
  if (is_json && answer.is_object() && answer.contains("error") && answer["error"].is_string()) {
    Code code = answer.contains("code") && answer["code"].is_string()
                    ? CodeFromName(answer["code"].get<std::string>())
                    : CodeForHttpStatus(r->status);
    if (code == Code::kOk) code = CodeForHttpStatus(r->status);
    return Status(code, answer["error"].get<std::string>());
  }
  std::string snippet = r->body.substr(0, 200);
  return Status(CodeForHttpStatus(r->status),
                "pgshiftd at " + base_url_ + " answered HTTP " + std::to_string(r->status) +
                    " to " + method + " " + path + (snippet.empty() ? "" : ": " + snippet));
}

Result<json> ApiClient::Health() { return Request("GET", "/healthz", nullptr); }

Result<json> ApiClient::CreateMigration(const json& spec) {
  return Request("POST", "/v1/migrations", &spec);
}

Result<json> ApiClient::ListMigrations() { return Request("GET", "/v1/migrations", nullptr); }

Result<json> ApiClient::GetMigration(const std::string& id) {
  return Request("GET", "/v1/migrations/" + EncodePathSegment(id), nullptr);
}

Result<json> ApiClient::Events(const std::string& id) {
  return Request("GET", "/v1/migrations/" + EncodePathSegment(id) + "/events", nullptr);
}

Result<json> ApiClient::ListDatabases() { return Request("GET", "/v1/databases", nullptr); }

Result<json> ApiClient::GetDatabase(const std::string& name) {
  return Request("GET", "/v1/databases/" + EncodePathSegment(name), nullptr);
}

Result<json> ApiClient::MigrateDatabase(const std::string& name, const json& body) {
  return Request("POST", "/v1/databases/" + EncodePathSegment(name) + "/migrations", &body);
}

Result<json> ApiClient::WhoAmI() { return Request("GET", "/v1/whoami", nullptr); }

Result<json> ApiClient::Audit(int limit) {
  return Request("GET", "/v1/audit?limit=" + std::to_string(limit), nullptr);
}

Result<json> ApiClient::Act(const std::string& id, const std::string& action, const json& body) {
  return Request("POST", "/v1/migrations/" + EncodePathSegment(id) + "/" + action, &body);
}

}  // namespace pgshift::cli
