// Integration tests: a CDC consumer (pg_recvlogical, test_decoding)
// streaming a logical slot through pgshift-proxy is carried across a switch
// the way a cutover does it — listed with its walsender pid, asked for
// feedback so its slot confirms the end of WAL at once, paused, held while it
// reconnects, and resumed on the other server — and sees every committed row
// once; what the proxy adds to a stream never splits a message.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <poll.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <iostream>
#include <map>
#include <optional>
#include <regex>
#include <thread>

#include "common/os.h"
#include "common/process.h"
#include "proxy/proxy_test_util.h"

namespace pgshift::proxy::testing {
namespace {

using namespace std::chrono_literals;

constexpr char kSlot[] = "cdc";

std::string CreateSlotSql(const std::string& slot) {
  return "SELECT pg_create_logical_replication_slot('" + slot + "', 'test_decoding')";
}

// Polls `done` every 5 ms until it holds or `timeout` passed.
bool WaitFor(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

// pg_recvlogical --start through the proxy, writing the decoded changes to a
// file; stopped (SIGINT) when the test ends.
class RecvLogical {
 public:
  static std::unique_ptr<RecvLogical> Start(const std::string& conninfo) {
    auto r = std::make_unique<RecvLogical>();
    auto dir = MakeTempDir("pgshift-cdc");
    EXPECT_TRUE(dir.ok()) << dir.status().ToString();
    if (!dir.ok()) return nullptr;
    r->dir_ = *dir;
    // -F 0 -s 10: no fsync-driven or timed feedback within the test's
    // windows, so only the proxy's keepalive can make it report quickly.
    auto pid = DefaultRunner().Spawn(
        {.argv = {DefaultPgBinDir() + "/pg_recvlogical", "-d", conninfo, "--slot", kSlot, "--start",
                  "-f", r->Changes(), "-F", "0", "-s", "10"},
         .output_file = r->Log()});
    EXPECT_TRUE(pid.ok()) << pid.status().ToString();
    if (!pid.ok()) return nullptr;
    r->pid_ = *pid;
    return r;
  }
  ~RecvLogical() {
    if (pid_ > 0) StopChild(pid_, SIGINT, 5000);
    if (!dir_.empty()) (void)RemoveTree(dir_);
  }
  std::string Changes() const { return dir_ + "/changes.txt"; }
  std::string Log() const { return dir_ + "/pg_recvlogical.log"; }
  bool Running() const { return !ChildExited(pid_); }
  // How often each id of table cdc_rows appeared as an INSERT.
  std::map<int, int> Inserts() const {
    std::map<int, int> seen;
    auto text = ReadFile(Changes());
    if (!text.ok()) return seen;
    static const std::regex kInsert(R"(table public\.cdc_rows: INSERT: id\[integer\]:(\d+))");
    for (std::sregex_iterator it(text->begin(), text->end(), kInsert), end; it != end; ++it)
      seen[std::stoi((*it)[1])]++;
    return seen;
  }
  std::string LogText() const {
    auto text = ReadFile(Log());
    return text.ok() ? *text : "";
  }

 private:
  std::string dir_;
  pid_t pid_ = -1;
};

TEST(ProxyReplication, CdcConsumerIsAskedForFeedbackPausedHeldAndResumedOnTheNewServer) {
  auto env = MustEnv(true);
  ASSERT_TRUE(env);
  for (auto* c : {env->a.get(), env->b.get()}) {
    ASSERT_TRUE(c->Psql("ALTER ROLE app REPLICATION").ok());
    ASSERT_TRUE(c->Psql("CREATE TABLE cdc_rows (id int PRIMARY KEY, v text)", "app").ok());
  }
  ASSERT_TRUE(env->a->Psql(CreateSlotSql(kSlot), "app").ok());
  auto a = PgConn::Connect(env->a->Conninfo("app"));
  auto b = PgConn::Connect(env->b->Conninfo("app"));
  ASSERT_TRUE(a.ok() && b.ok());
  auto router = MakeRouterFor(*env);
  ASSERT_TRUE(router);
  auto route = env->proxy->shared().routes.Find("app");
  const Endpoint on_a{"127.0.0.1", env->a->port()}, on_b{"127.0.0.1", env->b->port()};
  const std::string slot_row =
      std::string("FROM pg_replication_slots WHERE slot_name = '") + kSlot + "'";
  int next_id = 1;
  auto insert = [&next_id](PgConn& c, int rows) {
    for (int i = 0; i < rows; i++, next_id++)  // one transaction each
      EXPECT_TRUE(
          c.Exec("INSERT INTO cdc_rows VALUES (" + std::to_string(next_id) + ", 'row')").ok());
  };

  auto consumer = RecvLogical::Start(env->Conninfo());
  ASSERT_TRUE(consumer);
  auto listed_on = [&](const Endpoint& on) -> std::vector<ReplicationSession> {
    auto list = router->ReplicationSessions(on);
    EXPECT_TRUE(list.ok()) << list.status().ToString();
    return list.ok() ? *list : std::vector<ReplicationSession>{};
  };
  auto streaming_on = [&](const Endpoint& on) {
    auto list = listed_on(on);
    return list.size() == 1 && list[0].streaming;
  };
  auto received = [&](int rows) {
    return WaitFor([&] { return consumer->Inserts().size() == static_cast<size_t>(rows); }, 30s);
  };
  ASSERT_TRUE(WaitFor([&] { return streaming_on(on_a); }, 30s)) << consumer->LogText();

  // Listed with the walsender's pid, which is how pgshiftd tells the slot's
  // consumer comes through the router.
  insert(**a, 20);
  ASSERT_TRUE(received(20)) << consumer->LogText();
  ReplicationSession s = listed_on(on_a).at(0);
  EXPECT_EQ(std::to_string(s.backend_pid), One(**a, "SELECT active_pid " + slot_row));
  EXPECT_EQ(s.slot, kSlot);
  EXPECT_EQ(s.server, on_a);
  EXPECT_EQ(s.database, "app");
  EXPECT_EQ(s.user, "app");
  EXPECT_EQ(s.application_name, "pg_recvlogical");
  EXPECT_EQ(s.client_addr.rfind("127.0.0.1:", 0), 0u) << s.client_addr;
  EXPECT_TRUE(listed_on(on_b).empty());

  // Feedback on request: the slot confirms the end of WAL at once, not at
  // the consumer's next status interval (10 s). Measured from a point where
  // the walsender has sent everything (its keepalive tells the client the
  // position) and the slot has not confirmed it yet; should the consumer's
  // own status come first, the round is tried again with another row.
  int64_t confirmed_ms = -1;
  std::string end_of_wal;
  for (int round = 0; round < 3 && confirmed_ms < 0; round++) {
    insert(**a, 1);
    ASSERT_TRUE(received(next_id - 1)) << consumer->LogText();
    end_of_wal = One(**a, "SELECT pg_current_wal_lsn()");
    ASSERT_TRUE(WaitFor(
        [&] {
          return One(**a, "SELECT sent_lsn >= '" + end_of_wal +
                              "' FROM pg_stat_replication WHERE application_name = "
                              "'pg_recvlogical'") == "t";
        },
        10s));
    auto confirmed = [&] {
      return One(**a, "SELECT confirmed_flush_lsn >= '" + end_of_wal + "' " + slot_row) == "t";
    };
    if (confirmed()) continue;
    const auto asked_at = std::chrono::steady_clock::now();
    auto asked = router->RequestReplicationFeedback();
    ASSERT_TRUE(asked.ok()) << asked.status().ToString();
    EXPECT_EQ(*asked, 1);
    ASSERT_TRUE(WaitFor(confirmed, 15s));
    confirmed_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::steady_clock::now() - asked_at)
                       .count();
  }
  ASSERT_GE(confirmed_ms, 0) << "the consumer's own status came first three times";
  std::cout << "confirmed_flush_lsn reached pg_current_wal_lsn() " << end_of_wal << " "
            << confirmed_ms << " ms after the feedback request\n";
  EXPECT_LT(confirmed_ms, 1000);
  EXPECT_EQ(route->replication_feedback_requests.load(), 1);

  // Pause inside the hold: the walsender exits, the slot becomes inactive.
  ASSERT_TRUE(router->Hold(5000).ok());
  auto paused = router->PauseReplication();
  ASSERT_TRUE(paused.ok()) << paused.status().ToString();
  EXPECT_EQ(*paused, 1);
  EXPECT_TRUE(WaitFor([&] { return One(**a, "SELECT active " + slot_row) == "f"; }, 5s));
  EXPECT_EQ(route->replication_sessions.load(), 0);
  EXPECT_EQ(route->replication_pauses.load(), 1);
  EXPECT_TRUE(consumer->Running()) << "it reconnects: " << consumer->LogText();

  // Its reconnect (after 5 s) waits in the hold like any login.
  ASSERT_TRUE(WaitFor([&] { return route->held_sessions.load() == 1; }, 15s))
      << consumer->LogText();
  EXPECT_NE(consumer->LogText().find("reconnect to continue streaming"), std::string::npos)
      << consumer->LogText();
  EXPECT_EQ(One(**a, "SELECT active " + slot_row), "f");
  EXPECT_TRUE(listed_on(on_a).empty());

  // The other server gets the slot, the route moves there, the consumer
  // follows. A cutover's target continues the source's WAL (a promoted
  // standby), and pg_recvlogical restarts from the last position it
  // confirmed; b is an independent cluster, so its WAL first moves past a's.
  ASSERT_TRUE(env->b->Psql("SELECT pg_switch_wal()").ok());
  ASSERT_EQ(One(**b, "SELECT pg_current_wal_lsn() > '" + end_of_wal + "'"), "t");
  ASSERT_TRUE(env->b->Psql(CreateSlotSql(kSlot), "app").ok());
  ASSERT_TRUE(router->SwitchTo(on_b).ok());
  ASSERT_TRUE(WaitFor([&] { return streaming_on(on_b); }, 15s)) << consumer->LogText();
  s = listed_on(on_b).at(0);
  EXPECT_EQ(std::to_string(s.backend_pid), One(**b, "SELECT active_pid " + slot_row));
  EXPECT_EQ(s.slot, kSlot);
  EXPECT_EQ(One(**a, "SELECT active " + slot_row), "f") << "nothing went back to the old server";

  // Every committed row exactly once across the pause.
  insert(**b, 20);
  const int rows = next_id - 1;
  ASSERT_TRUE(received(rows)) << consumer->LogText();
  std::map<int, int> seen = consumer->Inserts();
  for (int id = 1; id <= rows; id++) EXPECT_EQ(seen[id], 1) << "row " << id;
  EXPECT_EQ(seen.size(), static_cast<size_t>(rows));
}

// One CopyData message from a replication stream (libpq, async), or nullopt
// when nothing came within `timeout`; *end is set at the end of the stream.
std::optional<std::string> ReadCopy(PGconn* c, std::chrono::milliseconds timeout, bool* end) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    char* buf = nullptr;
    int n = PQgetCopyData(c, &buf, 1);
    if (n > 0) {
      std::string out(buf, static_cast<size_t>(n));
      PQfreemem(buf);
      return out;
    }
    if (n < 0) {
      *end = true;
      EXPECT_EQ(n, -1) << "the stream broke: " << PQerrorMessage(c);
      return std::nullopt;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    pollfd p{PQsocket(c), POLLIN, 0};
    poll(&p, 1, static_cast<int>(left.count()));
    PQconsumeInput(c);
  }
}

// Keepalives and the pause go in only between whole messages, also while
// large messages stream through in pieces; the paused client gets FATAL
// 57P01 after the last whole message.
TEST(ProxyReplication, InjectedMessagesNeverSplitAStreamedMessage) {
  auto env = MustEnv(false);
  ASSERT_TRUE(env);
  ASSERT_TRUE(env->a->Psql("ALTER ROLE app REPLICATION").ok());
  ASSERT_TRUE(env->a->Psql("CREATE TABLE big (id int, v text)", "app").ok());
  ASSERT_TRUE(env->a->Psql(CreateSlotSql("big"), "app").ok());
  auto router = MakeRouterFor(*env);
  ASSERT_TRUE(router);
  auto route = env->proxy->shared().routes.Find("app");
  PGconn* c = PQconnectdb((env->Conninfo() + " replication=database").c_str());
  ASSERT_EQ(PQstatus(c), CONNECTION_OK) << PQerrorMessage(c);
  PGresult* r = PQexec(c, "START_REPLICATION SLOT \"big\" LOGICAL 0/0");
  ASSERT_EQ(PQresultStatus(r), PGRES_COPY_BOTH) << PQerrorMessage(c);
  PQclear(r);

  // Ten rows of 512 KiB: test_decoding sends each as one message of that
  // size, which the proxy forwards in pieces.
  constexpr int kRows = 10;
  constexpr size_t kValue = 512 * 1024;
  constexpr size_t kLastValue = 32 << 20;
  ASSERT_TRUE(env->a
                  ->Psql("INSERT INTO big SELECT g, repeat('x', " + std::to_string(kValue) +
                             ") FROM generate_series(1, " + std::to_string(kRows) + ") g",
                         "app")
                  .ok());
  std::atomic<bool> stop{false};
  std::thread asker([&] {
    while (!stop.load()) {
      EXPECT_TRUE(router->RequestReplicationFeedback().ok());
      std::this_thread::sleep_for(1ms);
    }
  });
  int inserts = 0, asking = 0;
  bool last_row = false;
  bool end = false;
  auto take = [&](const std::string& m) {
    ASSERT_FALSE(m.empty());
    if (m[0] == 'k') {
      ASSERT_EQ(m.size(), 18u) << "a whole keepalive";
      if (m[17] == 1) asking++;
      return;
    }
    ASSERT_EQ(m[0], 'w');
    if (m.find("table public.big: INSERT:") == std::string::npos) return;
    if (m.find("id[integer]:0 ") != std::string::npos) {
      last_row = m.find(std::string(kLastValue, 'y') + "'") != std::string::npos;
      EXPECT_TRUE(last_row) << "a whole row";
      return;
    }
    EXPECT_NE(m.find(std::string(kValue, 'x') + "'"), std::string::npos) << "a whole row";
    inserts++;
  };
  while (inserts < kRows && !end) {
    auto m = ReadCopy(c, 30s, &end);
    ASSERT_TRUE(m || end) << "no message within 30 s";
    if (m) take(*m);
  }
  stop = true;
  asker.join();
  EXPECT_EQ(inserts, kRows);
  // Every keepalive the proxy injected arrives whole (the server asks for a
  // reply only after wal_sender_timeout / 2, 30 s).
  const int64_t injected = route->replication_feedback_requests.load();
  EXPECT_GT(injected, 0);
  while (asking < injected && !end) {
    auto m = ReadCopy(c, 5s, &end);
    if (!m) break;
    take(*m);
  }
  EXPECT_EQ(asking, injected);
  std::cout << injected << " keepalives injected while " << kRows << " x " << kValue
            << " byte messages streamed\n";

  // Paused while a message larger than the sockets' buffers streams and the
  // client reads nothing, so the proxy is stuck inside it: the pause waits
  // for the client to read to the end of that message, then ends the stream.
  const int64_t before = route->bytes_to_clients.load();
  ASSERT_TRUE(
      env->a
          ->Psql("INSERT INTO big VALUES (0, repeat('y', " + std::to_string(kLastValue) + "))",
                 "app")
          .ok());
  ASSERT_TRUE(WaitFor([&] { return route->bytes_to_clients.load() - before > (1 << 20); }, 30s));
  std::optional<Result<int>> paused;
  std::thread pauser([&] { paused = router->PauseReplication(); });
  std::this_thread::sleep_for(200ms);  // the request reaches the session first
  while (!end) {
    auto m = ReadCopy(c, 30s, &end);
    ASSERT_TRUE(m || end) << "neither a message nor the end within 30 s";
    if (m) take(*m);
  }
  pauser.join();
  ASSERT_TRUE(paused && paused->ok()) << (paused ? paused->status().ToString() : "");
  EXPECT_EQ(**paused, 1);
  EXPECT_TRUE(last_row) << "the message in flight reached the client whole, before the error";
  r = PQgetResult(c);
  EXPECT_EQ(PQresultStatus(r), PGRES_FATAL_ERROR);
  const char* sqlstate = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  EXPECT_STREQ(sqlstate ? sqlstate : "", "57P01");
  const char* message = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
  EXPECT_NE(std::string(message ? message : "").find("pgshift-proxy"), std::string::npos);
  PQclear(r);
  PQfinish(c);
  EXPECT_EQ(route->replication_pauses.load(), 1);
  EXPECT_TRUE(WaitFor([&] { return route->replication_sessions.load() == 0; }, 5s));
}

}  // namespace
}  // namespace pgshift::proxy::testing
