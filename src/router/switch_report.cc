// SwitchReport (router.h): sums across router instances and the one-line
// summary of the migration's timeline.
#include <string>

#include "router/router.h"

namespace pgshift {

void SwitchReport::Add(const SwitchReport& o) {
  if (at_ms == 0 || (o.at_ms != 0 && o.at_ms < at_ms)) at_ms = o.at_ms;
  if (from.host.empty()) from = o.from;
  if (to.host.empty()) to = o.to;
  sessions += o.sessions;
  moved += o.moved;
  prewarmed += o.prewarmed;
  pending += o.pending;
  waited_for += o.waited_for;
  carried.settings += o.carried.settings;
  carried.protocol_statements += o.carried.protocol_statements;
  carried.prepared_statements += o.carried.prepared_statements;
  carried.listen_channels += o.carried.listen_channels;
  carried.advisory_locks += o.carried.advisory_locks;
  ended.temporary_tables += o.ended.temporary_tables;
  ended.holdable_cursors += o.ended.holdable_cursors;
  ended.carry_failed += o.ended.carry_failed;
  ended.move_failed += o.ended.move_failed;
}

namespace {

// "n what" items joined by ", ", zero counts left out; `none` when all are.
std::string Counts(const std::vector<std::pair<int64_t, const char*>>& items, const char* none) {
  std::string out;
  for (const auto& [n, what] : items) {
    if (n == 0) continue;
    out += (out.empty() ? "" : ", ") + std::to_string(n) + " " + what;
  }
  return out.empty() ? none : out;
}

}  // namespace

std::string SwitchReport::Summary() const {
  std::string s = "switch to " + to.ToString() + ": " + std::to_string(moved) + " of " +
                  std::to_string(sessions) + " session(s) moved";
  if (prewarmed > 0) s += " (" + std::to_string(prewarmed) + " on logins opened ahead)";
  if (pending > 0)
    s += ", " + std::to_string(pending) + " not yet (each moves at its next transaction)";
  s += "; carried: " + Counts({{carried.settings, "SET value(s)"},
                               {carried.protocol_statements, "protocol prepared statement(s)"},
                               {carried.prepared_statements, "SQL prepared statement(s)"},
                               {carried.listen_channels, "LISTEN channel(s)"},
                               {carried.advisory_locks, "advisory lock(s)"}},
                              "no session state");
  s += "; ended: " + Counts({{ended.temporary_tables, "holding temporary tables"},
                             {ended.holdable_cursors, "holding WITH HOLD cursors"},
                             {ended.carry_failed, "whose state could not be carried"},
                             {ended.move_failed, "refused by the new server"}},
                            "none");
  if (waited_for > 0)
    s += "; the hold waited for " + std::to_string(waited_for) +
         " session(s) to drop temporary tables or WITH HOLD cursors";
  return s;
}

}  // namespace pgshift
