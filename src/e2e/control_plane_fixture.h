// The fixture of the end-to-end tests of several pgshiftd on one PostgreSQL
// state store (control_plane_e2e_test.cc, fleet_takeover_e2e_test.cc): the
// store's own cluster, sandboxes (a source with a pgshift-proxy and a ledger
// writer through it) whose pgshiftd share that store, and the checks of
// their ledgers and event logs. Test-only; not thread-safe.
#pragma once

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <future>
#include <memory>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/process.h"
#include "demo/sandbox.h"
#include "e2e/e2e_fixture.h"
#include "load/ledger.h"
#include "testing/pg_harness.h"

namespace pgshift::e2e {

// Short leases so a takeover comes quickly (the pause test); the bound below
// is a safety net.
inline constexpr int64_t kLeaseMs = 2000;
inline constexpr int64_t kDeathBoundMs = 180000;
inline constexpr int kLedgerWriterId = 1;
inline constexpr int kMinCommittedRows = 20;

inline void SetFaults(const std::string& value) {
  if (value.empty()) {
    ::unsetenv("PGSHIFT_FAULTS");
  } else {
    ::setenv("PGSHIFT_FAULTS", value.c_str(), 1);
  }
}

inline std::string OwnerIdOf(pid_t pid) {
  char host[256] = {};
  ::gethostname(host, sizeof(host) - 1);
  return std::string(host) + ":" + std::to_string(pid);
}

inline json Options(bool auto_cutover) {
  return {{"auto_cutover", auto_cutover},
          {"auto_finalize", true},
          {"sustain_seconds", 1},
          {"verify_seconds", 1},
          {"poll_ms", 100}};
}

// The owners of a migration's events in order, each run of one owner once
// (the API's own notes, with no owner, left out).
inline std::vector<std::string> OwnerRuns(const json& events) {
  std::vector<std::string> runs;
  for (const auto& e : events) {
    const std::string owner = e.value("owner", "");
    if (!owner.empty() && (runs.empty() || runs.back() != owner)) runs.push_back(owner);
  }
  return runs;
}

class ControlPlaneFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = testing::TestCluster::Create({.name = "store"});
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(*store);
    store_url_ = "postgresql://postgres@127.0.0.1:" + std::to_string(store_->port()) + "/postgres";
  }
  void TearDown() override {
    if (HasFailure()) {
      for (size_t i = 0; i < sandboxes_.size() && i < 2; ++i) {
        PrintTail("pgshiftd " + std::to_string(i) + " log", sandboxes_[i]->PgshiftdLog(),
                  kPgshiftdLogTail);
      }
    }
    writers_.clear();
    // Each stops its processes and clusters: at once.
    std::vector<std::future<void>> stopping;
    for (auto& sb : sandboxes_) {
      stopping.push_back(
          std::async(std::launch::async, [sb = std::move(sb)]() mutable { sb.reset(); }));
    }
    for (auto& f : stopping) f.get();
    sandboxes_.clear();
    store_.reset();
  }

  // `n` sandboxes started at once, none with its pgshiftd yet; their
  // pgshiftd get `lease_ms` (0: the default) and `more_args`.
  void StartSandboxes(int n, int64_t lease_ms, const std::vector<std::string>& more_args = {}) {
    std::vector<std::string> args = {"--store", store_url_, "--workers", "4"};
    if (lease_ms > 0) args.insert(args.end(), {"--lease-ms", std::to_string(lease_ms)});
    args.insert(args.end(), more_args.begin(), more_args.end());
    std::vector<std::future<Result<std::unique_ptr<demo::Sandbox>>>> starting;
    for (int i = 0; i < n; ++i) {
      starting.push_back(std::async(std::launch::async, [&] {
        return demo::Sandbox::Start({.pgshiftd_path = PGSHIFTD_PATH,
                                     .proxy_path = PGSHIFT_PROXY_PATH,
                                     .pgshiftd_args = args,
                                     .start_pgshiftd = false});
      }));
    }
    for (auto& f : starting) {
      auto sb = f.get();
      ASSERT_TRUE(sb.ok()) << sb.status().ToString();
      sandboxes_.push_back(std::move(*sb));
    }
  }

  // Starts sandbox i's pgshiftd (on the shared store) armed with `faults`.
  std::string StartPgshiftd(size_t i, const std::string& faults = "") {
    SetFaults(faults);
    Status st = sandboxes_[i]->StartPgshiftd();
    SetFaults("");
    EXPECT_TRUE(st.ok()) << st.ToString();
    return OwnerIdOf(sandboxes_[i]->pgshiftd_pid());
  }

  // A ledger writer through each sandbox's proxy.
  void StartWriters() {
    for (auto& sb : sandboxes_) {
      writers_.push_back(std::make_unique<load::LedgerWriter>(sb->AppConninfo(), kLedgerWriterId));
      writers_.back()->Start();
    }
  }

  // POSTs sandbox `of`'s migration to the pgshiftd of sandbox `via`.
  std::string Create(size_t of, size_t via, bool auto_cutover) {
    auto r = sandboxes_[via]->Api("POST", "/v1/migrations",
                                  sandboxes_[of]->MigrationSpec(Options(auto_cutover)).dump());
    EXPECT_TRUE(r.ok());
    if (!r.ok()) return "";
    EXPECT_EQ((*r)["status"], 201) << (*r)["body"].dump();
    return (*r)["body"].value("id", "");
  }

  json Events(size_t via, const std::string& id) {
    auto r = sandboxes_[via]->Api("GET", "/v1/migrations/" + id + "/events");
    EXPECT_TRUE(r.ok() && (*r)["status"] == 200);
    if (!r.ok()) return json::array();
    const json& body = (*r)["body"];
    return body.is_object() ? body.value("events", json::array()) : body;
  }

  // Every row acknowledged through sandbox i's proxy is on its target once.
  void ExpectLedgerClean(size_t i) {
    auto& w = *writers_[i];
    w.Stop();
    auto st = w.Stats();
    EXPECT_EQ(st.failed, 0) << (st.errors.empty() ? "" : st.errors.front());
    EXPECT_EQ(st.uncertain, 0) << (st.errors.empty() ? "" : st.errors.front());
    EXPECT_GT(st.committed, kMinCommittedRows);
    auto check =
        load::CheckLedger(sandboxes_[i]->TargetConninfo(), w.writer_id(), w.Acknowledged());
    ASSERT_TRUE(check.ok()) << check.status().ToString();
    EXPECT_EQ(check->lost, 0) << "sandbox " << i;
    EXPECT_EQ(check->duplicated, 0) << "sandbox " << i;
    EXPECT_EQ(check->found, check->acknowledged);
  }

  std::unique_ptr<testing::TestCluster> store_;
  std::string store_url_;
  std::vector<std::unique_ptr<demo::Sandbox>> sandboxes_;
  std::vector<std::unique_ptr<load::LedgerWriter>> writers_;
};

}  // namespace pgshift::e2e
