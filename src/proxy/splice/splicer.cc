#include "proxy/splice/splicer.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstring>
#include <thread>

namespace pgshift::proxy {

// pg_splice.bpf.o, compiled by clang at build time (embed.cmake).
extern const unsigned char kPgSpliceBpfObject[];
extern const size_t kPgSpliceBpfObjectSize;

namespace {

int LibbpfLog(enum libbpf_print_level level, const char* fmt, va_list args) {
  if (level == LIBBPF_DEBUG) return 0;
  char buf[512];
  int n = vsnprintf(buf, sizeof(buf), fmt, args);
  std::string_view s(buf, n > 0 ? std::min<size_t>(n, sizeof(buf) - 1) : 0);
  while (!s.empty() && s.back() == '\n') s.remove_suffix(1);
  spdlog::debug("pgshift-proxy: libbpf: {}", s);
  return 0;
}

Status Errno(const std::string& what, int err) {
  err = err < 0 ? -err : err;
  std::string msg = "kernel splice: " + what + ": " + std::strerror(err);
  if (err == EPERM || err == EACCES)
    return FailedPrecondition(msg + " (needs CAP_BPF and CAP_NET_ADMIN: run as root)");
  return Unavailable(msg);
}

Result<uint64_t> Cookie(int fd) {
  uint64_t cookie = 0;
  socklen_t len = sizeof(cookie);
  if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &len) != 0) return Errno("SO_COOKIE", errno);
  return cookie;
}

template <typename T>
std::atomic_ref<T> Atomic(T& v) {
  return std::atomic_ref<T>(v);
}

}  // namespace

Result<std::unique_ptr<Splicer>> Splicer::Create() {
  libbpf_set_print(LibbpfLog);
  std::unique_ptr<Splicer> s(new Splicer());
  s->obj_ = bpf_object__open_mem(kPgSpliceBpfObject, kPgSpliceBpfObjectSize, nullptr);
  if (!s->obj_) return Errno("opening the BPF object", errno);
  if (int err = bpf_object__load(s->obj_); err != 0) return Errno("loading the BPF programs", err);
  auto map_fd = [&](const char* name) {
    bpf_map* m = bpf_object__find_map_by_name(s->obj_, name);
    return m ? bpf_map__fd(m) : -1;
  };
  auto prog_fd = [&](const char* name) {
    bpf_program* p = bpf_object__find_program_by_name(s->obj_, name);
    return p ? bpf_program__fd(p) : -1;
  };
  s->socks_fd_ = map_fd("pg_splice_socks");
  s->sockets_fd_ = map_fd("pg_splice_sockets");
  s->slots_fd_ = map_fd("pg_splice_slots");
  int verdict = prog_fd("pg_splice_verdict");
  if (s->socks_fd_ < 0 || s->sockets_fd_ < 0 || s->slots_fd_ < 0 || verdict < 0)
    return Internal("kernel splice: the BPF object lacks a map or program");
  // A verdict without a stream parser sees whole received segments (no
  // strparser framing: its offsets are invisible to BPF, and it costs more).
  if (bpf_prog_attach(verdict, s->socks_fd_, BPF_SK_SKB_VERDICT, 0) != 0)
    return Errno("attaching the verdict program", errno);
  size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  s->slots_bytes_ = (sizeof(pg_splice_slot) * PG_SPLICE_MAX_SLOTS + page - 1) / page * page;
  void* p = mmap(nullptr, s->slots_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, s->slots_fd_, 0);
  if (p == MAP_FAILED) return Errno("mapping the slot array", errno);
  s->slots_ = static_cast<pg_splice_slot*>(p);
  int events_fd = map_fd("pg_splice_events");
  if (events_fd < 0) return Internal("kernel splice: the BPF object lacks its event ring");
  s->events_ = ring_buffer__new(
      events_fd,
      [](void* ctx, void* data, size_t size) -> int {
        auto* self = static_cast<Splicer*>(ctx);
        if (size >= sizeof(uint32_t)) self->woken_.push_back(*static_cast<const uint32_t*>(data));
        return 0;
      },
      s.get(), nullptr);
  if (!s->events_) return Errno("opening the event ring", errno);
  s->wakers_.resize(PG_SPLICE_MAX_SLOTS);
  for (int i = PG_SPLICE_MAX_SLOTS - 1; i >= 0; i--) s->free_.push_back(i);
  s->cookies_.assign(2 * PG_SPLICE_MAX_SLOTS, 0);
  return s;
}

Splicer::~Splicer() {
  if (events_) ring_buffer__free(events_);
  if (slots_) munmap(slots_, slots_bytes_);
  if (obj_) bpf_object__close(obj_);  // the maps go, and with them every splice
}

Status Splicer::SetSocket(int i, int dir, int fd) {
  auto cookie = Cookie(fd);
  if (!cookie.ok()) return cookie.status();
  uint32_t index = static_cast<uint32_t>(2 * i + dir);
  // The verdict finds the socket's entry before any segment can reach it.
  pg_splice_sock st{static_cast<uint32_t>(i), static_cast<uint32_t>(dir)};
  if (bpf_map_update_elem(sockets_fd_, &*cookie, &st, BPF_ANY) != 0)
    return Errno("registering a socket", errno);
  uint64_t value = static_cast<uint64_t>(fd);
  if (bpf_map_update_elem(socks_fd_, &index, &value, BPF_ANY) != 0) {
    int err = errno;
    bpf_map_delete_elem(sockets_fd_, &*cookie);
    return Errno("adding a socket to the sockmap", err);
  }
  uint64_t old;
  {
    std::lock_guard lock(mu_);
    old = cookies_[index];
    cookies_[index] = *cookie;
  }
  if (old != 0 && old != *cookie) bpf_map_delete_elem(sockets_fd_, &old);
  return Status::OK();
}

Result<int> Splicer::Attach(int client_fd, int server_fd) {
  int i;
  {
    std::lock_guard lock(mu_);
    if (free_.empty()) return Unavailable("kernel splice: all slots are in use");
    i = free_.back();
    free_.pop_back();
  }
  std::memset(slot(i), 0, sizeof(pg_splice_slot));  // user mode, counters zero
  Status st = SetSocket(i, 0, client_fd);
  if (st.ok()) st = SetSocket(i, 1, server_fd);
  if (!st.ok()) {
    Detach(i);
    return st;
  }
  return i;
}

Status Splicer::ReplaceServer(int i, int server_fd) { return SetSocket(i, 1, server_fd); }

void Splicer::Detach(int i) {
  TakeBack(i);
  for (int dir = 0; dir < 2; dir++) {
    uint32_t index = static_cast<uint32_t>(2 * i + dir);
    bpf_map_delete_elem(socks_fd_, &index);  // ENOENT when the socket closed first
    uint64_t cookie;
    {
      std::lock_guard lock(mu_);
      cookie = cookies_[index];
      cookies_[index] = 0;
    }
    if (cookie != 0) bpf_map_delete_elem(sockets_fd_, &cookie);
  }
  std::lock_guard lock(mu_);
  wakers_[i] = nullptr;
  free_.push_back(i);
}

int Splicer::EventsFd() const { return ring_buffer__epoll_fd(events_); }

void Splicer::SetWaker(int i, std::function<void()> wake) {
  std::lock_guard lock(mu_);
  wakers_[i] = std::move(wake);
}

void Splicer::DispatchEvents() {
  woken_.clear();
  ring_buffer__consume(events_);
  std::vector<std::function<void()>> calls;
  {
    std::lock_guard lock(mu_);
    for (int i : woken_)
      if (i >= 0 && i < PG_SPLICE_MAX_SLOTS && wakers_[i]) calls.push_back(wakers_[i]);
  }
  for (auto& fn : calls) fn();
}

void Splicer::Enter(int i) {
  pg_splice_slot* s = slot(i);
  s->why = PG_SPLICE_WHY_NONE;
  s->txn_start_ns = 0;  // at a boundary: nothing in flight
  Atomic(s->mode).store(PG_SPLICE_KERNEL);
}

bool Splicer::InKernel(int i) const { return Atomic(slot(i)->mode).load() == PG_SPLICE_KERNEL; }

SpliceCounters Splicer::TakeBack(int i) {
  pg_splice_slot* s = slot(i);
  uint32_t kernel = PG_SPLICE_KERNEL;
  Atomic(s->mode).compare_exchange_strong(kernel, PG_SPLICE_USER);
  // A verdict that saw kernel mode finishes its redirect and counters first.
  while (Atomic(s->busy).load() != 0) std::this_thread::yield();
  SpliceCounters c;
  c.c2s_bytes = s->c2s_bytes;
  c.s2c_bytes = s->s2c_bytes;
  c.c2s_syncs = s->c2s_syncs;
  c.s2c_rfq = s->s2c_rfq;
  c.s2c_idle = s->s2c_idle;
  c.last_status = static_cast<char>(s->last_status);
  c.batch_open = s->batch_open != 0;
  c.why = s->why;
  c.txn_start_ns = s->txn_start_ns;
  c.lat_sum_us = s->lat_sum_us;
  for (size_t b = 0; b < c.lat.size(); b++) {
    c.lat[b] = s->lat[b];
    s->lat[b] = 0;
  }
  s->txn_start_ns = s->lat_sum_us = 0;
  s->c2s_bytes = s->s2c_bytes = s->c2s_syncs = s->s2c_rfq = s->s2c_idle = 0;
  s->last_status = 0;
  s->batch_open = 0;
  return c;
}

SpliceCounters Splicer::Peek(int i) const {
  pg_splice_slot* s = slot(i);
  SpliceCounters c;
  c.c2s_bytes = Atomic(s->c2s_bytes).load(std::memory_order_relaxed);
  c.s2c_bytes = Atomic(s->s2c_bytes).load(std::memory_order_relaxed);
  c.s2c_idle = Atomic(s->s2c_idle).load(std::memory_order_relaxed);
  for (size_t b = 0; b < c.lat.size(); b++)
    c.lat[b] = Atomic(s->lat[b]).load(std::memory_order_relaxed);
  c.lat_sum_us = Atomic(s->lat_sum_us).load(std::memory_order_relaxed);
  return c;
}

Result<uint64_t> Splicer::QueuedBytes(int fd) {
  tcp_info ti{};
  socklen_t len = sizeof(ti);
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0) return Errno("TCP_INFO", errno);
  if (len < offsetof(tcp_info, tcpi_bytes_retrans) + sizeof(ti.tcpi_bytes_retrans))
    return Unavailable("kernel splice: TCP_INFO lacks byte counters");
  return ti.tcpi_bytes_sent - ti.tcpi_bytes_retrans + ti.tcpi_notsent_bytes;
}

int Splicer::slots_in_use() const {
  std::lock_guard lock(mu_);
  return PG_SPLICE_MAX_SLOTS - static_cast<int>(free_.size());
}

}  // namespace pgshift::proxy
