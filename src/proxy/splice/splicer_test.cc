// Kernel splice on real loopback TCP sockets: a test plays both the client
// and the server, the splicer sits where pgshift-proxy's two sockets are.
#include "proxy/splice/splicer.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <thread>

#include "common/latency.h"

namespace pgshift::proxy {
namespace {

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Fd& operator=(Fd&& o) noexcept {
    std::swap(fd_, o.fd_);
    return *this;
  }
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

// A connected loopback TCP pair: first is the connecting end.
std::pair<Fd, Fd> TcpPair() {
  Fd l(socket(AF_INET, SOCK_STREAM, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  EXPECT_EQ(bind(l.get(), reinterpret_cast<sockaddr*>(&a), len), 0);
  EXPECT_EQ(listen(l.get(), 1), 0);
  EXPECT_EQ(getsockname(l.get(), reinterpret_cast<sockaddr*>(&a), &len), 0);
  Fd c(socket(AF_INET, SOCK_STREAM, 0));
  EXPECT_EQ(connect(c.get(), reinterpret_cast<sockaddr*>(&a), len), 0);
  Fd s(accept(l.get(), nullptr, nullptr));
  int one = 1;
  setsockopt(c.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  setsockopt(s.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return {std::move(c), std::move(s)};
}

std::string Msg(char type, const std::string& body) {
  uint32_t n = htonl(static_cast<uint32_t>(body.size() + 4));
  return std::string(1, type) + std::string(reinterpret_cast<char*>(&n), 4) + body;
}
std::string Query(const std::string& sql) { return Msg('Q', sql + std::string(1, '\0')); }
std::string Rfq(char status) { return Msg('Z', std::string(1, status)); }
std::string Complete(const std::string& tag) { return Msg('C', tag + std::string(1, '\0')); }

void SendAll(int fd, const std::string& d) {
  ASSERT_EQ(send(fd, d.data(), d.size(), MSG_NOSIGNAL), static_cast<ssize_t>(d.size()));
}

// Reads exactly n bytes within a generous bound.
std::string ReadN(int fd, size_t n) {
  std::string out;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  char buf[65536];
  while (out.size() < n && std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    ssize_t r = recv(fd, buf, std::min(sizeof(buf), n - out.size()), 0);
    if (r <= 0) break;
    out.append(buf, static_cast<size_t>(r));
  }
  return out;
}

// True when nothing arrives on fd within 100 ms.
bool Silent(int fd) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, 100) == 0;
}

class SplicerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = Splicer::Create();
    // CI runs as root; elsewhere without privilege there is nothing to test.
    if (!s.ok() && geteuid() != 0) GTEST_SKIP() << s.status().ToString();
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    splicer_ = std::move(*s);
  }

  struct Session {
    Fd client, proxy_client, proxy_server, server;
    int slot = -1;
  };
  Session Spliced() {
    Session s;
    auto [c, pc] = TcpPair();
    auto [ps, sv] = TcpPair();
    s.client = std::move(c);
    s.proxy_client = std::move(pc);
    s.proxy_server = std::move(ps);
    s.server = std::move(sv);
    auto slot = splicer_->Attach(s.proxy_client.get(), s.proxy_server.get());
    EXPECT_TRUE(slot.ok()) << slot.status().ToString();
    s.slot = slot.ok() ? *slot : -1;
    return s;
  }

  std::unique_ptr<Splicer> splicer_;
};

TEST_F(SplicerTest, KernelModeForwardsPlainFramesBothWaysAndCountsThem) {
  Session s = Spliced();
  ASSERT_GE(s.slot, 0);
  splicer_->Enter(s.slot);
  std::string q = Query("SELECT abalance FROM pgbench_accounts WHERE aid = 7");
  std::string reply =
      Msg('T', std::string(10, 'x')) + Msg('D', "row") + Complete("SELECT 1") + Rfq('I');
  for (int i = 0; i < 3; i++) {
    SendAll(s.client.get(), q);
    EXPECT_EQ(ReadN(s.server.get(), q.size()), q);
    SendAll(s.server.get(), reply);
    EXPECT_EQ(ReadN(s.client.get(), reply.size()), reply);
  }
  // Extended protocol with an unnamed statement stays in the kernel too.
  std::string ext = Msg('P', std::string("\0SELECT 1\0\0\0", 12)) + Msg('B', std::string(8, '\0')) +
                    Msg('E', std::string(5, '\0')) + Msg('S', "");
  SendAll(s.client.get(), ext);
  EXPECT_EQ(ReadN(s.server.get(), ext.size()), ext);
  std::string ext_reply = Msg('1', "") + Msg('2', "") + Complete("SELECT 1") + Rfq('T');
  SendAll(s.server.get(), ext_reply);
  EXPECT_EQ(ReadN(s.client.get(), ext_reply.size()), ext_reply);
  EXPECT_TRUE(Silent(s.proxy_client.get()));
  EXPECT_TRUE(Silent(s.proxy_server.get()));
  EXPECT_TRUE(splicer_->InKernel(s.slot));

  SpliceCounters c = splicer_->TakeBack(s.slot);
  EXPECT_EQ(c.c2s_bytes, 3 * q.size() + ext.size());
  EXPECT_EQ(c.s2c_bytes, 3 * reply.size() + ext_reply.size());
  EXPECT_EQ(c.c2s_syncs, 4u);
  EXPECT_EQ(c.s2c_rfq, 4u);
  EXPECT_EQ(c.s2c_idle, 3u);
  EXPECT_EQ(c.last_status, 'T');
  EXPECT_FALSE(c.batch_open);
  EXPECT_EQ(c.why, static_cast<uint32_t>(PG_SPLICE_WHY_NONE));
  EXPECT_FALSE(splicer_->InKernel(s.slot));
  // Back in user mode the proxy's sockets get the bytes; counters were zeroed.
  SendAll(s.client.get(), q);
  EXPECT_EQ(ReadN(s.proxy_client.get(), q.size()), q);
  EXPECT_EQ(splicer_->TakeBack(s.slot).c2s_bytes, 0u);
  splicer_->Detach(s.slot);
}

TEST_F(SplicerTest, KernelTimesTheTransactionsItCarriesWhole) {
  Session s = Spliced();
  ASSERT_GE(s.slot, 0);
  splicer_->Enter(s.slot);
  std::string q = Query("UPDATE t SET v = v + 1");
  std::string reply = Complete("UPDATE 1") + Rfq('I');
  constexpr auto kServerTime = std::chrono::milliseconds(30);
  for (int i = 0; i < 2; i++) {
    SendAll(s.client.get(), q);
    EXPECT_EQ(ReadN(s.server.get(), q.size()), q);
    std::this_thread::sleep_for(kServerTime);
    SendAll(s.server.get(), reply);
    EXPECT_EQ(ReadN(s.client.get(), reply.size()), reply);
  }
  // A transaction still open: its start is kept for the proxy.
  std::string begin = Query("BEGIN");
  SendAll(s.client.get(), begin);
  EXPECT_EQ(ReadN(s.server.get(), begin.size()), begin);
  std::string in_txn = Complete("BEGIN") + Rfq('T');
  SendAll(s.server.get(), in_txn);
  EXPECT_EQ(ReadN(s.client.get(), in_txn.size()), in_txn);
  ASSERT_TRUE(splicer_->InKernel(s.slot));

  auto total = [](const SpliceCounters& c) {
    uint64_t n = 0;
    for (uint64_t v : c.lat) n += v;
    return n;
  };
  EXPECT_EQ(total(splicer_->Peek(s.slot)), 2u) << "the stats see them live";
  SpliceCounters c = splicer_->TakeBack(s.slot);
  EXPECT_EQ(total(c), 2u);
  // At least the server's time each, in the bucket layout of common/latency.h.
  EXPECT_GE(c.lat_sum_us, 2u * 30000);
  uint64_t at_least_25ms = 0;
  for (size_t b = LatencyBucketOf(25000) + 1; b < c.lat.size(); b++) at_least_25ms += c.lat[b];
  EXPECT_EQ(at_least_25ms, 2u);
  EXPECT_NE(c.txn_start_ns, 0u);
  EXPECT_EQ(total(splicer_->TakeBack(s.slot)), 0u) << "zeroed";
  splicer_->Detach(s.slot);
}

TEST_F(SplicerTest, FramesTheProxyMustSeeSwitchToUserModeInOrder) {
  struct Case {
    const char* name;
    bool from_client;
    std::string frame;
    uint32_t why;
  };
  const std::string named_parse = Msg('P', std::string("s1\0SELECT 1\0\0\0", 14));
  const Case cases[] = {
      {"set_config", true, Query("SELECT Set_Config('work_mem', '8MB', false)"),
       PG_SPLICE_WHY_CLIENT},
      {"deallocate", true, Query("DEALLOCATE s1"), PG_SPLICE_WHY_CLIENT},
      // Session state a move must look at (session_carry.h).
      {"prepare", true, Query("PREPARE q AS SELECT 1"), PG_SPLICE_WHY_CLIENT},
      {"listen", true, Query("Listen chan"), PG_SPLICE_WHY_CLIENT},
      {"advisory", true, Query("SELECT pg_advisory_lock(7)"), PG_SPLICE_WHY_CLIENT},
      {"temp", true, Query("CREATE TEMP TABLE t (a int)"), PG_SPLICE_WHY_CLIENT},
      {"hold", true, Query("DECLARE c CURSOR WITH HOLD FOR SELECT 1"), PG_SPLICE_WHY_CLIENT},
      {"unnamed parse", true, Msg('P', std::string("\0LISTEN x\0\0\0", 13)), PG_SPLICE_WHY_CLIENT},
      {"named parse", true, named_parse, PG_SPLICE_WHY_CLIENT},
      {"terminate", true, Msg('X', ""), PG_SPLICE_WHY_CLIENT},
      {"SET tag", false, Complete("SET") + Rfq('I'), PG_SPLICE_WHY_SERVER},
      {"error", false, Msg('E', std::string("SERROR\0\0", 8)) + Rfq('I'), PG_SPLICE_WHY_SERVER},
      {"parameter status", false, Msg('S', std::string("a\0b\0", 4)), PG_SPLICE_WHY_SERVER},
      {"long message", true, Msg('d', std::string(200000, 'y')), PG_SPLICE_WHY_RAW},
  };
  for (const Case& k : cases) {
    SCOPED_TRACE(k.name);
    Session s = Spliced();
    ASSERT_GE(s.slot, 0);
    splicer_->Enter(s.slot);
    int sender = k.from_client ? s.client.get() : s.server.get();
    int proxy_side = k.from_client ? s.proxy_client.get() : s.proxy_server.get();
    int peer = k.from_client ? s.server.get() : s.client.get();
    // One plain frame first (goes through), then the one that needs the proxy,
    // then a plain one again: both of those must reach the proxy, in order.
    std::string plain = k.from_client ? Query("SELECT 1") : Msg('D', "row");
    SendAll(sender, plain);
    EXPECT_EQ(ReadN(peer, plain.size()), plain);
    SendAll(sender, k.frame);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // its own segment
    SendAll(sender, plain);
    std::string want = k.frame + plain;
    std::string got = ReadN(proxy_side, want.size());
    EXPECT_EQ(got.size(), want.size());
    EXPECT_TRUE(got == want) << "the bytes differ from byte "
                             << std::mismatch(got.begin(), got.end(), want.begin()).first -
                                    got.begin();
    EXPECT_TRUE(Silent(peer));
    EXPECT_FALSE(splicer_->InKernel(s.slot));
    SpliceCounters c = splicer_->TakeBack(s.slot);
    EXPECT_EQ(c.why, k.why);
    EXPECT_EQ(k.from_client ? c.c2s_bytes : c.s2c_bytes, plain.size());
    splicer_->Detach(s.slot);
  }
}

TEST_F(SplicerTest, SplitAndMalformedMessagesGoToTheProxyWhole) {
  // A message split across segments: the proxy gets both parts, the server none.
  Session s = Spliced();
  ASSERT_GE(s.slot, 0);
  splicer_->Enter(s.slot);
  std::string q = Query("SELECT 2");
  SendAll(s.client.get(), q.substr(0, 3));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  SendAll(s.client.get(), q.substr(3));
  EXPECT_EQ(ReadN(s.proxy_client.get(), q.size()), q);
  EXPECT_TRUE(Silent(s.server.get()));
  EXPECT_EQ(splicer_->TakeBack(s.slot).why, static_cast<uint32_t>(PG_SPLICE_WHY_RAW));
  // A length below 4 is not a message: the proxy gets the bytes and answers.
  splicer_->Enter(s.slot);
  std::string bad("Q\0\0\0\1garbage", 12);
  SendAll(s.client.get(), bad);
  EXPECT_EQ(ReadN(s.proxy_client.get(), bad.size()), bad);
  EXPECT_TRUE(Silent(s.server.get()));
  EXPECT_EQ(splicer_->TakeBack(s.slot).why, static_cast<uint32_t>(PG_SPLICE_WHY_RAW));
  splicer_->Detach(s.slot);
}

TEST_F(SplicerTest, QueuedBytesCoversWhatTheKernelRedirected) {
  Session s = Spliced();
  ASSERT_GE(s.slot, 0);
  auto base = Splicer::QueuedBytes(s.proxy_client.get());
  ASSERT_TRUE(base.ok()) << base.status().ToString();
  splicer_->Enter(s.slot);
  std::string reply = Msg('D', std::string(3000, 'r')) + Rfq('I');
  SendAll(s.server.get(), reply);
  EXPECT_EQ(ReadN(s.client.get(), reply.size()), reply);
  SpliceCounters c = splicer_->TakeBack(s.slot);
  auto now = Splicer::QueuedBytes(s.proxy_client.get());
  ASSERT_TRUE(now.ok());
  EXPECT_EQ(*now, *base + c.s2c_bytes);
  splicer_->Detach(s.slot);
}

TEST_F(SplicerTest, SlotsAreReusedAfterDetachAndServerCanBeReplaced) {
  Session a = Spliced();
  ASSERT_GE(a.slot, 0);
  EXPECT_EQ(splicer_->slots_in_use(), 1);
  auto [ps, sv] = TcpPair();
  ASSERT_TRUE(splicer_->ReplaceServer(a.slot, ps.get()).ok());
  splicer_->Enter(a.slot);
  std::string q = Query("SELECT 3");
  SendAll(a.client.get(), q);
  EXPECT_EQ(ReadN(sv.get(), q.size()), q);  // the new server gets it
  EXPECT_TRUE(Silent(a.server.get()));
  splicer_->Detach(a.slot);
  EXPECT_EQ(splicer_->slots_in_use(), 0);
  // Detached sockets are ordinary sockets again.
  SendAll(a.client.get(), q);
  EXPECT_EQ(ReadN(a.proxy_client.get(), q.size()), q);
}

}  // namespace
}  // namespace pgshift::proxy
