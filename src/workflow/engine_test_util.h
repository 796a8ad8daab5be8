// What the workflow's unit tests share: a clock the test moves, a spec, the
// EngineTest fixture (an Engine on an in-memory store and a FakeWorld), and
// HookedStore, a store that lets a test see, fail or interleave the engine's
// reads and writes. Test-only; not thread-safe (the test thread drives it).
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "store/state_store.h"
#include "testing/fake_env.h"
#include "workflow/engine.h"

namespace pgshift::testing_util {

using json = nlohmann::json;

class FakeClock : public Clock {
 public:
  int64_t NowMs() override { return now_; }
  void SleepMs(int64_t ms) override { now_ += std::max<int64_t>(ms, 1); }
  int64_t now_ = 1'700'000'000'000;
};

inline json Spec(bool auto_cutover = true, bool auto_finalize = true) {
  return {{"name", "app"},
          {"source", {{"conninfo", "host=127.0.0.1 port=5432 user=postgres dbname=postgres"}}},
          {"target", {{"data_dir", "/tmp/pgshift-unit/target"}, {"port", 5433}}},
          {"router", {{"type", "fake"}}},
          {"options",
           {{"auto_cutover", auto_cutover},
            {"auto_finalize", auto_finalize},
            {"sustain_seconds", 2},
            {"verify_seconds", 1},
            {"lag_threshold_bytes", 1 << 20}}}};
}

// Every phase of a migration that runs to its end, in order.
inline const std::vector<std::string>& AllMainPhases() {
  static const std::vector<std::string> phases = {
      "preflight",    "provision", "sync",   "validate", "ready",
      "cdc_prepare",  "quiesce",   "drain",  "promote",  "snapshot",
      "cdc_recreate", "switch",    "verify", "finalize", "finalized"};
  return phases;
}

// Delegates to a real store. on_write runs before each write ("insert",
// "update", "event", "commit" for UpdateWithEvents, "request"): a non-OK
// result fails that write, which then changes nothing. after_get runs with
// each record Get returns, between the engine's load and its commit.
class HookedStore : public StateStore {
 public:
  explicit HookedStore(StateStore& inner) : inner_(inner) {}
  std::function<Status(const std::string& op)> on_write;
  std::function<void(const MigrationRecord&)> after_get;

  Status Insert(const MigrationRecord& m) override {
    return Write("insert", [&] { return inner_.Insert(m); });
  }
  Status InsertLinked(const MigrationRecord& m, const MigrationLink& link) override {
    return Write("insert", [&] { return inner_.InsertLinked(m, link); });
  }
  Status Update(const MigrationRecord& m) override {
    return Write("update", [&] { return inner_.Update(m); });
  }
  Result<MigrationRecord> Get(const std::string& id) override {
    auto m = inner_.Get(id);
    if (m.ok() && after_get) after_get(*m);
    return m;
  }
  Result<std::vector<MigrationRecord>> List() override { return inner_.List(); }
  Status RequestAction(const std::string& id, const std::string& action,
                       const nlohmann::json& body) override {
    return Write("request", [&] { return inner_.RequestAction(id, action, body); });
  }
  Status AppendEvent(const std::string& id, const MigrationEvent& e, int64_t fence) override {
    return Write("event", [&] { return inner_.AppendEvent(id, e, fence); });
  }
  Status UpdateWithEvents(const MigrationRecord& m, const std::vector<MigrationEvent>& events,
                          const std::vector<int64_t>& applied_actions) override {
    return Write("commit", [&] { return inner_.UpdateWithEvents(m, events, applied_actions); });
  }
  Result<std::vector<MigrationEvent>> Events(const std::string& id) override {
    return inner_.Events(id);
  }
  Result<Lease> AcquireLease(const std::string& id, const std::string& owner,
                             int64_t ttl_ms) override {
    return inner_.AcquireLease(id, owner, ttl_ms);
  }
  Result<Lease> RenewLease(const std::string& id, const Lease& held, int64_t ttl_ms) override {
    return inner_.RenewLease(id, held, ttl_ms);
  }
  Status ReleaseLease(const std::string& id, const Lease& held) override {
    return inner_.ReleaseLease(id, held);
  }
  bool SingleProcess() const override { return inner_.SingleProcess(); }

 private:
  Status Write(const std::string& op, const std::function<Status()>& write) {
    if (on_write) PGSHIFT_RETURN_IF_ERROR(on_write(op));
    return write();
  }
  StateStore& inner_;
};

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = std::move(SqliteStateStore::Open(":memory:")).value();
    world_ = std::make_shared<FakeWorld>();
    factory_ = std::make_unique<FakeEnvFactory>(world_);
    engine_ = NewEngine();
  }
  std::unique_ptr<Engine> NewEngine() { return NewEngine(*store_); }
  std::unique_ptr<Engine> NewEngine(StateStore& store) {
    auto e = std::make_unique<Engine>(store, *factory_, clock_);
    e->set_autostart(false);
    return e;
  }
  std::string Create(const json& spec) {
    auto m = engine_->Create(spec);
    EXPECT_TRUE(m.ok()) << m.status().ToString();
    return m.ok() ? (*m)["id"].get<std::string>() : "";
  }
  json Get(const std::string& id) { return engine_->Get(id).value(); }
  json Events(const std::string& id) { return engine_->Events(id).value(); }
  void Run(const std::string& id) {
    Status st = engine_->RunUntilSettled(id, 100000);
    ASSERT_TRUE(st.ok()) << st.ToString();
  }
  // The phases of the events, each run of equal phases once.
  std::vector<std::string> Phases(const std::string& id) {
    std::vector<std::string> out;
    for (const auto& e : Events(id)) {
      if (out.empty() || out.back() != e["phase"]) out.push_back(e["phase"]);
    }
    return out;
  }

  FakeClock clock_;
  std::unique_ptr<SqliteStateStore> store_;
  std::shared_ptr<FakeWorld> world_;
  std::unique_ptr<FakeEnvFactory> factory_;
  std::unique_ptr<Engine> engine_;
};

}  // namespace pgshift::testing_util
