// How the API shows a migration to one caller: the engine's JSON plus
// "database" (the inventory database it migrates, or null for the expert
// form) and "actions" (what this caller may request now), with every
// password in the spec masked. Pure functions; thread-safe.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace pgshift::api {

inline constexpr const char* kMaskedSecret = "********";

// The actions the engine accepts in the migration's phase and state (the
// rules of Engine::Act): cutover, rollback, finalize, override, retry and
// drop_slot (only while a slot_health finding names a slot).
std::vector<std::string> AvailableActions(const nlohmann::json& migration);

// A copy of `spec` whose connection strings (any "conninfo" or
// "admin_conninfo" field) carry kMaskedSecret instead of a password.
nlohmann::json RedactSpec(const nlohmann::json& spec);
std::string RedactConninfo(const std::string& conninfo);

// `migration` with "database" ("" → null), "actions" (empty unless
// `can_act`) and its spec redacted.
nlohmann::json MigrationView(nlohmann::json migration, const std::string& database, bool can_act);

}  // namespace pgshift::api
