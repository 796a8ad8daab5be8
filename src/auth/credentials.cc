#include "auth/credentials.h"

#include <openssl/evp.h>

#include <sstream>

#include "auth/config_doc.h"
#include "common/os.h"

namespace pgshift::auth {
namespace {

using nlohmann::json;

bool StartsLikeMapping(const std::string& text) {
  for (char c : text) {
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') continue;
    return c == '{';
  }
  return false;
}

std::string Trim(const std::string& s) {
  auto b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  auto e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}

// A list of identity strings at `pointer` of `doc`.
Result<std::vector<std::string>> Identities(const ConfigDoc& doc, const std::string& pointer,
                                            const json& v) {
  if (!v.is_array()) return doc.Error(pointer, "must be a list of identities");
  std::vector<std::string> out;
  for (size_t i = 0; i < v.size(); ++i) {
    const std::string p = pointer + "/" + std::to_string(i);
    if (!v[i].is_string() || v[i].get<std::string>().empty()) {
      return doc.Error(p, "must be an identity (a token's name, a certificate CN or SAN)");
    }
    out.push_back(v[i].get<std::string>());
  }
  return out;
}

}  // namespace

std::string Sha256Hex(const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out += kHex[md[i] >> 4];
    out += kHex[md[i] & 15];
  }
  return out;
}

Status TokenTable::Add(const std::string& token, const std::string& identity,
                       const std::string& where) {
  if (token.size() < kMinTokenLength) {
    return InvalidArgument(where + ": a token must be at least " + std::to_string(kMinTokenLength) +
                           " characters (e.g. `openssl rand -hex 24`)");
  }
  if (identity.empty()) return InvalidArgument(where + ": the token has no identity");
  if (!by_digest_.emplace(Sha256Hex(token), identity).second) {
    return InvalidArgument(where + ": this token is listed twice");
  }
  return Status::OK();
}

Result<TokenTable> TokenTable::Parse(const std::string& text, const std::string& path) {
  TokenTable t;
  if (StartsLikeMapping(text)) {
    PGSHIFT_ASSIGN_OR_RETURN(ConfigDoc doc, ParseConfigDoc(text, path));
    if (!doc.root.is_object()) return doc.Error("", "must map each token to an identity");
    for (const auto& [token, identity] : doc.root.items()) {
      // The token itself is the key: name the line, never the token.
      const std::string where = path + ":" + std::to_string(doc.LineOf("/" + PointerToken(token)));
      if (!identity.is_string()) return InvalidArgument(where + ": the identity must be a string");
      PGSHIFT_RETURN_IF_ERROR(t.Add(token, identity.get<std::string>(), where));
    }
  } else {
    std::istringstream in(text);
    std::string line;
    int n = 0;
    while (std::getline(in, line)) {
      ++n;
      line = Trim(line);
      if (line.empty() || line[0] == '#') continue;
      const std::string where = path + ":" + std::to_string(n);
      auto sep = line.find_first_of(" \t");
      if (sep == std::string::npos) {
        return InvalidArgument(where + ": expected '<token> <identity>'");
      }
      PGSHIFT_RETURN_IF_ERROR(t.Add(line.substr(0, sep), Trim(line.substr(sep)), where));
    }
  }
  if (t.by_digest_.empty()) return InvalidArgument(path + ": no tokens");
  return t;
}

Result<TokenTable> TokenTable::Load(const std::string& path) {
  PGSHIFT_RETURN_IF_ERROR(CheckPrivateFile(path, "the tokens file"));
  PGSHIFT_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return Parse(text, path);
}

std::string TokenTable::IdentityOf(const std::string& token) const {
  if (token.empty()) return "";
  auto it = by_digest_.find(Sha256Hex(token));
  return it == by_digest_.end() ? "" : it->second;
}

Result<AccessPolicy> AccessPolicy::Parse(const std::string& text, const std::string& path) {
  PGSHIFT_ASSIGN_OR_RETURN(ConfigDoc doc, ParseConfigDoc(text, path));
  AccessPolicy a;
  a.path_ = path;
  if (!doc.root.is_object()) {
    return doc.Error("", "must be a mapping with 'operators' and/or 'teams'");
  }
  for (const auto& [k, v] : doc.root.items()) {
    if (k == "operators") {
      PGSHIFT_ASSIGN_OR_RETURN(auto ids, Identities(doc, "/operators", v));
      a.operators_.insert(ids.begin(), ids.end());
    } else if (k == "teams") {
      if (!v.is_object()) return doc.Error("/teams", "must map each team to its identities");
      for (const auto& [team, members] : v.items()) {
        const std::string p = "/teams/" + PointerToken(team);
        PGSHIFT_ASSIGN_OR_RETURN(auto ids, Identities(doc, p, members));
        for (const auto& id : ids) {
          auto [it, fresh] = a.team_of_.emplace(id, team);
          if (!fresh && it->second != team) {
            return doc.Error(p, "identity '" + id + "' is already in team '" + it->second +
                                    "'; an identity belongs to one team");
          }
        }
      }
    } else {
      return doc.Error("/" + PointerToken(k), "unknown field (allowed: operators, teams)");
    }
  }
  return a;
}

Result<AccessPolicy> AccessPolicy::Load(const std::string& path) {
  PGSHIFT_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return Parse(text, path);
}

Role AccessPolicy::RoleOf(const std::string& identity) const {
  Role r;
  r.is_operator = operators_.count(identity) > 0;
  if (auto it = team_of_.find(identity); it != team_of_.end()) r.team = it->second;
  return r;
}

}  // namespace pgshift::auth
