// AdminConnection: a connection to PgBouncer's admin console with every
// step bounded by a deadline.
//
// The admin console speaks only the simple query protocol, so this uses
// PQsendQuery and polls the socket instead of PgConn::Query (which uses the
// extended protocol). One AdminConnection is used by one thread at a time.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "common/status.h"
#include "pg/conn.h"

namespace pgshift::pgbouncer {

using Deadline = std::chrono::steady_clock::time_point;

inline Deadline DeadlineIn(int64_t ms) {
  return std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
}

class AdminConnection {
 public:
  // Connects without blocking past `deadline`; Timeout or Unavailable otherwise.
  static Result<std::unique_ptr<AdminConnection>> Connect(const std::string& conninfo,
                                                          Deadline deadline);

  // Sends one admin command and waits for its result until `deadline`.
  // An error answer from PgBouncer is FailedPrecondition carrying its message.
  Result<Rows> Run(const std::string& command, Deadline deadline);

  // Starts a command without waiting (for PAUSE, which blocks until the pool drains).
  Status Send(const std::string& command);
  // Waits for the answer of a command started with Send.
  Result<Rows> Wait(const std::string& command, Deadline deadline);

  const std::string& endpoint() const { return endpoint_; }

 private:
  AdminConnection(PgConnPtr conn, std::string endpoint)
      : conn_(std::move(conn)), endpoint_(std::move(endpoint)) {}
  PgConnPtr conn_;
  std::string endpoint_;  // "host:port" for messages
};

// Quotes a database name for an admin command when it is not a plain word.
std::string AdminIdent(const std::string& name);

}  // namespace pgshift::pgbouncer
