#include "api/http_server.h"

#include <httplib.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <exception>
#include <string_view>
#include <vector>

#include "model/phase.h"

namespace pgshift::api {
namespace {

using nlohmann::json;

constexpr const char* kJson = "application/json";

void WriteJson(httplib::Response& res, int http_status, const json& body) {
  res.status = http_status;
  res.set_content(body.dump() + "\n", kJson);
}

void WriteError(httplib::Response& res, int http_status, Code code, const std::string& message) {
  WriteJson(res, http_status, json{{"error", message}, {"code", CodeName(code)}});
}

void WriteStatus(httplib::Response& res, const Status& st) {
  WriteError(res, HttpStatusFor(st.code()), st.code(), st.message());
}

void MethodNotAllowed(httplib::Response& res, const std::string& method, const std::string& path,
                      const std::string& allow) {
  res.set_header("Allow", allow);
  WriteError(res, 405, Code::kInvalidArgument,
             "method " + method + " is not allowed on " + path + "; use " + allow);
}

void UnknownPath(httplib::Response& res, const std::string& path) {
  WriteError(res, 404, Code::kNotFound,
             "no such endpoint: " + path +
                 " (endpoints: /healthz, /v1/phases, /v1/migrations, /v1/migrations/{id}, "
                 "/v1/migrations/{id}/events, "
                 "/v1/migrations/{id}/{cutover|rollback|finalize|override|retry|drop_slot})");
}

bool IsBlank(const std::string& s) { return s.find_first_not_of(" \t\r\n") == std::string::npos; }

// Parses a request body that must be a JSON object. An empty body is {}
// when `allow_empty`, else an error naming what to send.
Result<json> ParseObjectBody(const std::string& body, bool allow_empty, const std::string& what) {
  if (IsBlank(body)) {
    if (allow_empty) return json::object();
    return InvalidArgument("request body is empty; send " + what + " as a JSON object");
  }
  json parsed;
  try {
    parsed = json::parse(body);
  } catch (const json::parse_error& e) {
    // e.what() starts with "[json.exception.parse_error.101] "; drop that tag.
    std::string detail = e.what();
    if (auto pos = detail.find("] "); pos != std::string::npos) detail = detail.substr(pos + 2);
    return InvalidArgument("invalid JSON in request body at byte " + std::to_string(e.byte) + ": " +
                           detail);
  }
  if (!parsed.is_object()) {
    return InvalidArgument("request body must be a JSON object (" + what + "), got " +
                           std::string(parsed.type_name()));
  }
  return parsed;
}

// Wraps a list result as {"<key>":[...]} whether the service returned the
// bare array or the wrapped object already.
Result<json> Wrapped(Result<json> r, const char* key) {
  if (!r.ok()) return r;
  if (r->is_array()) return json{{key, std::move(*r)}};
  if (r->is_object() && r->contains(key)) return r;
  return Internal(std::string("the migration service returned a malformed ") + key + " list");
}

std::vector<std::string> SplitPath(std::string_view path) {
  std::vector<std::string> parts;
  size_t i = 0;
  while (i < path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    if (j > i) parts.emplace_back(path.substr(i, j - i));
    i = j + 1;
  }
  return parts;
}

bool IsAction(const std::string& s) {
  return s == "cutover" || s == "rollback" || s == "finalize" || s == "override" || s == "retry" ||
         s == "drop_slot";
}

}  // namespace

ApiServer::ApiServer(MigrationService& svc, std::string host, int port)
    : svc_(svc), host_(std::move(host)), port_(port) {}

ApiServer::~ApiServer() { Stop(); }

Status ApiServer::Start() {
  if (server_) return FailedPrecondition("the API server is already started");
  auto server = std::make_unique<httplib::Server>();
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
  spdlog::info("api: listening on http://{}:{}", host_, port_);
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
  auto parts = SplitPath(path);
  if (parts.size() == 1 && parts[0] == "healthz") {
    if (req.method != "GET" && req.method != "HEAD")
      return MethodNotAllowed(res, req.method, path, "GET");
    return WriteJson(res, 200, json{{"ok", true}});
  }
  if (parts.size() == 2 && parts[0] == "v1" && parts[1] == "phases") {
    if (req.method != "GET" && req.method != "HEAD")
      return MethodNotAllowed(res, req.method, path, "GET");
    return WriteJson(res, 200, PhaseTableJson());
  }
  if (parts.size() >= 2 && parts[0] == "v1" && parts[1] == "migrations") {
    return HandleMigrations(req, res, path);
  }
  UnknownPath(res, path);
}

void ApiServer::HandleMigrations(const httplib::Request& req, httplib::Response& res,
                                 const std::string& path) {
  auto parts = SplitPath(path);
  const bool get = req.method == "GET" || req.method == "HEAD";
  const bool post = req.method == "POST";

  if (parts.size() == 2) {  // /v1/migrations
    if (post) {
      auto spec = ParseObjectBody(req.body, /*allow_empty=*/false, "the migration spec");
      if (!spec.ok()) return WriteStatus(res, spec.status());
      auto created = svc_.Create(*spec);
      if (!created.ok()) return WriteStatus(res, created.status());
      return WriteJson(res, 201, *created);
    }
    if (get) {
      auto list = Wrapped(svc_.List(), "migrations");
      if (!list.ok()) return WriteStatus(res, list.status());
      return WriteJson(res, 200, *list);
    }
    return MethodNotAllowed(res, req.method, path, "GET, POST");
  }

  const std::string& id = parts[2];
  if (parts.size() == 3) {  // /v1/migrations/{id}
    if (!get) return MethodNotAllowed(res, req.method, path, "GET");
    auto m = svc_.Get(id);
    if (!m.ok()) return WriteStatus(res, m.status());
    return WriteJson(res, 200, *m);
  }
  if (parts.size() == 4 && parts[3] == "events") {
    if (!get) return MethodNotAllowed(res, req.method, path, "GET");
    auto events = Wrapped(svc_.Events(id), "events");
    if (!events.ok()) return WriteStatus(res, events.status());
    return WriteJson(res, 200, *events);
  }
  if (parts.size() == 4 && IsAction(parts[3])) {
    const std::string& action = parts[3];
    if (!post) return MethodNotAllowed(res, req.method, path, "POST");
    auto body = ParseObjectBody(req.body, /*allow_empty=*/true, "the " + action + " options");
    if (!body.ok()) return WriteStatus(res, body.status());
    auto m = svc_.Act(id, action, *body);
    if (!m.ok()) return WriteStatus(res, m.status());
    return WriteJson(res, action == "override" ? 200 : 202, *m);
  }
  if (parts.size() == 4) {
    return WriteError(res, 404, Code::kNotFound,
                      "unknown migration action '" + parts[3] +
                          "'; actions: events (GET), cutover, rollback, finalize, override, retry, "
                          "drop_slot (POST)");
  }
  UnknownPath(res, path);
}

}  // namespace pgshift::api
