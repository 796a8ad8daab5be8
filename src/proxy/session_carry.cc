#include "proxy/session_carry.h"

#include <algorithm>
#include <array>

namespace pgshift::proxy {
namespace {

struct Keyword {
  std::string_view word;
  uint32_t kind;
};
constexpr std::array<Keyword, 5> kKeywords = {{{"prepare", kStatePrepared},
                                               {"listen", kStateListen},
                                               {"advisory", kStateAdvisory},
                                               {"temp", kStateTemporary},
                                               {"hold", kStateHoldable}}};

char Lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + ('a' - 'A')) : c; }

bool IsIdentChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '$' || static_cast<unsigned char>(c) >= 0x80;
}

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f'; }

// Past the comment or quoted text that starts at `i` (or `i` when none does).
size_t SkipQuoted(std::string_view s, size_t i) {
  const size_t n = s.size();
  if (s.compare(i, 2, "--") == 0) {
    size_t e = s.find('\n', i);
    return e == std::string_view::npos ? n : e + 1;
  }
  if (s.compare(i, 2, "/*") == 0) {  // comments nest
    int depth = 0;
    while (i < n) {
      if (s.compare(i, 2, "/*") == 0) {
        depth++;
        i += 2;
      } else if (s.compare(i, 2, "*/") == 0) {
        i += 2;
        if (--depth == 0) return i;
      } else {
        i++;
      }
    }
    return n;
  }
  char c = s[i];
  if (c == '\'' || c == '"') {
    // E'...' strings take backslash escapes.
    bool escapes = c == '\'' && i > 0 && (s[i - 1] == 'e' || s[i - 1] == 'E') &&
                   (i < 2 || !IsIdentChar(s[i - 2]));
    for (size_t j = i + 1; j < n; j++) {
      if (escapes && s[j] == '\\') {
        j++;
      } else if (s[j] == c) {
        if (j + 1 < n && s[j + 1] == c) {
          j++;  // doubled quote
          continue;
        }
        return j + 1;
      }
    }
    return n;
  }
  if (c == '$' && (i == 0 || !IsIdentChar(s[i - 1]))) {
    size_t j = i + 1;
    if (j < n && s[j] >= '0' && s[j] <= '9') return i;  // $1: a parameter
    while (j < n && IsIdentChar(s[j]) && s[j] != '$') j++;
    if (j >= n || s[j] != '$') return i;
    std::string_view tag = s.substr(i, j - i + 1);
    size_t end = s.find(tag, j + 1);
    return end == std::string_view::npos ? n : end + tag.size();
  }
  return i;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

bool IsLockKey(std::string_view k) {
  if (k.empty()) return false;
  for (char c : k)
    if (!((c >= '0' && c <= '9') || c == '-' || c == ',' || c == ' ')) return false;
  return true;
}

std::string JoinNames(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + QuoteIdent(n);
  return out;
}

}  // namespace

const char* const kProbeSql =
    "SELECT 'prepared', name, statement FROM pg_catalog.pg_prepared_statements WHERE from_sql "
    "UNION ALL SELECT 'listen', c, '' FROM pg_catalog.pg_listening_channels() AS c "
    "UNION ALL SELECT CASE WHEN mode = 'ShareLock' THEN 'lock_shared' ELSE 'lock' END, "
    "CASE WHEN objsubid = 1 THEN ((classid::int8 << 32) | objid::int8)::text "
    "ELSE classid::int4::text || ', ' || objid::int4::text END, '' "
    "FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND granted "
    "AND pid = pg_catalog.pg_backend_pid() "
    "UNION ALL SELECT 'temp', relname::text, '' FROM pg_catalog.pg_class "
    "WHERE relnamespace = pg_catalog.pg_my_temp_schema() AND relkind IN ('r', 'p', 'v', 'm', 'S', "
    "'f') "
    "UNION ALL SELECT 'cursor', name, '' FROM pg_catalog.pg_cursors WHERE is_holdable";

uint32_t StateKeywords(std::string_view sql) {
  uint32_t kinds = 0;
  // ASCII folding, not std::tolower: this runs on every query's text.
  for (const Keyword& k : kKeywords) {
    auto it = std::search(sql.begin(), sql.end(), k.word.begin(), k.word.end(),
                          [](char a, char b) { return Lower(a) == b; });
    if (it != sql.end()) kinds |= k.kind;
  }
  return kinds;
}

Status AddProbeRow(const std::vector<std::string>& row, CarriedState* s) {
  if (row.size() != 3) return Internal("session state probe: a row without 3 columns");
  const std::string& kind = row[0];
  if (kind == "prepared") {
    s->prepared.push_back({row[1], row[2]});
  } else if (kind == "listen") {
    s->channels.push_back(row[1]);
  } else if (kind == "lock" || kind == "lock_shared") {
    if (!IsLockKey(row[1])) return Internal("session state probe: bad advisory lock key " + row[1]);
    s->locks.push_back({row[1], kind == "lock_shared"});
  } else if (kind == "temp") {
    s->temp_tables.push_back(row[1]);
  } else if (kind == "cursor") {
    s->holdable_cursors.push_back(row[1]);
  } else {
    return Internal("session state probe: unknown row kind " + kind);
  }
  return Status::OK();
}

std::string Uncarriable(const CarriedState& s) {
  std::string why;
  if (!s.temp_tables.empty()) why = "temporary table(s) " + JoinNames(s.temp_tables);
  if (!s.holdable_cursors.empty())
    why += (why.empty() ? "" : " and ") + std::string("WITH HOLD cursor(s) ") +
           JoinNames(s.holdable_cursors);
  return why;
}

std::vector<std::string> SplitStatements(std::string_view sql) {
  std::vector<std::string> out;
  size_t start = 0, i = 0;
  auto emit = [&](size_t end) {
    std::string_view st = Trim(sql.substr(start, end - start));
    if (!st.empty()) out.emplace_back(st);
  };
  while (i < sql.size()) {
    size_t past = SkipQuoted(sql, i);
    if (past != i) {
      i = past;
      continue;
    }
    if (sql[i] == ';') {
      emit(i);
      start = i + 1;
    }
    i++;
  }
  emit(sql.size());
  return out;
}

std::string PreparedName(std::string_view stmt) {
  size_t i = 0;
  while (true) {  // leading blanks and comments
    while (i < stmt.size() && IsSpace(stmt[i])) i++;
    if (i < stmt.size() && (stmt.compare(i, 2, "--") == 0 || stmt.compare(i, 2, "/*") == 0))
      i = SkipQuoted(stmt, i);
    else
      break;
  }
  constexpr std::string_view kPrepare = "prepare";
  if (stmt.size() - i <= kPrepare.size()) return "";
  for (size_t k = 0; k < kPrepare.size(); k++)
    if (Lower(stmt[i + k]) != kPrepare[k]) return "";
  i += kPrepare.size();
  if (!IsSpace(stmt[i])) return "";
  while (i < stmt.size() && IsSpace(stmt[i])) i++;
  std::string name;
  if (i < stmt.size() && stmt[i] == '"') {
    for (size_t j = i + 1; j < stmt.size(); j++) {
      if (stmt[j] != '"') {
        name += stmt[j];
      } else if (j + 1 < stmt.size() && stmt[j + 1] == '"') {
        name += '"';
        j++;
      } else {
        return name;
      }
    }
    return "";
  }
  while (i < stmt.size() && IsIdentChar(stmt[i])) name += Lower(stmt[i++]);
  return name;
}

std::string QuoteIdent(std::string_view name) {
  std::string out = "\"";
  for (char c : name) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

Result<std::string> RecreateSql(const CarriedState& s) {
  std::string sql;
  for (const auto& p : s.prepared) {
    std::string found;
    for (const auto& st : SplitStatements(p.statement)) {
      if (PreparedName(st) == p.name) {
        found = st;
        break;
      }
    }
    if (found.empty())
      return FailedPrecondition("the text of prepared statement " + QuoteIdent(p.name) +
                                " does not show its PREPARE");
    sql += found + ";\n";
  }
  for (const auto& c : s.channels) sql += "LISTEN " + QuoteIdent(c) + ";\n";
  return sql;
}

std::string LockSql(const CarriedState& s) {
  if (s.locks.empty()) return "";
  std::string sql = "SELECT ";
  for (size_t i = 0; i < s.locks.size(); i++) {
    const auto& l = s.locks[i];
    sql += std::string(i ? ", " : "") + "pg_catalog.pg_try_advisory_lock" +
           (l.shared ? "_shared(" : "(") + l.key + ")";
  }
  return sql;
}

uint64_t CarryGate::Add(uint64_t generation) {
  std::lock_guard<std::mutex> l(mu_);
  uint64_t id = next_++;
  sessions_.emplace(id, generation);
  count_++;
  return id;
}

void CarryGate::Update(uint64_t id, uint64_t generation) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = sessions_.find(id);
  if (it != sessions_.end()) it->second = generation;
}

void CarryGate::Remove(uint64_t id) {
  std::lock_guard<std::mutex> l(mu_);
  if (sessions_.erase(id) > 0) count_--;
}

bool CarryGate::Behind(uint64_t generation, uint64_t self) const {
  if (count_.load() == 0) return false;
  std::lock_guard<std::mutex> l(mu_);
  for (const auto& [id, g] : sessions_)
    if (id != self && g < generation) return true;
  return false;
}

}  // namespace pgshift::proxy
