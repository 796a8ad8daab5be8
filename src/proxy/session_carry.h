// What a session holds on its server beyond settings and protocol-level
// statements, and how a move carries it (README: "What moves with a
// session"): SQL-level prepared statements, LISTEN channels and session
// advisory locks are re-created on the new server; temporary tables and
// WITH HOLD cursors cannot be, and end the session with a FATAL naming them.
//
// Detection is cheap: a keyword scan of each query text the session sends
// (StateKeywords) marks the session, and only a marked session is probed
// (kProbeSql, one query on its old server) when it moves. The kernel splice
// program (splice/pg_splice.bpf.c) hands the same texts to the proxy, so a
// spliced session cannot run them unseen.
//
// Pure functions, thread-safe; CarryGate locks internally.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace pgshift::proxy {

// Kinds of server-side session state a statement may create (bit flags).
inline constexpr uint32_t kStatePrepared = 1u << 0;   // PREPARE
inline constexpr uint32_t kStateListen = 1u << 1;     // LISTEN
inline constexpr uint32_t kStateAdvisory = 1u << 2;   // pg_advisory_lock and friends
inline constexpr uint32_t kStateTemporary = 1u << 3;  // CREATE TEMP ..., pg_temp.x
inline constexpr uint32_t kStateHoldable = 1u << 4;   // DECLARE ... WITH HOLD

// The kinds whose keyword appears in `sql` (ASCII case-insensitive
// substrings "prepare", "listen", "advisory", "temp", "hold"): a superset —
// a false hit only costs one probe at the session's next move.
uint32_t StateKeywords(std::string_view sql);

// What the probe found on the old server.
struct CarriedState {
  struct Prepared {
    std::string name;       // as pg_prepared_statements shows it (folded)
    std::string statement;  // the client's query text that created it
  };
  struct AdvisoryLock {
    std::string key;  // "k" (one int8 key) or "k1, k2" (two int4 keys)
    bool shared = false;
  };
  std::vector<Prepared> prepared;
  std::vector<std::string> channels;
  std::vector<AdvisoryLock> locks;
  std::vector<std::string> temp_tables;
  std::vector<std::string> holdable_cursors;
  bool empty() const {
    return prepared.empty() && channels.empty() && locks.empty() && temp_tables.empty() &&
           holdable_cursors.empty();
  }
};

// One query on the old server at a boundary; each row is (kind, a, b).
extern const char* const kProbeSql;
// Adds one probe row; an error for a row it does not understand.
Status AddProbeRow(const std::vector<std::string>& row, CarriedState* s);

// Why the state cannot move ("" when it can): names the temporary tables and
// WITH HOLD cursors.
std::string Uncarriable(const CarriedState& s);

// The SQL that re-creates the carried state on a new server (PREPARE and
// LISTEN statements; "" when there are none), and the query that takes the
// advisory locks again (one boolean column per lock, in `locks` order; ""
// when there are none). A prepared statement whose PREPARE cannot be found
// in its text is an error naming it.
Result<std::string> RecreateSql(const CarriedState& s);
std::string LockSql(const CarriedState& s);

// The statements of a query string: split at top-level semicolons (quotes,
// double quotes, dollar quotes and comments respected), trimmed, empty ones
// dropped.
std::vector<std::string> SplitStatements(std::string_view sql);
// The name a "PREPARE name ..." statement prepares (unquoted names folded to
// lower case), or "" when `stmt` is not a PREPARE.
std::string PreparedName(std::string_view stmt);
// "name" as an SQL identifier (double-quoted, quotes doubled).
std::string QuoteIdent(std::string_view name);

// Sessions that may hold session advisory locks, with the route generation
// each is on. After a switch the other sessions of the route wait until every
// such session has moved (and taken its locks again on the new server), so
// none can take a carried lock first. Thread-safe.
class CarryGate {
 public:
  uint64_t Add(uint64_t generation);
  void Update(uint64_t id, uint64_t generation);
  void Remove(uint64_t id);
  // True while a registered session other than `self` is on an older generation.
  bool Behind(uint64_t generation, uint64_t self = 0) const;

 private:
  std::atomic<int64_t> count_{0};  // lets Behind skip the lock when nobody is registered
  mutable std::mutex mu_;
  uint64_t next_ = 1;
  std::map<uint64_t, uint64_t> sessions_;  // id → generation
};

}  // namespace pgshift::proxy
