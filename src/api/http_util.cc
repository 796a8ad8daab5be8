#include "api/http_util.h"

#include <httplib.h>

namespace pgshift::api {
namespace {

using nlohmann::json;

constexpr const char* kJson = "application/json";

bool IsBlank(const std::string& s) { return s.find_first_not_of(" \t\r\n") == std::string::npos; }

}  // namespace

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

}  // namespace pgshift::api
