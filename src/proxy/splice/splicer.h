// Kernel splice for plain-text sessions of pgshift-proxy: after a session
// reaches a transaction boundary, its client and server sockets go into a
// BPF sockmap, and segments of whole PostgreSQL messages that the proxy does
// not need to see go from one socket to the other inside the kernel, without
// waking the proxy (pg_splice.bpf.c). Anything the proxy must see — a SET
// result, a named Parse, an error, COPY, Terminate — switches the session back
// to user mode, as does the proxy itself (TakeBack) before a hold or a switch.
//
// This is what lets a proxy on a small machine come close to a direct
// connection: a user-space forwarder pays two extra wake-ups and four
// syscalls per round trip. Needs CAP_BPF and CAP_NET_ADMIN (root); without
// them Create fails and the proxy forwards in user space.
//
// Thread-safety: Create/Attach/Detach may run on any thread (slots are
// handed out under a lock); the per-slot calls (Enter, InKernel, TakeBack)
// belong to the one thread that runs the session.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "common/status.h"
#include "proxy/splice/pg_splice_abi.h"

struct bpf_object;
struct ring_buffer;

namespace pgshift::proxy {

// What the kernel forwarded in kernel mode since the last TakeBack.
struct SpliceCounters {
  uint64_t c2s_bytes = 0, s2c_bytes = 0;
  uint64_t c2s_syncs = 0;             // Query and Sync messages
  uint64_t s2c_rfq = 0;               // ReadyForQuery messages
  uint64_t s2c_idle = 0;              // ... with status 'I'
  char last_status = 0;               // of the last ReadyForQuery, 0 if none
  bool batch_open = false;            // extended-protocol messages since the last Sync
  uint32_t why = PG_SPLICE_WHY_NONE;  // what ended kernel mode (0: the proxy did)
  // The transaction in flight began in kernel mode at this CLOCK_MONOTONIC
  // time (ns; 0: none did); the transactions carried whole, timed by bucket
  // (pg_splice_abi.h) and in all.
  uint64_t txn_start_ns = 0;
  uint64_t lat_sum_us = 0;
  std::array<uint64_t, PG_SPLICE_LAT_BOUNDS + 1> lat{};
};

class Splicer {
 public:
  // Loads the BPF programs. Unavailable (no privilege, no sockmap in the
  // kernel) is an error the caller logs once; the proxy works without it.
  [[nodiscard]] static Result<std::unique_ptr<Splicer>> Create();
  ~Splicer();
  Splicer(const Splicer&) = delete;
  Splicer& operator=(const Splicer&) = delete;

  // Puts a session's two TCP sockets in the sockmap, in user mode (bytes keep
  // reaching the proxy's sockets). Returns the slot.
  [[nodiscard]] Result<int> Attach(int client_fd, int server_fd);
  // The session moved to another server: the new socket replaces the old one.
  [[nodiscard]] Status ReplaceServer(int slot, int server_fd);
  // Takes the sockets out of the map (the session is closing or leaves
  // kernel mode for good) and frees the slot. Call in user mode.
  void Detach(int slot);

  // Kernel mode from now on. The verdict reads each segment from its first
  // byte as a message header, so call it only at a boundary: ReadyForQuery
  // forwarded, nothing buffered in the proxy, nothing unread on either
  // socket (check again after Enter, and TakeBack if something came).
  void Enter(int slot);
  // True while the slot is in kernel mode (the BPF side may end it any time).
  bool InKernel(int slot) const;
  // User mode again: waits (microseconds) for running verdicts to finish,
  // then returns and zeroes the counters. Idempotent.
  SpliceCounters TakeBack(int slot);
  // The counters as they stand, without taking the slot back (for stats; any
  // thread, may be a moment behind).
  SpliceCounters Peek(int slot) const;

  // Bytes ever queued for sending on a TCP socket, by the proxy or by the
  // kernel's redirects (sent once + not yet sent). Redirected bytes are
  // queued by a kernel worker shortly after the verdict, so before writing
  // on a socket after TakeBack the proxy waits until this has grown by the
  // redirected count; otherwise its bytes could overtake them.
  static Result<uint64_t> QueuedBytes(int fd);

  int slots_in_use() const;

  // Kernel mode ended on its own (a segment the proxy must see): the verdict
  // announces the slot on a ring buffer. EventsFd is readable when there are
  // announcements; DispatchEvents (one thread at a time) calls each slot's
  // waker. A waker is set per slot by its session and cleared by Detach.
  int EventsFd() const;
  void SetWaker(int slot, std::function<void()> wake);
  void DispatchEvents();

 private:
  Splicer() = default;
  pg_splice_slot* slot(int i) const { return &slots_[i]; }
  Status SetSocket(int slot, int dir, int fd);

  bpf_object* obj_ = nullptr;
  int socks_fd_ = -1, sockets_fd_ = -1, slots_fd_ = -1;
  pg_splice_slot* slots_ = nullptr;  // mmapped array map
  size_t slots_bytes_ = 0;
  mutable std::mutex mu_;
  std::vector<int> free_;
  std::vector<uint64_t> cookies_;  // per sockmap index, to remove from the hash
  ring_buffer* events_ = nullptr;
  std::vector<std::function<void()>> wakers_;  // per slot, guarded by mu_
  std::vector<int> woken_;                     // DispatchEvents' scratch
};

}  // namespace pgshift::proxy
