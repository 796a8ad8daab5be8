#include "pg/conn.h"

#include <pg_config_manual.h>  // DEFAULT_PGSOCKET_DIR, libpq's default host

#include <cstdlib>

namespace pgshift {

Rows::Rows(const PGresult* res) {
  int nf = PQnfields(res);
  int nt = PQntuples(res);
  columns_.reserve(nf);
  for (int c = 0; c < nf; ++c) columns_.emplace_back(PQfname(res, c));
  rows_.resize(nt);
  for (int r = 0; r < nt; ++r) {
    rows_[r].reserve(nf);
    for (int c = 0; c < nf; ++c) {
      if (PQgetisnull(res, r, c)) {
        rows_[r].emplace_back(std::nullopt);
      } else {
        rows_[r].emplace_back(std::string(PQgetvalue(res, r, c), PQgetlength(res, r, c)));
      }
    }
  }
}

const std::optional<std::string>& Rows::Get(size_t row, const std::string& column) const {
  static const std::optional<std::string> kNull;
  if (row >= rows_.size()) return kNull;
  for (size_t c = 0; c < columns_.size(); ++c) {
    if (columns_[c] == column) return rows_[row][c];
  }
  return kNull;
}

std::string Rows::Str(size_t row, const std::string& column, const std::string& fallback) const {
  const auto& v = Get(row, column);
  return v ? *v : fallback;
}

int64_t Rows::Int(size_t row, const std::string& column, int64_t fallback) const {
  const auto& v = Get(row, column);
  return v ? std::strtoll(v->c_str(), nullptr, 10) : fallback;
}

double Rows::Double(size_t row, const std::string& column, double fallback) const {
  const auto& v = Get(row, column);
  return v ? std::strtod(v->c_str(), nullptr) : fallback;
}

bool Rows::Bool(size_t row, const std::string& column) const {
  const auto& v = Get(row, column);
  return v && (*v == "t" || *v == "true" || *v == "on");
}

namespace {

std::string Endpoint(PGconn* c) {
  const char* host = PQhost(c);
  const char* port = PQport(c);
  return std::string(host ? host : "?") + ":" + (port ? port : "?");
}

constexpr const char* kLockNotAvailable = "55P03";
// libpq's compiled-in port (DEF_PGPORT), should PQconndefaults not report it.
constexpr int kLibpqDefaultPort = 5432;
constexpr const char* kQueryCanceled = "57014";

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

Result<std::unique_ptr<PgConn>> PgConn::Connect(const std::string& conninfo,
                                                int connect_timeout_s) {
  PGSHIFT_RETURN_IF_ERROR(ParseConninfo(conninfo).status());
  auto with_timeout =
      WithConninfo(conninfo, {{"connect_timeout", std::to_string(connect_timeout_s)}});
  PgConnPtr c(PQconnectdb(with_timeout.ok() ? with_timeout->c_str() : conninfo.c_str()));
  if (!c) return Internal("libpq could not allocate a connection");
  if (PQstatus(c.get()) != CONNECTION_OK) {
    return Unavailable("cannot connect to PostgreSQL at " + Endpoint(c.get()) + ": " +
                       Trim(PQerrorMessage(c.get())));
  }
  return std::unique_ptr<PgConn>(new PgConn(std::move(c)));
}

Result<Rows> PgConn::Query(const std::string& sql, const std::vector<std::string>& params) {
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const auto& p : params) values.push_back(p.c_str());
  PgResultPtr res(PQexecParams(conn_.get(), sql.c_str(), static_cast<int>(values.size()), nullptr,
                               values.data(), nullptr, nullptr, 0));
  return ToRows(res.get());
}

Result<Rows> PgConn::ToRows(const PGresult* res) const {
  if (!res) {
    return Unavailable("connection to " + Endpoint(conn_.get()) +
                       " failed: " + Trim(PQerrorMessage(conn_.get())));
  }
  ExecStatusType st = PQresultStatus(res);
  if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) return Rows(res);
  const char* state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
  std::string msg = Trim(PQresultErrorMessage(res));
  if (PQstatus(conn_.get()) != CONNECTION_OK) {
    return Unavailable("connection to " + Endpoint(conn_.get()) + " lost: " + msg);
  }
  const std::string sqlstate = state ? state : "";
  // lock_not_available (lock_timeout, NOWAIT) and query_canceled by
  // statement_timeout: the server gave up waiting, a retry may succeed.
  const bool timed_out =
      sqlstate == kLockNotAvailable ||
      (sqlstate == kQueryCanceled && msg.find("statement timeout") != std::string::npos);
  return Status(timed_out ? Code::kTimeout : Code::kFailedPrecondition,
                "SQL error" + (sqlstate.empty() ? "" : " " + sqlstate) + ": " + msg);
}

Status PgConn::Send(const std::string& sql) {
  if (PQsendQuery(conn_.get(), sql.c_str()) == 1) return Status::OK();
  return Unavailable("connection to " + Endpoint(conn_.get()) +
                     " failed: " + Trim(PQerrorMessage(conn_.get())));
}

Result<Rows> PgConn::Collect() {
  Result<Rows> last = Internal("no query was sent on the connection to " + Endpoint(conn_.get()));
  bool failed = false;
  // Read to the end even after an error, so the connection is ready again.
  while (PgResultPtr res{PQgetResult(conn_.get())}) {
    if (failed) continue;
    last = ToRows(res.get());
    failed = !last.ok();
  }
  if (!failed && !Healthy()) return ToRows(nullptr);
  return last;
}

Status PgConn::Exec(const std::string& sql, const std::vector<std::string>& params) {
  return Query(sql, params).status();
}

bool PgConn::Healthy() const { return PQstatus(conn_.get()) == CONNECTION_OK; }

int PgConn::BackendPid() const { return PQbackendPID(conn_.get()); }

Result<std::map<std::string, std::string>> ParseConninfo(const std::string& conninfo) {
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(conninfo.c_str(), &err);
  if (!opts) {
    std::string msg = err ? Trim(err) : "unparseable";
    if (err) PQfreemem(err);
    return InvalidArgument("bad connection string '" + conninfo + "': " + msg +
                           " (expected like \"host=127.0.0.1 port=5432 dbname=app user=postgres\" "
                           "or postgresql://user@host:port/db)");
  }
  std::map<std::string, std::string> kv;
  for (PQconninfoOption* o = opts; o->keyword; ++o) {
    if (o->val && *o->val) kv[o->keyword] = o->val;
  }
  PQconninfoFree(opts);
  return kv;
}

Result<ConnTarget> ResolveConnTarget(const std::string& conninfo) {
  PGSHIFT_ASSIGN_OR_RETURN(auto kv, ParseConninfo(conninfo));
  auto given = [&](const char* key) { return kv.count(key) ? kv.at(key) : std::string(); };
  if (!given("service").empty() &&
      ((given("host").empty() && given("hostaddr").empty()) || given("port").empty())) {
    return InvalidArgument("the conninfo names a service (service=" + given("service") +
                           ") for its server: write the server's host= and port= explicitly");
  }
  // What the conninfo leaves out comes from the environment (PGHOST, ...,
  // and the service PGSERVICE names), as libpq takes it.
  std::map<std::string, std::string> defaults;
  if (PQconninfoOption* opts = PQconndefaults()) {
    for (PQconninfoOption* o = opts; o->keyword; ++o) {
      if (o->val && *o->val) defaults[o->keyword] = o->val;
    }
    PQconninfoFree(opts);
  }
  auto value = [&](const char* key) {
    std::string v = given(key);
    return v.empty() && defaults.count(key) ? defaults.at(key) : v;
  };
  ConnTarget t{.host = value("host"), .hostaddr = value("hostaddr")};
  const std::string port = value("port");
  for (const auto& [key, v] : {std::pair<const char*, std::string>{"host", t.host},
                               {"hostaddr", t.hostaddr},
                               {"port", port}}) {
    if (v.find(',') != std::string::npos) {
      return InvalidArgument("the conninfo names several servers (" + std::string(key) + "=" + v +
                             "), so which one is the primary is ambiguous: name the primary "
                             "alone, with one host= (or hostaddr=) and one port=");
    }
  }
  if (!t.host.empty() && t.host[0] == '@') {
    return InvalidArgument("the conninfo names an abstract Unix socket (host=" + t.host +
                           "): name the server's socket directory (host=/path) or a TCP "
                           "address instead");
  }
  if (t.host.empty() && t.hostaddr.empty()) {
    t.host = *DEFAULT_PGSOCKET_DIR ? DEFAULT_PGSOCKET_DIR : "localhost";
  }
  t.port = 0;
  if (port.empty()) {
    t.port = kLibpqDefaultPort;
  } else if (port.size() <= 5 && port.find_first_not_of("0123456789") == std::string::npos) {
    t.port = std::stoi(port);
  }
  if (t.port < 1 || t.port > 65535) {
    return InvalidArgument("the conninfo's port (port=" + port +
                           ") is not a TCP port number (1-65535)");
  }
  return t;
}

std::string BuildConninfo(const std::map<std::string, std::string>& kv) {
  std::string s;
  for (const auto& [k, v] : kv) {
    if (!s.empty()) s += ' ';
    s += k + "='";
    for (char ch : v) {
      if (ch == '\'' || ch == '\\') s += '\\';
      s += ch;
    }
    s += "'";
  }
  return s;
}

Result<std::string> WithConninfo(const std::string& base,
                                 const std::map<std::string, std::string>& overrides) {
  PGSHIFT_ASSIGN_OR_RETURN(auto kv, ParseConninfo(base));
  for (const auto& [k, v] : overrides) kv[k] = v;
  return BuildConninfo(kv);
}

Result<std::string> WithSessionTimeouts(const std::string& conninfo, const SessionTimeouts& t) {
  PGSHIFT_ASSIGN_OR_RETURN(auto kv, ParseConninfo(conninfo));
  std::string options = kv.count("options") ? kv["options"] : "";
  auto add = [&](const char* name, int64_t ms) {
    if (ms <= 0) return;
    options += (options.empty() ? "" : " ") + std::string("-c ") + name + "=" + std::to_string(ms);
  };
  add("statement_timeout", t.statement_timeout_ms);
  add("lock_timeout", t.lock_timeout_ms);
  if (!options.empty()) kv["options"] = options;
  return BuildConninfo(kv);
}

std::string QuoteLiteral(const std::string& s) {
  std::string out = "'";
  for (char ch : s) {
    if (ch == '\'') out += '\'';
    out += ch;
  }
  return out + "'";
}

std::string QuoteIdent(const std::string& s) {
  std::string out = "\"";
  for (char ch : s) {
    if (ch == '"') out += '"';
    out += ch;
  }
  return out + "\"";
}

}  // namespace pgshift
