#include "testing/tcp_relay.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <list>
#include <vector>

#include "common/os.h"

namespace pgshift::testing {
namespace {

// Bytes read from one side before they are written to the other.
constexpr size_t kChunk = 64 * 1024;
constexpr int kListenBacklog = 64;

std::string Errno(const std::string& what) { return what + ": " + std::strerror(errno); }

void SetNonBlocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

// Closes with a reset rather than a FIN: a cut, not a goodbye.
void Reset(int fd) {
  linger l{.l_onoff = 1, .l_linger = 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  ::close(fd);
}

sockaddr_in Loopback(const std::string& host, int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, host.c_str(), &a.sin_addr);
  return a;
}

// One direction of a forwarded connection.
struct Flow {
  int from = -1;
  int to = -1;
  std::string buf;  // read from `from`, not yet written to `to`
  size_t off = 0;
  bool eof = false;  // `from` ended; `to` gets a FIN once buf is written
};

struct Pair {
  int client = -1;
  int upstream = -1;
  Flow up, down;  // client -> upstream, upstream -> client
  bool Done() const { return up.eof && down.eof && up.buf.empty() && down.buf.empty(); }
};

// Moves what it can in `f` after poll said `revents_from` / `revents_to`;
// false when the connection broke.
bool Pump(Flow& f, short revents_from, short revents_to) {
  if (f.buf.empty() && !f.eof && (revents_from & (POLLIN | POLLHUP | POLLERR))) {
    char tmp[kChunk];
    ssize_t n = ::read(f.from, tmp, sizeof tmp);
    if (n > 0) {
      f.buf.assign(tmp, static_cast<size_t>(n));
      f.off = 0;
    } else if (n == 0) {
      f.eof = true;
      ::shutdown(f.to, SHUT_WR);
    } else if (errno != EAGAIN && errno != EINTR) {
      return false;
    }
  }
  if (!f.buf.empty() && (revents_to & (POLLOUT | POLLERR | POLLHUP))) {
    ssize_t n = ::send(f.to, f.buf.data() + f.off, f.buf.size() - f.off, MSG_NOSIGNAL);
    if (n > 0) {
      f.off += static_cast<size_t>(n);
      if (f.off == f.buf.size()) {
        f.buf.clear();
        f.off = 0;
      }
    } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
      return false;
    }
  }
  return true;
}

}  // namespace

TcpRelay::TcpRelay(std::string upstream_host, int upstream_port)
    : upstream_host_(std::move(upstream_host)), upstream_port_(upstream_port) {}

Result<std::unique_ptr<TcpRelay>> TcpRelay::Start(const std::string& upstream_host,
                                                  int upstream_port) {
  std::unique_ptr<TcpRelay> r(new TcpRelay(upstream_host, upstream_port));
  PGSHIFT_ASSIGN_OR_RETURN(r->port_, FreePort());
  r->wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (r->wake_fd_ < 0) return Internal(Errno("eventfd"));
  PGSHIFT_RETURN_IF_ERROR(r->Listen());
  r->thread_ = std::thread([p = r.get()] { p->Loop(); });
  return r;
}

TcpRelay::~TcpRelay() {
  if (thread_.joinable()) {
    (void)Ask(Request::kStop);
    thread_.join();
  }
  if (listen_fd_ >= 0) ::close(listen_fd_);
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

Status TcpRelay::Listen() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Internal(Errno("socket"));
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a = Loopback("127.0.0.1", port_);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::listen(fd, kListenBacklog) != 0) {
    Status st = Unavailable(Errno("relay cannot listen on 127.0.0.1:" + std::to_string(port_)));
    ::close(fd);
    return st;
  }
  SetNonBlocking(fd);
  listen_fd_ = fd;
  cut_ = false;
  return Status::OK();
}

void TcpRelay::Cut() { (void)Ask(Request::kCut); }

Status TcpRelay::Restore() { return Ask(Request::kRestore); }

Status TcpRelay::Ask(Request r) {
  static std::mutex ask_mu;  // one request at a time (any relay: they are rare)
  std::lock_guard<std::mutex> one(ask_mu);
  std::unique_lock<std::mutex> lock(mu_);
  request_ = r;
  answered_ = false;
  const uint64_t v = 1;
  if (::write(wake_fd_, &v, sizeof v) != sizeof v) return Internal(Errno("eventfd write"));
  done_cv_.wait(lock, [this] { return answered_; });
  return answer_;
}

void TcpRelay::Loop() {
  std::list<Pair> pairs;
  auto close_all = [&] {
    for (auto& p : pairs) {
      Reset(p.client);
      Reset(p.upstream);
    }
    pairs.clear();
    open_ = 0;
  };
  std::vector<pollfd> fds;
  while (true) {
    fds.clear();
    fds.push_back({wake_fd_, POLLIN, 0});
    fds.push_back({listen_fd_, POLLIN, 0});  // -1 while cut: ignored by poll
    for (auto& p : pairs) {
      for (Flow* f : {&p.up, &p.down}) {
        const bool want_read = f->buf.empty() && !f->eof;
        fds.push_back({f->from, static_cast<short>(want_read ? POLLIN : 0), 0});
        fds.push_back({f->to, static_cast<short>(f->buf.empty() ? 0 : POLLOUT), 0});
      }
    }
    if (::poll(fds.data(), fds.size(), -1) < 0 && errno != EINTR) continue;

    if (fds[0].revents & POLLIN) {
      uint64_t v;
      (void)::read(wake_fd_, &v, sizeof v);
      std::lock_guard<std::mutex> lock(mu_);
      Status answer;
      switch (request_) {
        case Request::kCut:
        case Request::kStop:
          close_all();
          if (listen_fd_ >= 0) ::close(listen_fd_);
          listen_fd_ = -1;
          cut_ = true;
          break;
        case Request::kRestore:
          if (listen_fd_ < 0) answer = Listen();
          break;
        case Request::kNone:
          break;
      }
      const bool stop = request_ == Request::kStop;
      request_ = Request::kNone;
      answer_ = answer;
      answered_ = true;
      done_cv_.notify_all();
      if (stop) return;
      continue;  // the fd set changed
    }

    if (listen_fd_ >= 0 && (fds[1].revents & POLLIN)) {
      int c = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c >= 0) {
        ++accepted_;
        int u = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in a = Loopback(upstream_host_, upstream_port_);
        // Loopback: a blocking connect answers at once, accepted or refused.
        if (u < 0 || ::connect(u, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
          if (u >= 0) ::close(u);
          Reset(c);
        } else {
          int one = 1;
          ::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          ::setsockopt(u, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          SetNonBlocking(c);
          SetNonBlocking(u);
          Pair& p = pairs.emplace_back();
          p.client = c;
          p.upstream = u;
          p.up.from = p.down.to = c;
          p.up.to = p.down.from = u;
          ++open_;
        }
      }
    }

    size_t i = 2;
    for (auto it = pairs.begin(); it != pairs.end();) {
      bool ok = true;
      for (Flow* f : {&it->up, &it->down}) {
        ok = Pump(*f, fds[i].revents, fds[i + 1].revents) && ok;
        i += 2;
      }
      if (!ok || it->Done()) {
        for (int fd : {it->client, it->upstream}) {
          if (ok) {
            ::close(fd);
          } else {
            Reset(fd);
          }
        }
        it = pairs.erase(it);
        --open_;
      } else {
        ++it;
      }
    }
  }
}

}  // namespace pgshift::testing
