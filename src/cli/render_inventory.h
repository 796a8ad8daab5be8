// Human-readable views of the self-service JSON: the databases table, one
// database, the caller's identity and the audit log. Like render.h they
// tolerate missing or oddly typed fields. Pure functions; thread-safe.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace pgshift::cli {

// `list` is {"databases":[...],"warnings":[...]}.
std::string RenderDatabases(const nlohmann::json& list);
std::string RenderDatabase(const nlohmann::json& db);
std::string RenderWhoAmI(const nlohmann::json& who);
// `audit` is {"entries":[...]}.
std::string RenderAudit(const nlohmann::json& audit);

}  // namespace pgshift::cli
