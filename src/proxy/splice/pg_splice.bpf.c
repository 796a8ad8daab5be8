// pgshift-proxy's kernel splice: a verdict program for a sockmap that holds
// plain-text client and server sockets of the proxy. In kernel mode it sends
// a received segment straight to the peer socket when the segment holds only
// whole PostgreSQL messages that the proxy does not need to see (queries,
// binds, rows, ReadyForQuery...), and keeps the counters the proxy reads when
// it takes the session back. Anything else (a SET result, a named Parse, an
// error, COPY, Terminate, a message split across segments) switches the
// session to user mode and goes to the proxy's own socket queue, as does
// every segment in user mode. Segments are never split: one that is
// redirected holds whole messages only, so the proxy always resumes at a
// message boundary. Runs in softirq context, one socket at a time.
#include <linux/bpf.h>

// After linux/bpf.h, which defines the types it uses.
#include <bpf/bpf_helpers.h>

#include "pg_splice_abi.h"

struct {
  __uint(type, BPF_MAP_TYPE_SOCKMAP);
  __uint(max_entries, 2 * PG_SPLICE_MAX_SLOTS);
  __type(key, __u32);
  __type(value, __u64);
} pg_splice_socks SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 2 * PG_SPLICE_MAX_SLOTS);
  __type(key, __u64);
  __type(value, struct pg_splice_sock);
} pg_splice_sockets SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(map_flags, BPF_F_MMAPABLE);
  __uint(max_entries, PG_SPLICE_MAX_SLOTS);
  __type(key, __u32);
  __type(value, struct pg_splice_slot);
} pg_splice_slots SEC(".maps");

// Slots whose session the verdict switched to user mode: the proxy keeps a
// spliced session's sockets out of its event loop (a redirected segment would
// still wake it), so this is how it learns that one needs it.
struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, 64 * 1024);
} pg_splice_events SEC(".maps");

static __always_inline int header(struct __sk_buff* skb, __u32 off, __u8* type, __u32* len) {
  __u8 h[5];
  if (bpf_skb_load_bytes(skb, off, h, 5)) return -1;
  *type = h[0];
  *len = ((__u32)h[1] << 24) | ((__u32)h[2] << 16) | ((__u32)h[3] << 8) | h[4];
  return 0;
}

// Rolling window of the last 8 bytes, lower-cased by OR 0x20 (false positives
// only send a frame through user space).
#define PG_SPLICE_W(a, b, c, d, e, f, g, h)                                                  \
  (((__u64)((a) | 0x20) << 56) | ((__u64)((b) | 0x20) << 48) | ((__u64)((c) | 0x20) << 40) | \
   ((__u64)((d) | 0x20) << 32) | ((__u64)((e) | 0x20) << 24) | ((__u64)((f) | 0x20) << 16) | \
   ((__u64)((g) | 0x20) << 8) | (__u64)((h) | 0x20))

struct pg_splice_scan {
  struct __sk_buff* skb;
  __u32 off, n;
  __u64 w;
  int found;
};

// One 64-byte chunk of the scan (bpf_loop keeps the verifier's work linear).
static long pg_splice_scan_chunk(__u32 chunk, void* arg) {
  const __u64 set_config = PG_SPLICE_W('t', '_', 'c', 'o', 'n', 'f', 'i', 'g');
  const __u64 deallocate = PG_SPLICE_W('a', 'l', 'l', 'o', 'c', 'a', 't', 'e');
  // Statements that may create session state a move must look at
  // (session_carry.h): "advisory", and the last 7, 6 or 4 bytes of the window
  // for "prepare", "listen", "temp" and "hold".
  const __u64 advisory = PG_SPLICE_W('a', 'd', 'v', 'i', 's', 'o', 'r', 'y');
  const __u64 prepare = PG_SPLICE_W(0, 'p', 'r', 'e', 'p', 'a', 'r', 'e') & 0x00ffffffffffffffULL;
  const __u64 listen = PG_SPLICE_W(0, 0, 'l', 'i', 's', 't', 'e', 'n') & 0x0000ffffffffffffULL;
  const __u64 temp = PG_SPLICE_W(0, 0, 0, 0, 't', 'e', 'm', 'p') & 0xffffffffULL;
  const __u64 hold = PG_SPLICE_W(0, 0, 0, 0, 'h', 'o', 'l', 'd') & 0xffffffffULL;
  struct pg_splice_scan* sc = arg;
  __u8 buf[64];
  __u32 done = chunk * 64;
  if (done >= sc->n) return 1;
  __u32 k = sc->n - done;
  if (k > 64) k = 64;
  if (k == 0 || bpf_skb_load_bytes(sc->skb, sc->off + done, buf, k)) {
    sc->found = 1;
    return 1;
  }
  __u64 w = sc->w;
  for (int j = 0; j < 64; j++) {
    if (j >= k) break;
    w = (w << 8) | (__u8)(buf[j] | 0x20);
    if (w == set_config || w == deallocate || w == advisory ||
        (w & 0x00ffffffffffffffULL) == prepare || (w & 0x0000ffffffffffffULL) == listen ||
        (w & 0xffffffffULL) == temp || (w & 0xffffffffULL) == hold) {
      sc->found = 1;
      return 1;
    }
  }
  sc->w = w;
  return 0;
}

// 1 when the text at [off, off+n) may call set_config(), run DEALLOCATE or
// create session state (PREPARE, LISTEN, advisory locks, temporary tables,
// WITH HOLD cursors): the proxy tracks all of them for a move.
static __always_inline int pg_splice_text_needs_proxy(struct __sk_buff* skb, __u32 off, __u32 n) {
  if (n > PG_SPLICE_SCAN_MAX) return 1;
  struct pg_splice_scan sc = {.skb = skb, .off = off, .n = n, .w = 0, .found = 0};
  bpf_loop((n + 63) / 64, pg_splice_scan_chunk, &sc, 0);
  return sc.found;
}

struct pg_splice_walk {
  struct __sk_buff* skb;
  __u32 off, frame, dir;
  __u64 syncs, rfq, idle;
  __u32 status, batch;
  __u32 why;  // non-zero: the segment goes to the proxy
};

static __always_inline int pg_splice_client_msg(struct pg_splice_walk* w, __u8 type, __u32 body,
                                                __u32 blen) {
  switch (type) {
    case 'Q':
      w->syncs++;
      return pg_splice_text_needs_proxy(w->skb, body, blen);
    case 'P': {  // only unnamed statements: the proxy keeps named ones for a switch
      __u8 name0;
      if (blen < 1 || bpf_skb_load_bytes(w->skb, body, &name0, 1) || name0 != 0) return 1;
      w->batch = 1;
      return pg_splice_text_needs_proxy(w->skb, body + 1, blen - 1);
    }
    case 'B':
    case 'D':
    case 'E':
    case 'H':
      w->batch = 1;
      return 0;
    case 'S':
      w->syncs++;
      w->batch = 0;
      return 0;
    default:  // Close, FunctionCall, COPY, Terminate, ...
      return 1;
  }
}

static __always_inline int pg_splice_server_msg(struct pg_splice_walk* w, __u8 type, __u32 body,
                                                __u32 blen) {
  switch (type) {
    case 'Z': {
      __u8 st;
      if (blen != 1 || bpf_skb_load_bytes(w->skb, body, &st, 1)) return 1;
      w->rfq++;
      w->status = st;
      if (st == 'I') w->idle++;
      return 0;
    }
    case 'C': {  // SET, RESET, DISCARD, DEALLOCATE change what the proxy replays
      __u8 tag[4] = {0, 0, 0, 0};
      if (blen >= 4 && bpf_skb_load_bytes(w->skb, body, tag, 4)) return 1;
      return (tag[0] == 'S' && tag[1] == 'E' && tag[2] == 'T') ||
             (tag[0] == 'R' && tag[1] == 'E' && tag[2] == 'S' && tag[3] == 'E') ||
             (tag[0] == 'D' && tag[1] == 'I' && tag[2] == 'S' && tag[3] == 'C') ||
             (tag[0] == 'D' && tag[1] == 'E' && tag[2] == 'A' && tag[3] == 'L');
    }
    case 'T':
    case 'D':
    case '1':
    case '2':
    case '3':
    case 'n':
    case 's':
    case 't':
    case 'I':
    case 'N':
    case 'A':
      return 0;
    default:  // ErrorResponse, ParameterStatus, COPY, ...
      return 1;
  }
}

// One message of the segment (bpf_loop callback): 1 stops the walk.
static long pg_splice_walk_msg(__u32 i, void* arg) {
  struct pg_splice_walk* w = arg;
  if (w->off >= w->frame) return 1;
  __u8 type;
  __u32 len;
  if (w->off + 5 > w->frame || header(w->skb, w->off, &type, &len) || len < 4 ||
      len > w->frame - w->off - 1) {
    w->why = PG_SPLICE_WHY_RAW;  // split across segments, or malformed
    return 1;
  }
  __u32 body = w->off + 5, blen = len - 4;
  int needs_proxy = w->dir == 0 ? pg_splice_client_msg(w, type, body, blen)
                                : pg_splice_server_msg(w, type, body, blen);
  if (needs_proxy) {
    w->why = w->dir == 0 ? PG_SPLICE_WHY_CLIENT : PG_SPLICE_WHY_SERVER;
    return 1;
  }
  w->off += len + 1;
  return 0;
}

// A transaction the kernel carried from its first frame to its end: into
// the slot's latency histogram.
static __always_inline void pg_splice_time_txn(struct pg_splice_slot* slot, __u64 us) {
  const __u64 bounds[PG_SPLICE_LAT_BOUNDS] = PG_SPLICE_LAT_BOUNDS_US;
  __u32 b = 0;
#pragma unroll
  for (int i = 0; i < PG_SPLICE_LAT_BOUNDS; i++)
    if (us > bounds[i]) b = i + 1;
  if (b <= PG_SPLICE_LAT_BOUNDS) slot->lat[b]++;
  slot->lat_sum_us += us;
}

SEC("sk_skb")
int pg_splice_verdict(struct __sk_buff* skb) {
  __u64 cookie = bpf_get_socket_cookie(skb);
  struct pg_splice_sock* s = bpf_map_lookup_elem(&pg_splice_sockets, &cookie);
  if (!s) return SK_PASS;
  __u32 idx = s->slot;
  struct pg_splice_slot* slot = bpf_map_lookup_elem(&pg_splice_slots, &idx);
  if (!slot) return SK_PASS;
  __sync_fetch_and_add(&slot->busy, 1);
  int verdict = SK_PASS;
  if (slot->mode != PG_SPLICE_KERNEL) goto out;
  struct pg_splice_walk w = {
      .skb = skb, .frame = skb->len, .dir = s->dir, .batch = slot->batch_open};
  bpf_loop(PG_SPLICE_MAX_MSGS, pg_splice_walk_msg, &w, 0);
  if (!w.why && w.off != w.frame) w.why = w.dir == 0 ? PG_SPLICE_WHY_CLIENT : PG_SPLICE_WHY_SERVER;
  if (w.why) {
    if (__sync_val_compare_and_swap(&slot->mode, PG_SPLICE_KERNEL, PG_SPLICE_USER) ==
        PG_SPLICE_KERNEL) {
      slot->why = w.why;
      bpf_ringbuf_output(&pg_splice_events, &idx, sizeof(idx), 0);
    }
    goto out;
  }
  if (w.dir == 0) {
    slot->c2s_bytes += w.frame;
    slot->c2s_syncs += w.syncs;
    slot->batch_open = w.batch;
    if (slot->txn_start_ns == 0) slot->txn_start_ns = bpf_ktime_get_ns();
  } else {
    slot->s2c_bytes += w.frame;
    slot->s2c_rfq += w.rfq;
    slot->s2c_idle += w.idle;
    if (w.status) slot->last_status = w.status;
    if (w.status == 'I' && slot->txn_start_ns != 0) {
      pg_splice_time_txn(slot, (bpf_ktime_get_ns() - slot->txn_start_ns) / 1000);
      slot->txn_start_ns = 0;
    }
  }
  verdict = bpf_sk_redirect_map(skb, &pg_splice_socks, 2 * idx + (w.dir ? 0 : 1), 0);
out:
  __sync_fetch_and_add(&slot->busy, -1);
  return verdict;
}

char LICENSE[] SEC("license") = "GPL";
