#include "provider/credentials.h"

#include <map>

#include "pg/conn.h"

namespace pgshift {

Result<Credentials> ConninfoCredentials::Get() const {
  PGSHIFT_ASSIGN_OR_RETURN(auto kv, ParseConninfo(conninfo_));
  Credentials c;
  if (auto u = kv.find("user"); u != kv.end()) c.user = u->second;
  if (auto p = kv.find("password"); p != kv.end()) c.password = p->second;
  return c;
}

Result<std::string> WithCredentials(const std::string& conninfo, const Credentials& c) {
  std::map<std::string, std::string> overrides;
  if (!c.user.empty()) overrides["user"] = c.user;
  if (!c.password.empty()) overrides["password"] = c.password;
  return WithConninfo(conninfo, overrides);
}

}  // namespace pgshift
