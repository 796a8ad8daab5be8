// OpenStore: the state store a pgshiftd's --store flag names.
//   postgresql://... or postgres://...  PgStateStore (several pgshiftd)
//   sqlite:/path or a plain path        SqliteStateStore (one pgshiftd)
// Thread-safe.
#pragma once

#include <memory>
#include <string>

#include "common/status.h"
#include "store/state_store.h"

namespace pgshift {

Result<std::unique_ptr<Store>> OpenStore(const std::string& url);

// True when `url` names a PostgreSQL store.
bool IsPostgresStoreUrl(const std::string& url);

// `url` with any password replaced by "***" (for logs).
std::string RedactStoreUrl(const std::string& url);

}  // namespace pgshift
