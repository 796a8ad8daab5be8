#include "proxy/session_state.h"

namespace pgshift::proxy {

const char* StateName(SessionState s) {
  switch (s) {
    case SessionState::kStartup: return "startup";
    case SessionState::kAuthenticating: return "authenticating";
    case SessionState::kLoginHeld: return "login_held";
    case SessionState::kIdle: return "idle";
    case SessionState::kActive: return "active";
    case SessionState::kHeld: return "held";
    case SessionState::kMigrating: return "migrating";
    case SessionState::kStreaming: return "streaming";
    case SessionState::kClosed: return "closed";
  }
  return "?";
}

const char* EventName(SessionEvent e) {
  switch (e) {
    case SessionEvent::kLoginStarted: return "login_started";
    case SessionEvent::kLoggedIn: return "logged_in";
    case SessionEvent::kClientBegins: return "client_begins";
    case SessionEvent::kHoldWait: return "hold_wait";
    case SessionEvent::kHoldReleased: return "hold_released";
    case SessionEvent::kMigrateBegin: return "migrate_begin";
    case SessionEvent::kMigrateDone: return "migrate_done";
    case SessionEvent::kBoundaryReached: return "boundary_reached";
    case SessionEvent::kCopyBothStarted: return "copy_both_started";
    case SessionEvent::kClose: return "close";
  }
  return "?";
}

std::optional<SessionState> Transition(SessionState s, SessionEvent e) {
  using S = SessionState;
  using E = SessionEvent;
  if (e == E::kClose) return S::kClosed;
  switch (s) {
    case S::kStartup:
      if (e == E::kLoginStarted) return S::kAuthenticating;
      break;
    case S::kAuthenticating:
      if (e == E::kLoggedIn) return S::kIdle;
      if (e == E::kHoldWait) return S::kLoginHeld;
      break;
    case S::kLoginHeld:
      if (e == E::kHoldReleased) return S::kStartup;
      break;
    case S::kIdle:
      if (e == E::kClientBegins) return S::kActive;
      if (e == E::kHoldWait) return S::kHeld;
      if (e == E::kMigrateBegin) return S::kMigrating;
      if (e == E::kBoundaryReached) return S::kIdle;  // e.g. an internal query finished
      break;
    case S::kActive:
      if (e == E::kBoundaryReached) return S::kIdle;
      if (e == E::kCopyBothStarted) return S::kStreaming;
      break;
    case S::kHeld:
      if (e == E::kHoldReleased) return S::kIdle;
      break;
    case S::kMigrating:
      if (e == E::kMigrateDone) return S::kIdle;
      break;
    case S::kStreaming:
      if (e == E::kBoundaryReached) return S::kIdle;
      break;
    case S::kClosed:
      break;
  }
  return std::nullopt;
}

}  // namespace pgshift::proxy
