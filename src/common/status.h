// Status and Result<T>: errors as values across subsystem boundaries.
//
// A Status is OK or carries a code and a message written for the operator:
// what went wrong and, where it can, what to do about it. Result<T> holds a
// value or a non-OK Status. Both are plain values; thread-compatible.
#pragma once

#include <cassert>
#include <string>
#include <utility>
#include <variant>

namespace pgshift {

enum class Code {
  kOk = 0,
  kInvalidArgument,     // the caller's input is wrong; retrying the same input fails again
  kNotFound,            // the named thing does not exist
  kAlreadyExists,       // the named thing exists and may not be created again
  kFailedPrecondition,  // the system is not in a state that allows this
  kUnavailable,         // a dependency (server, process) could not be reached; retry may help
  kTimeout,             // a deadline passed
  kAborted,             // the operation was abandoned (e.g. a cutover released on timeout)
  kInternal,            // a bug or an unexpected answer
  kUnauthenticated,     // the request carries no (valid) credentials
  kPermissionDenied,    // the caller is known but may not do this
};

const char* CodeName(Code c);

// The one mapping between codes and HTTP statuses, used by every HTTP API
// (pgshiftd's, the proxy's admin) and by their clients. Timeout is 504,
// Aborted 409 (the request conflicted with what the system decided),
// Unauthenticated 401, PermissionDenied 403.
int HttpStatusFor(Code c);
// The code for an HTTP status a pgshift API answered with (2xx: kOk).
Code CodeForHttpStatus(int http_status);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status OK() { return Status(); }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  std::string ToString() const;

  // Returns a copy whose message is "context: message".
  Status Wrap(const std::string& context) const;

 private:
  Code code_ = Code::kOk;
  std::string message_;
};

inline Status InvalidArgument(std::string m) { return {Code::kInvalidArgument, std::move(m)}; }
inline Status NotFound(std::string m) { return {Code::kNotFound, std::move(m)}; }
inline Status AlreadyExists(std::string m) { return {Code::kAlreadyExists, std::move(m)}; }
inline Status FailedPrecondition(std::string m) {
  return {Code::kFailedPrecondition, std::move(m)};
}
inline Status Unavailable(std::string m) { return {Code::kUnavailable, std::move(m)}; }
inline Status Timeout(std::string m) { return {Code::kTimeout, std::move(m)}; }
inline Status Aborted(std::string m) { return {Code::kAborted, std::move(m)}; }
inline Status Internal(std::string m) { return {Code::kInternal, std::move(m)}; }
inline Status Unauthenticated(std::string m) { return {Code::kUnauthenticated, std::move(m)}; }
inline Status PermissionDenied(std::string m) { return {Code::kPermissionDenied, std::move(m)}; }

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}        // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {  // NOLINT
    assert(!std::get<Status>(v_).ok() && "Result built from an OK Status has no value");
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace pgshift

// Returns the Status of `expr` from the enclosing function when it is not OK.
#define PGSHIFT_RETURN_IF_ERROR(expr) \
  do {                                \
    ::pgshift::Status _st = (expr);   \
    if (!_st.ok()) return _st;        \
  } while (0)

#define PGSHIFT_CONCAT_INNER(a, b) a##b
#define PGSHIFT_CONCAT(a, b) PGSHIFT_CONCAT_INNER(a, b)

// PGSHIFT_ASSIGN_OR_RETURN(auto x, ResultExpr()): binds the value or returns the Status.
#define PGSHIFT_ASSIGN_OR_RETURN(lhs, expr)                                                   \
  auto PGSHIFT_CONCAT(_res_, __LINE__) = (expr);                                              \
  if (!PGSHIFT_CONCAT(_res_, __LINE__).ok()) return PGSHIFT_CONCAT(_res_, __LINE__).status(); \
  lhs = std::move(PGSHIFT_CONCAT(_res_, __LINE__)).value()
