// The client session state machine of pgshift-proxy: one explicit state and
// one transition function (PgBouncer style). The session calls Transition
// for every change; an event that is not allowed in the current state is a
// bug and closes the session (fail closed). Pure functions; thread-safe.
#pragma once

#include <optional>

namespace pgshift::proxy {

enum class SessionState {
  kStartup,         // reading SSLRequest / StartupMessage, TLS handshake, policy
  kAuthenticating,  // logging in upstream with the proxy's credentials
  kLoginHeld,       // a new session waits for a release before it logs in upstream
  kIdle,            // at a transaction boundary: ReadyForQuery 'I', nothing pending
  kActive,          // a transaction or statement is in flight upstream
  kHeld,            // at a boundary, the client's next message waits for a release
  kMigrating,       // at a boundary, moving to the route's new endpoint
  kStreaming,       // replication CopyBoth: passed through, never a boundary
  kClosed,
};

enum class SessionEvent {
  kLoginStarted,     // startup accepted, policy allowed
  kLoggedIn,         // upstream ReadyForQuery after authentication
  kClientBegins,     // a client message at a boundary goes upstream
  kHoldWait,         // the route is held: wait
  kHoldReleased,
  kMigrateBegin,     // the route points elsewhere (or the upstream went away)
  kMigrateDone,
  kBoundaryReached,  // ReadyForQuery 'I' with nothing pending
  kCopyBothStarted,
  kClose,
};

const char* StateName(SessionState s);
const char* EventName(SessionEvent e);

// The next state, or nullopt when `e` is not allowed in `s`.
std::optional<SessionState> Transition(SessionState s, SessionEvent e);

}  // namespace pgshift::proxy
