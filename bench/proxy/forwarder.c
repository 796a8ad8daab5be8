// Reference baseline for bench/proxy/run.sh: the smallest user-space TCP
// proxy — accept on 127.0.0.1:PORT, connect each client to UPSTREAM (a Unix
// socket path, or a TCP port on 127.0.0.1), then copy bytes both ways from one
// level-triggered epoll loop. No parsing, no TLS, no state. Its tps ratio to a
// direct connection is the ceiling any user-space proxy can reach on the host.
//
//   forwarder PORT UPSTREAM [SPIN_US]
// SPIN_US > 0: after the last event, poll epoll without sleeping for up to
// SPIN_US microseconds before blocking (adaptive busy polling).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_FD 65536
static int peer[MAX_FD];

static long long now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

static int connect_upstream(const char* up) {
  int fd;
  if (up[0] == '/') {
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(up) >= sizeof a.sun_path) return -1;
    strcpy(a.sun_path, up);
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr*)&a, sizeof a) != 0) goto fail;
  } else {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(up))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr*)&a, sizeof a) != 0) goto fail;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  return fd;
fail:
  perror("forwarder: connect upstream");
  if (fd >= 0) close(fd);
  return -1;
}

// Writes all of buf; waits for POLLOUT when the peer's buffer is full.
static int send_all(int fd, const char* buf, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, buf, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) return -1;
      struct pollfd p = {.fd = fd, .events = POLLOUT};
      poll(&p, 1, -1);
      continue;
    }
    buf += w;
    n -= (size_t)w;
  }
  return 0;
}

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: forwarder PORT UPSTREAM(/unix/socket|tcp-port) [SPIN_US]\n");
    return 2;
  }
  const char* up = argv[2];
  long long spin_us = argc > 3 ? atoll(argv[3]) : 0;
  int one = 1;
  int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(ls, (struct sockaddr*)&a, sizeof a) != 0 || listen(ls, 128) != 0) {
    perror("forwarder: listen");
    return 1;
  }
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls};
  epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
  struct epoll_event evs[64];
  static char buf[65536];
  long long last_work = 0;
  for (;;) {
    int timeout = (spin_us > 0 && now_us() - last_work < spin_us) ? 0 : -1;
    int n = epoll_wait(ep, evs, 64, timeout);
    if (n > 0) last_work = now_us();
    for (int i = 0; i < n; i++) {
      int fd = evs[i].data.fd;
      if (fd == ls) {
        int c = accept4(ls, NULL, NULL, SOCK_NONBLOCK);
        if (c < 0) continue;
        int u = connect_upstream(up);
        if (u < 0 || u >= MAX_FD || c >= MAX_FD) {
          close(c);
          if (u >= 0) close(u);
          continue;
        }
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        peer[c] = u;
        peer[u] = c;
        ev.events = EPOLLIN;
        ev.data.fd = c;
        epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
        ev.data.fd = u;
        epoll_ctl(ep, EPOLL_CTL_ADD, u, &ev);
        continue;
      }
      if (peer[fd] < 0) continue;  // its pair was closed earlier in this batch
      ssize_t r = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
      if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (r <= 0 || send_all(peer[fd], buf, (size_t)r) != 0) {
        int p = peer[fd];
        peer[fd] = peer[p] = -1;
        close(p);  // closing removes both from the epoll set
        close(fd);
      }
    }
  }
}
