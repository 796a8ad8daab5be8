// TcpRelay against an echo server on loopback: forwards both ways, Cut()
// ends the forwarded connections and refuses new ones, Restore() serves again.
#include "testing/tcp_relay.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

namespace pgshift::testing {
namespace {

// A read that waits longer than this has failed the test (loaded machine).
constexpr int kReadBoundMs = 10000;

sockaddr_in Loopback(int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  return a;
}

// Echoes every connection back, each on its own thread.
class EchoServer {
 public:
  EchoServer() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a = Loopback(0);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::listen(fd_, 16), 0);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] {
      while (true) {
        int c = ::accept(fd_, nullptr, nullptr);
        if (c < 0) return;
        workers_.emplace_back([c] {
          char buf[4096];
          ssize_t n;
          while ((n = ::read(c, buf, sizeof buf)) > 0) {
            if (::send(c, buf, n, MSG_NOSIGNAL) != n) break;
          }
          ::close(c);
        });
      }
    });
  }
  ~EchoServer() {
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    thread_.join();
    for (auto& w : workers_) w.join();
  }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
  std::thread thread_;
  std::vector<std::thread> workers_;
};

int Connect(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a = Loopback(port);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Reads exactly n bytes, or what came before the connection ended / the bound.
std::string ReadN(int fd, size_t n) {
  std::string out;
  while (out.size() < n) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, kReadBoundMs) <= 0) break;
    char buf[4096];
    ssize_t r = ::read(fd, buf, std::min(sizeof buf, n - out.size()));
    if (r <= 0) break;
    out.append(buf, r);
  }
  return out;
}

// True when the peer ended the connection (EOF or reset) within the bound.
bool Ended(int fd) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, kReadBoundMs) <= 0) return false;
  char c;
  return ::read(fd, &c, 1) <= 0;
}

TEST(TcpRelayTest, ForwardsBothWays) {
  EchoServer echo;
  auto relay = TcpRelay::Start("127.0.0.1", echo.port());
  ASSERT_TRUE(relay.ok()) << relay.status().ToString();
  int fd = Connect((*relay)->port());
  ASSERT_GE(fd, 0);
  // More than one chunk, so the relay's buffering is exercised.
  std::string big(300 * 1024, 'x');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + i % 26);
  std::thread writer(
      [&] { ASSERT_EQ(::send(fd, big.data(), big.size(), 0), (ssize_t)big.size()); });
  EXPECT_EQ(ReadN(fd, big.size()), big);
  writer.join();
  EXPECT_EQ((*relay)->accepted(), 1);
  EXPECT_EQ((*relay)->open(), 1);
  ::close(fd);
}

TEST(TcpRelayTest, CutEndsConnectionsAndRefusesNewOnesUntilRestored) {
  EchoServer echo;
  auto relay = TcpRelay::Start("127.0.0.1", echo.port());
  ASSERT_TRUE(relay.ok()) << relay.status().ToString();
  TcpRelay& r = **relay;
  int a = Connect(r.port());
  int b = Connect(r.port());
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  ASSERT_EQ(::send(a, "ping", 4, 0), 4);
  ASSERT_EQ(ReadN(a, 4), "ping");

  r.Cut();
  EXPECT_TRUE(r.cut());
  EXPECT_EQ(r.open(), 0);
  EXPECT_TRUE(Ended(a));
  EXPECT_TRUE(Ended(b));
  EXPECT_EQ(Connect(r.port()), -1) << "refused while cut";
  r.Cut();  // idempotent

  ASSERT_TRUE(r.Restore().ok());
  EXPECT_FALSE(r.cut());
  int c = Connect(r.port());
  ASSERT_GE(c, 0);
  ASSERT_EQ(::send(c, "again", 5, 0), 5);
  EXPECT_EQ(ReadN(c, 5), "again");
  EXPECT_TRUE(r.Restore().ok()) << "idempotent";
  ::close(a);
  ::close(b);
  ::close(c);
}

TEST(TcpRelayTest, UpstreamDownClosesTheClient) {
  EchoServer echo;
  const int dead_port = [] {
    // A port nobody listens on: bound, then closed.
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a = Loopback(0);
    ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    ::close(fd);
    return static_cast<int>(ntohs(a.sin_port));
  }();
  auto relay = TcpRelay::Start("127.0.0.1", dead_port);
  ASSERT_TRUE(relay.ok()) << relay.status().ToString();
  int fd = Connect((*relay)->port());
  ASSERT_GE(fd, 0) << "the relay itself accepts";
  EXPECT_TRUE(Ended(fd)) << "and ends the connection it cannot forward";
  EXPECT_EQ((*relay)->open(), 0);
  ::close(fd);
}

}  // namespace
}  // namespace pgshift::testing
