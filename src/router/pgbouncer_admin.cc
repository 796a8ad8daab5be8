#include "router/pgbouncer_admin.h"

#include <poll.h>

#include <cctype>
#include <cerrno>
#include <cstring>

namespace pgshift::pgbouncer {
namespace {

int64_t MsLeft(Deadline deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  return left.count() < 0 ? 0 : left.count();
}

// Waits until the socket is ready for `events` or the deadline passes.
// Returns false on timeout.
Result<bool> WaitSocket(int fd, short events, Deadline deadline) {
  while (true) {
    int64_t left = MsLeft(deadline);
    if (left <= 0) return false;
    pollfd p{fd, events, 0};
    int n = poll(&p, 1, static_cast<int>(left));
    if (n > 0) return true;
    if (n == 0) return false;
    if (errno != EINTR) return Internal(std::string("poll: ") + strerror(errno));
  }
}

std::string Trimmed(const char* s) {
  std::string m = s ? s : "";
  while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.pop_back();
  return m;
}

}  // namespace

std::string AdminIdent(const std::string& name) {
  bool plain = !name.empty();
  for (char c : name) {
    if (!(isalnum(static_cast<unsigned char>(c)) || c == '_')) plain = false;
  }
  if (plain) return name;
  std::string q = "\"";
  for (char c : name) q += (c == '"') ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

Result<std::unique_ptr<AdminConnection>> AdminConnection::Connect(const std::string& conninfo,
                                                                  Deadline deadline) {
  PgConnPtr conn(PQconnectStart(conninfo.c_str()));
  if (!conn) return Internal("libpq could not allocate a connection");
  if (PQstatus(conn.get()) == CONNECTION_BAD) {
    return Unavailable("cannot connect to the PgBouncer admin console (" + conninfo +
                       "): " + Trimmed(PQerrorMessage(conn.get())));
  }
  PostgresPollingStatusType st = PGRES_POLLING_WRITING;
  while (st != PGRES_POLLING_OK) {
    if (st == PGRES_POLLING_FAILED) {
      return Unavailable("cannot connect to the PgBouncer admin console (" + conninfo +
                         "): " + Trimmed(PQerrorMessage(conn.get())));
    }
    short events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT;
    PGSHIFT_ASSIGN_OR_RETURN(bool ready, WaitSocket(PQsocket(conn.get()), events, deadline));
    if (!ready) {
      return Timeout("connecting to the PgBouncer admin console (" + conninfo +
                     ") did not finish in time");
    }
    st = PQconnectPoll(conn.get());
  }
  std::string endpoint = std::string(PQhost(conn.get()) ? PQhost(conn.get()) : "") + ":" +
                         (PQport(conn.get()) ? PQport(conn.get()) : "");
  if (PQsetnonblocking(conn.get(), 1) != 0) {
    return Internal("cannot make the admin connection non-blocking: " +
                    Trimmed(PQerrorMessage(conn.get())));
  }
  return std::unique_ptr<AdminConnection>(new AdminConnection(std::move(conn), endpoint));
}

Status AdminConnection::Send(const std::string& command) {
  if (PQsendQuery(conn_.get(), command.c_str()) != 1) {
    return Unavailable("PgBouncer at " + endpoint_ + ": cannot send `" + command +
                       "`: " + Trimmed(PQerrorMessage(conn_.get())));
  }
  return Status::OK();
}

Result<Rows> AdminConnection::Wait(const std::string& command, Deadline deadline) {
  PGconn* c = conn_.get();
  PgResultPtr first_error;
  Rows rows;
  while (true) {
    int flush = PQflush(c);
    if (flush < 0) {
      return Unavailable("PgBouncer at " + endpoint_ + ": sending `" + command +
                         "` failed: " + Trimmed(PQerrorMessage(c)));
    }
    if (PQconsumeInput(c) != 1) {
      return Unavailable("PgBouncer at " + endpoint_ + " closed the admin connection during `" +
                         command + "`: " + Trimmed(PQerrorMessage(c)));
    }
    bool done = false;
    while (flush == 0 && !PQisBusy(c)) {
      PgResultPtr res(PQgetResult(c));
      if (!res) {
        done = true;
        break;
      }
      ExecStatusType st = PQresultStatus(res.get());
      if (st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE || st == PGRES_NONFATAL_ERROR) {
        if (!first_error) first_error = std::move(res);
      } else if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
        rows = Rows(res.get());
      }
    }
    if (done) break;
    short events = flush == 1 ? (POLLIN | POLLOUT) : POLLIN;
    PGSHIFT_ASSIGN_OR_RETURN(bool ready, WaitSocket(PQsocket(c), events, deadline));
    if (!ready) {
      return Timeout("PgBouncer at " + endpoint_ + " did not answer `" + command + "` in time");
    }
  }
  if (first_error) {
    const char* primary = PQresultErrorField(first_error.get(), PG_DIAG_MESSAGE_PRIMARY);
    return FailedPrecondition("PgBouncer at " + endpoint_ + " refused `" + command + "`: " +
                              Trimmed(primary ? primary
                                              : PQresultErrorMessage(first_error.get())));
  }
  return rows;
}

Result<Rows> AdminConnection::Run(const std::string& command, Deadline deadline) {
  PGSHIFT_RETURN_IF_ERROR(Send(command));
  return Wait(command, deadline);
}

}  // namespace pgshift::pgbouncer
