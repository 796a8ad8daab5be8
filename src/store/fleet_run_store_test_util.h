// The FleetRunStore contract, run against both stores (state_store_test.cc,
// pg_state_store_test.cc): `a` and `b` are two pgshiftd's views of one store
// (the same object for SQLite). Test-only.
#pragma once

#include <gtest/gtest.h>

#include "store/fleet_run_store.h"

namespace pgshift::testing {

inline void ExpectFleetRunStoreContract(FleetRunStore& a, FleetRunStore& b) {
  constexpr int64_t kTtl = 60000;
  ASSERT_TRUE(a.InsertFleetRun({.id = "f-2", .created_at_ms = 20, .doc = {{"n", 0}}}).ok());
  ASSERT_TRUE(a.InsertFleetRun({.id = "f-1", .created_at_ms = 10, .doc = {{"n", 1}}}).ok());
  EXPECT_EQ(b.InsertFleetRun({.id = "f-1", .created_at_ms = 30}).code(), Code::kAlreadyExists);
  auto all = b.ListFleetRuns();
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].id, "f-1") << "oldest first";
  EXPECT_EQ((*all)[0].doc["n"], 1);
  EXPECT_EQ((*all)[0].lease.token, 0) << "a new run has no lease";

  auto la = a.AcquireFleetLease("f-1", "pgshiftd-a", kTtl);
  ASSERT_TRUE(la.ok()) << la.status().ToString();
  EXPECT_EQ(la->token, 1);
  EXPECT_EQ(b.AcquireFleetLease("f-1", "pgshiftd-b", kTtl).status().code(),
            Code::kFailedPrecondition);
  EXPECT_EQ(b.AcquireFleetLease("f-nope", "pgshiftd-b", kTtl).status().code(), Code::kNotFound);
  FleetRunRecord mine{.id = "f-1", .doc = {{"n", 2}}, .lease = *la};
  ASSERT_TRUE(a.UpdateFleetRun(mine, 0).ok());

  // An operator's request made on b waits for the driver; only the applied
  // one is cleared.
  ASSERT_TRUE(b.RequestFleetRun("f-1", "pause").ok());
  EXPECT_EQ(b.RequestFleetRun("f-nope", "pause").code(), Code::kNotFound);
  auto got = a.GetFleetRun("f-1");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->request, "pause");
  const int64_t pause_seq = got->request_seq;
  EXPECT_GT(pause_seq, 0);
  ASSERT_TRUE(a.UpdateFleetRun(mine, 0).ok());
  EXPECT_EQ(a.GetFleetRun("f-1")->request, "pause") << "not applied yet";
  ASSERT_TRUE(b.RequestFleetRun("f-1", "resume").ok());
  ASSERT_TRUE(a.UpdateFleetRun(mine, pause_seq).ok());
  EXPECT_EQ(a.GetFleetRun("f-1")->request, "resume") << "made after the one applied";
  ASSERT_TRUE(a.UpdateFleetRun(mine, a.GetFleetRun("f-1")->request_seq).ok());
  EXPECT_EQ(a.GetFleetRun("f-1")->request, "");

  // a lets it go; b takes it with the next token; a's writes are refused.
  ASSERT_TRUE(a.ReleaseFleetLease("f-1", *la).ok());
  auto lb = b.AcquireFleetLease("f-1", "pgshiftd-b", kTtl);
  ASSERT_TRUE(lb.ok()) << lb.status().ToString();
  EXPECT_EQ(lb->token, 2);
  mine.doc = {{"n", 3}};
  const Status late = a.UpdateFleetRun(mine, 0);
  EXPECT_TRUE(IsLeaseLost(late)) << late.ToString();
  EXPECT_NE(late.message().find("fleet run f-1 is now driven by pgshiftd-b"), std::string::npos)
      << late.message();
  EXPECT_TRUE(IsLeaseLost(a.RenewFleetLease("f-1", *la, kTtl).status()));
  EXPECT_EQ(b.GetFleetRun("f-1")->doc["n"], 2) << "nothing of a's late write landed";
  ASSERT_TRUE(b.UpdateFleetRun({.id = "f-1", .doc = {{"n", 4}}, .lease = *lb}, 0).ok());
  auto renewed = b.RenewFleetLease("f-1", *lb, kTtl);
  ASSERT_TRUE(renewed.ok()) << renewed.status().ToString();
  EXPECT_EQ(renewed->token, 2);
  EXPECT_EQ(a.GetFleetRun("f-1")->doc["n"], 4);
  EXPECT_EQ(a.GetFleetRun("f-nope").status().code(), Code::kNotFound);
}

}  // namespace pgshift::testing
