// The report of each switch a route made (README "Switch reports"): when it
// repointed and where, how many sessions were on the route, how many moved
// (sessions move one by one at their next transaction boundary, so the
// counts grow after the switch until none is left behind), what their moves
// carried by kind and which sessions were ended and why. Served by the admin
// API as the route's "last_switch"; pgshiftd records it as a migration event.
//
// Thread-safe: sessions note their moves from their threads, the admin
// thread repoints and reads; one mutex, taken at a login, a close, a move
// and a repoint (not per transaction).
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>

#include "proxy/config.h"

namespace pgshift::proxy {

// What one session's move carried onto the new server.
struct MoveCarried {
  bool prewarmed = false;           // it took a login a prewarm opened ahead
  int64_t settings = 0;             // SET values (and set_config) re-applied
  int64_t protocol_statements = 0;  // protocol-level named statements (re-prepared on first use)
  int64_t prepared_statements = 0;  // SQL-level PREPAREs
  int64_t listen_channels = 0;
  int64_t advisory_locks = 0;
};

// Why a session was ended instead of moved.
enum class EndReason {
  kTemporaryTables,  // it held temporary tables (and perhaps WITH HOLD cursors too)
  kHoldableCursors,  // it held WITH HOLD cursors
  kCarryFailed,      // what it held could not be read or re-created
  kMoveFailed,       // the new server refused its login or its settings
};
inline constexpr size_t kEndReasons = 4;
// The report's key for `r` ("temporary_tables", ...).
const char* EndReasonName(EndReason r);

class SwitchLog {
 public:
  // Sessions on the route by the generation of the route they are on (a
  // session joins when logged in and leaves when closed).
  void Joined(uint64_t generation);
  void Left(uint64_t generation);
  // A repoint to a new upstream took the route to `generation`: a new report.
  // `hold_epoch` is the hold it was made under (0: none).
  void Began(uint64_t generation, uint64_t hold_epoch, const UpstreamConfig& from,
             const UpstreamConfig& to);
  // A session moved from `from` to `to` (route generations). A move that
  // does not change the generation (a reconnect after a lost server) is no
  // switch's and only counted in the route's counters.
  void Moved(uint64_t from, uint64_t to, const MoveCarried& carried);
  // A session was ended instead of moving to generation `to`.
  void Ended(uint64_t to, EndReason why);
  // Inside a hold, before its switch (uncarriable: wait): a session the hold
  // waited for ended at the deadline, or dropped what it held (or
  // disconnected) in time. The hold's switch report starts with them; a hold
  // released without a switch forgets them (the route's counters keep them).
  void EndedInHold(EndReason why);
  void WaitedInHold();
  void HoldEndedWithoutSwitch();

  // {"generation","hold_epoch","at_ms","from","to","sessions","moved","prewarmed",
  //  "pending","carried":{...},"ended":{...},"ended_total","waited_for"}; null before any switch.
  nlohmann::json LastJson() const;

 private:
  struct Report {
    uint64_t generation = 0, hold_epoch = 0;
    int64_t at_ms = 0;  // wall clock, Unix ms
    UpstreamConfig from, to;
    int64_t sessions = 0;  // on the route when it repointed
    int64_t moved = 0;
    MoveCarried carried;  // summed; `prewarmed` unused, see prewarmed
    int64_t prewarmed = 0;
    std::array<int64_t, kEndReasons> ended{};
    int64_t waited_for = 0;  // kept on their server by the hold, then moved normally
  };
  // Under mu_: the report of the switch a move to `generation` belongs to.
  Report* ReportForLocked(uint64_t generation);

  mutable std::mutex mu_;
  std::map<uint64_t, int64_t> on_generation_;  // sessions per route generation
  std::deque<Report> reports_;                 // the latest last
  std::array<int64_t, kEndReasons> hold_ended_{};
  int64_t hold_waited_ = 0;
};

}  // namespace pgshift::proxy
