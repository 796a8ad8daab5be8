// Small helpers the API's route handlers share: JSON answers, the error
// shape {"error":"...","code":"..."}, request-body parsing and paths.
// Pure functions over httplib values; thread-safe.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace httplib {
struct Response;
}

namespace pgshift::api {

void WriteJson(httplib::Response& res, int http_status, const nlohmann::json& body);
void WriteError(httplib::Response& res, int http_status, Code code, const std::string& message);
// The error answer for a non-OK Status (HttpStatusFor its code).
void WriteStatus(httplib::Response& res, const Status& st);

// Parses a request body that must be a JSON object. An empty body is {}
// when `allow_empty`, else an error naming `what` to send.
Result<nlohmann::json> ParseObjectBody(const std::string& body, bool allow_empty,
                                       const std::string& what);
// A list result as {"<key>":[...]} whether the service returned the bare
// array or the wrapped object already.
Result<nlohmann::json> Wrapped(Result<nlohmann::json> r, const char* key);

std::vector<std::string> SplitPath(std::string_view path);

}  // namespace pgshift::api
