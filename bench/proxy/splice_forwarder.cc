// Reference baseline for bench/proxy/run.sh: forwarder.c with the proxy's
// kernel splice (src/proxy/splice). One thread per connection copies bytes
// in user space, tracking the server's messages; each time the server's
// bytes end with ReadyForQuery 'I' and nothing is buffered, the two sockets
// go to kernel mode, and the thread only wakes when the kernel hands the
// session back (a frame it must not forward, or a close). Its tps ratio to
// a direct connection is what the splice can reach on the host.
//
//   splice_forwarder PORT UPSTREAM_TCP_PORT
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "proxy/splice/splicer.h"

namespace {

using pgshift::proxy::Splicer;

Splicer* g_splicer = nullptr;

bool SendAll(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// Waits until the kernel has queued what it redirected onto fd.
void Drain(int fd, uint64_t target) {
  for (int i = 0; i < 100000; i++) {
    auto q = Splicer::QueuedBytes(fd);
    if (!q.ok() || *q >= target) return;
    std::this_thread::yield();
  }
}

void Serve(int c, int upstream_port) {
  int u = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(upstream_port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int one = 1;
  if (connect(u, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    close(c);
    close(u);
    return;
  }
  setsockopt(u, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  int slot = -1;
  uint64_t base_c = 0, base_u = 0;
  size_t server_skip = 0;  // bytes of the server message in progress still to come
  bool server_idle = false;
  char buf[65536];
  for (;;) {
    pollfd p[2] = {{c, POLLIN, 0}, {u, POLLIN, 0}};
    if (poll(p, 2, -1) <= 0) continue;
    if (slot >= 0 && (p[0].revents | p[1].revents)) {
      auto k = g_splicer->TakeBack(slot);
      Drain(c, base_c + k.s2c_bytes);
      Drain(u, base_u + k.c2s_bytes);
    }
    bool done = false;
    for (int side = 0; side < 2 && !done; side++) {
      if (!p[side].revents) continue;
      int from = side == 0 ? c : u, to = side == 0 ? u : c;
      ssize_t r = recv(from, buf, sizeof(buf), MSG_DONTWAIT);
      if (r == 0 || (r < 0 && errno != EAGAIN)) {
        done = true;
        break;
      }
      if (r < 0) continue;
      if (!SendAll(to, buf, static_cast<size_t>(r))) done = true;
      if (side == 0) {
        server_idle = false;
        continue;
      }
      // Walk the server's messages: idle when the bytes end with Z 'I'.
      size_t off = 0, n = static_cast<size_t>(r);
      while (off < n) {
        if (server_skip > 0) {
          size_t t = std::min(server_skip, n - off);
          server_skip -= t;
          off += t;
          continue;
        }
        if (n - off < 5) {  // a header split across reads: stay in user space
          server_idle = false;
          server_skip = 0;
          off = n;
          break;
        }
        uint32_t len;
        std::memcpy(&len, buf + off + 1, 4);
        len = ntohl(len);
        server_idle = buf[off] == 'Z' && len == 5 && off + 6 <= n && buf[off + 5] == 'I';
        size_t total = 1 + static_cast<size_t>(len);
        if (off + total > n) {
          server_skip = off + total - n;
          server_idle = false;
          off = n;
        } else {
          off += total;
        }
      }
    }
    if (done) break;
    if (server_idle && server_skip == 0) {
      if (slot < 0) {
        auto s = g_splicer->Attach(c, u);
        if (s.ok()) slot = *s;
      }
      if (slot >= 0) {
        base_c = Splicer::QueuedBytes(c).value();
        base_u = Splicer::QueuedBytes(u).value();
        g_splicer->Enter(slot);
        char b;
        if (recv(c, &b, 1, MSG_PEEK | MSG_DONTWAIT) > 0) g_splicer->TakeBack(slot);
      }
    }
  }
  if (slot >= 0) g_splicer->Detach(slot);
  close(c);
  close(u);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: splice_forwarder PORT UPSTREAM_TCP_PORT\n");
    return 2;
  }
  auto s = Splicer::Create();
  if (!s.ok()) {
    std::fprintf(stderr, "splice_forwarder: %s\n", s.status().ToString().c_str());
    return 1;
  }
  g_splicer = s->get();
  int port = std::atoi(argv[1]), upstream = std::atoi(argv[2]);
  int ls = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(ls, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || listen(ls, 128) != 0) {
    std::perror("splice_forwarder: listen");
    return 1;
  }
  for (;;) {
    int c = accept(ls, nullptr, nullptr);
    if (c >= 0) std::thread(Serve, c, upstream).detach();
  }
}
