#include "api/http_server.h"

#include <httplib.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <exception>
#include <string_view>
#include <vector>

#include "api/handlers.h"
#include "api/http_util.h"
#include "auth/cert_identity.h"

namespace pgshift::api {
namespace {

using nlohmann::json;

void MethodNotAllowed(httplib::Response& res, const std::string& method, const std::string& path,
                      const std::string& allow) {
  res.set_header("Allow", allow);
  WriteError(res, 405, Code::kInvalidArgument,
             "method " + method + " is not allowed on " + path + "; use " + allow);
}

std::string Endpoints() {
  std::string list;
  for (const auto& r : ServedRoutes()) {
    if (list.find(r.pattern) == std::string::npos) list += (list.empty() ? "" : ", ") + r.pattern;
  }
  return list;
}

// The pattern's {placeholders} bound to `parts`, or false when it does not match.
bool Match(std::string_view pattern, const std::vector<std::string>& parts,
           std::vector<std::string>* params) {
  auto want = SplitPath(pattern);
  if (want.size() != parts.size()) return false;
  params->clear();
  for (size_t i = 0; i < want.size(); ++i) {
    if (want[i].front() == '{') {
      params->push_back(parts[i]);
    } else if (want[i] != parts[i]) {
      return false;
    }
  }
  return true;
}

bool IsMigrationAction(const std::vector<std::string>& parts) {
  return parts.size() == 4 && parts[0] == "v1" && parts[1] == "migrations";
}

// Loads the certificate, key and (optional) client CA. Client certificates
// are asked for but not required, so a token over HTTPS works too; one that
// is presented must verify, else the handshake fails.
bool SetUpTls(SSL_CTX& ctx, const TlsOptions& tls) {
  SSL_CTX_set_min_proto_version(&ctx, TLS1_2_VERSION);
  if (SSL_CTX_use_certificate_chain_file(&ctx, tls.cert.c_str()) != 1) return false;
  if (SSL_CTX_use_PrivateKey_file(&ctx, tls.key.c_str(), SSL_FILETYPE_PEM) != 1) return false;
  if (SSL_CTX_check_private_key(&ctx) != 1) return false;
  if (!tls.client_ca.empty()) {
    if (SSL_CTX_load_verify_locations(&ctx, tls.client_ca.c_str(), nullptr) != 1) return false;
    STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(tls.client_ca.c_str());
    if (!names) return false;
    SSL_CTX_set_client_CA_list(&ctx, names);
    SSL_CTX_set_verify(&ctx, SSL_VERIFY_PEER, nullptr);
  }
  return true;
}

}  // namespace

void Call::Reply(int http_status, const json& body) { WriteJson(res, http_status, body); }
void Call::Fail(const Status& st) { WriteStatus(res, st); }

std::vector<ServedRoute> ServedRoutes() {
  std::vector<ServedRoute> out;
  for (const auto& r : RouteTable()) out.push_back({r.method, r.pattern});
  return out;
}

ApiServer::ApiServer(MigrationService& svc, std::string host, int port, ApiOptions options)
    : svc_(svc),
      host_(std::move(host)),
      port_(port),
      options_(std::move(options)),
      handlers_(std::make_unique<Handlers>(svc_, options_)) {}

ApiServer::~ApiServer() { Stop(); }

Result<std::unique_ptr<httplib::Server>> ApiServer::MakeServer() const {
  if (!options_.tls.enabled()) return std::make_unique<httplib::Server>();
  const TlsOptions tls = options_.tls;
  auto server =
      std::make_unique<httplib::SSLServer>([tls](SSL_CTX& ctx) { return SetUpTls(ctx, tls); });
  if (!server->is_valid()) {
    return InvalidArgument("cannot load the API's TLS files (--tls-cert " + tls.cert +
                           ", --tls-key " + tls.key +
                           (tls.client_ca.empty() ? "" : ", --client-ca " + tls.client_ca) +
                           "): check they exist, are PEM and that the key matches the certificate");
  }
  return std::unique_ptr<httplib::Server>(std::move(server));
}

Status ApiServer::Start() {
  if (server_) return FailedPrecondition("the API server is already started");
  PGSHIFT_ASSIGN_OR_RETURN(auto server, MakeServer());
  server->set_tcp_nodelay(true);
  server->set_payload_max_length(kMaxRequestBodyBytes);
  server->set_read_timeout(30);
  // httplib's default also sets SO_REUSEPORT, which would let a second
  // pgshiftd bind the same port and silently share requests.
  server->set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, reinterpret_cast<const void*>(&yes), sizeof(yes));
  });
  server->set_write_timeout(30);
  // Idle keep-alive connections hold Stop() up to this long.
  server->set_keep_alive_timeout(2);

  auto handler = [this](const httplib::Request& req, httplib::Response& res) { Handle(req, res); };
  // One catch-all handler per method so routing (and 404 vs 405) is ours.
  server->Get(".*", handler);
  server->Post(".*", handler);
  server->Put(".*", handler);
  server->Patch(".*", handler);
  server->Delete(".*", handler);
  server->Options(".*", handler);

  // Errors httplib produces itself (oversized body, malformed request line):
  // give them the same JSON shape.
  httplib::Server::HandlerWithResponse on_error = [](const httplib::Request&,
                                                     httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    std::string message;
    switch (res.status) {
      case 413:
        message = "request body exceeds " + std::to_string(kMaxRequestBodyBytes) +
                  " bytes (1 MiB); send a smaller spec";
        break;
      case 414:
        message = "request URI too long";
        break;
      case 404:
        message = "not found";
        break;
      default:
        message = "malformed HTTP request";
        break;
    }
    WriteError(res, res.status, res.status == 404 ? Code::kNotFound : Code::kInvalidArgument,
               message);
    return httplib::Server::HandlerResponse::Handled;
  };
  server->set_error_handler(std::move(on_error));
  server->set_exception_handler(
      [](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "unknown exception";
        try {
          if (ep) std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        spdlog::error("api: {} {} raised: {}", req.method, req.path, what);
        WriteError(res, 500, Code::kInternal, "internal error: " + what);
      });
  server->set_logger([](const httplib::Request& req, const httplib::Response& res) {
    if (res.status >= 500) {
      spdlog::warn("api: {} {} -> {}", req.method, req.path, res.status);
    } else {
      spdlog::debug("api: {} {} -> {}", req.method, req.path, res.status);
    }
  });

  int bound = port_;
  if (port_ == 0) {
    bound = server->bind_to_any_port(host_);
    if (bound < 0) return Unavailable("cannot bind the API server to " + host_ + " on any port");
  } else if (!server->bind_to_port(host_, port_)) {
    return Unavailable("cannot bind the API server to " + host_ + ":" + std::to_string(port_) +
                       "; is another pgshiftd (or something else) using that port?");
  }
  port_ = bound;
  server_ = std::move(server);
  thread_ = std::thread([srv = server_.get()] { srv->listen_after_bind(); });
  // httplib's stop() is a no-op until the listen loop runs; wait for it so
  // that Stop() right after Start() cannot hang.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!server_->is_running() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (!server_->is_running()) {
    Stop();
    return Internal("the API server's listen loop did not start");
  }
  spdlog::info("api: listening on {}://{}:{}", options_.tls.enabled() ? "https" : "http", host_,
               port_);
  return Status::OK();
}

void ApiServer::Stop() {
  if (!server_) return;
  server_->stop();
  if (thread_.joinable()) thread_.join();
  server_.reset();
}

void ApiServer::Handle(const httplib::Request& req, httplib::Response& res) {
  if (req.body.size() > kMaxRequestBodyBytes) {
    // Chunked bodies bypass httplib's Content-Length check.
    WriteError(res, 413, Code::kInvalidArgument,
               "request body exceeds " + std::to_string(kMaxRequestBodyBytes) +
                   " bytes (1 MiB); send a smaller spec");
    return;
  }
  const std::string& path = req.path;
  const auto parts = SplitPath(path);
  const std::string method = req.method == "HEAD" ? "GET" : req.method;
  std::vector<std::string> params;
  const Route* route = nullptr;
  std::string allow;
  for (const auto& r : RouteTable()) {
    std::vector<std::string> p;
    if (!Match(r.pattern, parts, &p)) continue;
    if (method == r.method) {
      route = &r;
      params = std::move(p);
      break;
    }
    if (allow.find(r.method) == std::string::npos)
      allow += (allow.empty() ? "" : ", ") + std::string(r.method);
  }
  if (!route) {
    if (!allow.empty()) return MethodNotAllowed(res, req.method, path, allow);
    if (options_.fallback && options_.fallback(req, res)) return;
    if (IsMigrationAction(parts)) {
      return WriteError(res, 404, Code::kNotFound,
                        "unknown migration action '" + parts[3] +
                            "'; actions: events (GET), cutover, rollback, finalize, override, "
                            "retry, drop_slot (POST)");
    }
    return WriteError(res, 404, Code::kNotFound,
                      "no such endpoint: " + path + " (endpoints: " + Endpoints() + ")");
  }
  Call call{req, res, std::move(params), {}};
  if (route->access == Access::kPublic || (route->access == Access::kMetrics && !options_.auth)) {
    call.caller = {.identity = auth::kDevIdentity, .dev_mode = !options_.auth};
  } else if (!options_.auth) {
    call.caller = auth::Authenticator::DevMode().Authenticate({}).value();
  } else {
    auth::Credentials creds{.authorization = req.get_header_value("Authorization")};
    if (req.ssl) creds.cert_names = auth::VerifiedPeerNames(req.ssl);
    auto caller = options_.auth->Authenticate(creds);
    if (!caller.ok()) return WriteStatus(res, caller.status());
    call.caller = std::move(*caller);
    Status allowed = Status::OK();
    if (route->access == Access::kMember) allowed = auth::RequireRole(call.caller);
    if (route->access == Access::kMetrics) {
      allowed = auth::RequireOperator(call.caller, "GET /metrics");
    }
    if (!allowed.ok()) return WriteStatus(res, allowed);
  }
  (handlers_.get()->*(route->handle))(call);
}

}  // namespace pgshift::api
