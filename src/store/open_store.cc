#include "store/open_store.h"

#include <regex>

#include "store/pg_state_store.h"

namespace pgshift {

bool IsPostgresStoreUrl(const std::string& url) {
  return url.rfind("postgresql://", 0) == 0 || url.rfind("postgres://", 0) == 0;
}

Result<std::unique_ptr<Store>> OpenStore(const std::string& url) {
  if (url.empty())
    return InvalidArgument("--store is empty: give sqlite:/path or postgresql://...");
  if (IsPostgresStoreUrl(url)) {
    PGSHIFT_ASSIGN_OR_RETURN(auto pg, PgStateStore::Open({.conninfo = url}));
    return std::unique_ptr<Store>(std::move(pg));
  }
  constexpr std::string_view kSqlite = "sqlite:";
  const std::string path = url.rfind(kSqlite, 0) == 0 ? url.substr(kSqlite.size()) : url;
  if (path.empty()) return InvalidArgument("--store sqlite: needs a file path (sqlite:/path)");
  PGSHIFT_ASSIGN_OR_RETURN(auto lite, SqliteStateStore::Open(path));
  return std::unique_ptr<Store>(std::move(lite));
}

std::string RedactStoreUrl(const std::string& url) {
  // scheme://user:password@host → scheme://user:***@host; password=... → password=***
  static const std::regex kUserinfo(R"(^(\w+://[^:/@]*):[^@/]*@)");
  static const std::regex kParam(R"(password=[^&\s]*)");
  return std::regex_replace(std::regex_replace(url, kUserinfo, "$1:***@"), kParam, "password=***");
}

}  // namespace pgshift
