// PgConn: an RAII libpq connection with errors as values, plus conninfo
// helpers. One PgConn is used by one thread at a time (libpq's rule).
#pragma once

#include <libpq-fe.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace pgshift {

struct PgResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using PgResultPtr = std::unique_ptr<PGresult, PgResultDeleter>;

struct PgConnDeleter {
  void operator()(PGconn* c) const { PQfinish(c); }
};
using PgConnPtr = std::unique_ptr<PGconn, PgConnDeleter>;

// A materialised result set (text format).
class Rows {
 public:
  Rows() = default;
  explicit Rows(const PGresult* res);

  size_t size() const { return rows_.size(); }
  bool empty() const { return rows_.empty(); }
  const std::vector<std::string>& columns() const { return columns_; }
  // The value at (row, column name), or nullopt for SQL NULL.
  const std::optional<std::string>& Get(size_t row, const std::string& column) const;
  const std::optional<std::string>& At(size_t row, size_t col) const { return rows_[row][col]; }
  // Convenience: the value or `fallback` for NULL.
  std::string Str(size_t row, const std::string& column, const std::string& fallback = "") const;
  int64_t Int(size_t row, const std::string& column, int64_t fallback = 0) const;
  double Double(size_t row, const std::string& column, double fallback = 0) const;
  bool Bool(size_t row, const std::string& column) const;  // 't' / 'f'

 private:
  std::vector<std::string> columns_;
  std::vector<std::vector<std::optional<std::string>>> rows_;
};

class PgConn {
 public:
  // Connects with a bounded wait. The error names the endpoint and libpq's reason.
  static Result<std::unique_ptr<PgConn>> Connect(const std::string& conninfo,
                                                 int connect_timeout_s = 10);

  // Runs one statement; $1.. parameters are text. SQL errors become Status
  // messages with the SQLSTATE; a statement ended by lock_timeout or
  // statement_timeout is Code::kTimeout.
  Result<Rows> Query(const std::string& sql, const std::vector<std::string>& params = {});
  Status Exec(const std::string& sql, const std::vector<std::string>& params = {});

  // Sends one simple-query string (it may hold several statements) without
  // waiting, so several connections can run theirs at once; Collect then
  // returns the last statement's rows, or the first error.
  Status Send(const std::string& sql);
  Result<Rows> Collect();

  bool Healthy() const;
  int BackendPid() const;
  PGconn* raw() const { return conn_.get(); }

 private:
  explicit PgConn(PgConnPtr c) : conn_(std::move(c)) {}
  Result<Rows> ToRows(const PGresult* res) const;
  PgConnPtr conn_;
};

// Parses a libpq connection string (key=value or URI); errors say what is wrong.
Result<std::map<std::string, std::string>> ParseConninfo(const std::string& conninfo);
// Where a conninfo leads, as libpq resolves it before connecting: its own
// keys (key=value or URI), then PGHOST / PGHOSTADDR / PGPORT / PGSERVICE,
// then libpq's compiled-in defaults (its Unix-socket directory, 5432).
struct ConnTarget {
  std::string host;      // a name, an IP literal or a Unix-socket directory; "" with hostaddr alone
  std::string hostaddr;  // the numeric address libpq connects to, when given
  int port = 0;
  bool UnixSocket() const { return !host.empty() && host[0] == '/'; }
  // What names the server to others (a router): host, else hostaddr.
  const std::string& Address() const { return host.empty() ? hostaddr : host; }
};
// InvalidArgument, naming the form and what to write instead, for a
// conninfo that does not lead to exactly one server: several hosts or ports
// (host=a,b), a port that is not a number, an abstract socket (host=@name),
// a service (service=...) that leaves the host or port to its file.
Result<ConnTarget> ResolveConnTarget(const std::string& conninfo);

// key='value' pairs, quoted for libpq.
std::string BuildConninfo(const std::map<std::string, std::string>& kv);
// `base` with the given keys replaced.
Result<std::string> WithConninfo(const std::string& base,
                                 const std::map<std::string, std::string>& overrides);

// Bounds on every statement of a session (0: the server's setting, which
// defaults to none).
struct SessionTimeouts {
  int64_t statement_timeout_ms = 0;
  int64_t lock_timeout_ms = 0;
};
// `conninfo` with the timeouts set at login (libpq's `options`, appended to
// any the conninfo has): in force from the first statement, at no round trip,
// and carried by sessions opened from a connection's parameters.
Result<std::string> WithSessionTimeouts(const std::string& conninfo, const SessionTimeouts& t);

std::string QuoteLiteral(const std::string& s);
std::string QuoteIdent(const std::string& s);

}  // namespace pgshift
