/* The data shared by pgshift-proxy's kernel splice (pg_splice.bpf.c) and its
 * user-space half (splicer.h): map layouts and constants. C, so the BPF
 * program and the C++ side compile the same definitions. */
#ifndef PGSHIFT_PROXY_SPLICE_PG_SPLICE_ABI_H_
#define PGSHIFT_PROXY_SPLICE_PG_SPLICE_ABI_H_

#include <linux/types.h>

#define PG_SPLICE_MAX_SLOTS 4096 /* spliced sessions at once */
#define PG_SPLICE_MAX_MSGS 1024  /* messages per segment looked at; more go to user space */
#define PG_SPLICE_SCAN_MAX 4096  /* query text scanned for keywords */

/* pg_splice_slot.mode */
#define PG_SPLICE_USER 0   /* every byte goes to the proxy's own socket queue */
#define PG_SPLICE_KERNEL 1 /* plain frames go straight to the peer socket */

/* pg_splice_slot.why: what ended kernel mode */
#define PG_SPLICE_WHY_NONE 0
#define PG_SPLICE_WHY_CLIENT 1 /* a client frame the proxy must see */
#define PG_SPLICE_WHY_SERVER 2 /* a server frame the proxy must see */
#define PG_SPLICE_WHY_RAW 3    /* a message split across segments, or malformed */

/* Transaction latency buckets: upper bounds in microseconds (inclusive), one
 * more bucket for the rest. The layout of common/latency.h's kLatencyBoundsUs
 * (session_splice.cc checks it at compile time). */
#define PG_SPLICE_LAT_BOUNDS 21
#define PG_SPLICE_LAT_BOUNDS_US                                                                  \
  {10,     25,     50,      100,     250,     500,     1000,     2500,     5000,     10000,   25000, \
   50000,  100000, 250000,  500000,  1000000, 2500000, 5000000,  10000000, 30000000, 60000000}

/* One spliced session: a client socket (sockmap index 2*slot) and its server
 * socket (2*slot+1). An mmapped array: the proxy switches `mode` with a
 * compare-and-swap and reads the counters after `busy` drops to zero. The
 * counters cover only frames redirected in kernel mode since the proxy last
 * zeroed them. */
struct pg_splice_slot {
  __u32 mode;
  __u32 busy;        /* verdicts running now */
  __u64 c2s_bytes;   /* client → server, redirected */
  __u64 s2c_bytes;   /* server → client, redirected */
  __u64 c2s_syncs;   /* Query and Sync messages redirected */
  __u64 s2c_rfq;     /* ReadyForQuery messages redirected */
  __u64 s2c_idle;    /* ... of which with status 'I' */
  __u32 last_status; /* status byte of the last ReadyForQuery redirected, or 0 */
  __u32 batch_open;  /* extended-protocol messages redirected since the last Sync */
  __u32 why;
  __u32 pad;
  /* Transactions the kernel carried whole, timed from the first client frame
   * redirected while none was in flight (txn_start_ns, bpf_ktime_get_ns:
   * CLOCK_MONOTONIC; 0: none in flight) to the redirected ReadyForQuery 'I'
   * that ended it. Frames of the next transaction redirected before that
   * ReadyForQuery (pipelining) leave that transaction untimed. */
  __u64 txn_start_ns;
  __u64 lat_sum_us;
  __u64 lat[PG_SPLICE_LAT_BOUNDS + 1];
};

/* Per socket, keyed by socket cookie. */
struct pg_splice_sock {
  __u32 slot;
  __u32 dir; /* 0: client side, 1: server side */
};

#endif
