// What the tests of both stores share (state_store_test.cc,
// pg_state_store_test.cc): a sample migration record, and the MigrationLink
// contract run against each store, where `a` and `b` are two pgshiftd's
// views of one store (the same object for SQLite). Test-only.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "store/state_store.h"

namespace pgshift::testing {

// A live migration (phase sync) with no lease.
inline MigrationRecord Sample(const std::string& id) {
  MigrationRecord m;
  m.id = id;
  m.name = "app";
  m.spec = {{"name", "app"}};
  m.phase = "sync";
  m.state = "running";
  m.created_at_ms = 1;
  m.updated_at_ms = 2;
  return m;
}

inline void ExpectLinkedInsertContract(Store& a, Store& b) {
  const MigrationLink first{.database = "app", .key = "f-1/app"};
  ASSERT_TRUE(a.InsertLinked(Sample("m-1"), first).ok());
  EXPECT_EQ(*b.MigrationWithKey("f-1/app"), "m-1");
  EXPECT_EQ(*b.MigrationWithKey("f-9/app"), "");
  EXPECT_EQ(*b.MigrationWithKey(""), "") << "no key finds nothing";
  EXPECT_EQ(b.MigrationDatabases()->at("m-1"), "app") << "linked in the insert's commit";

  // The same key again (a driver that took a fleet run over): refused, and
  // nothing of that insert stays.
  EXPECT_EQ(b.InsertLinked(Sample("m-2"), first).code(), Code::kAlreadyExists);
  EXPECT_EQ(b.Get("m-2").status().code(), Code::kNotFound);
  // Another start of a database whose migration is live: refused.
  const MigrationLink second{.database = "app", .key = "f-2/app"};
  const Status busy = b.InsertLinked(Sample("m-2"), second);
  EXPECT_EQ(busy.code(), Code::kAlreadyExists);
  EXPECT_NE(busy.message().find("already being migrated by m-1"), std::string::npos)
      << busy.message();
  EXPECT_EQ(*a.MigrationWithKey("f-2/app"), "");
  EXPECT_EQ(b.Get("m-2").status().code(), Code::kNotFound);
  ASSERT_TRUE(b.InsertLinked(Sample("m-3"), {.database = "billing"}).ok());
  ASSERT_TRUE(a.Insert(Sample("m-4")).ok());
  EXPECT_FALSE(a.MigrationDatabases()->count("m-4")) << "an unlinked insert";

  // m-1 ended: the database may be migrated again; m-1 keeps its key.
  auto m1 = a.Get("m-1");
  ASSERT_TRUE(m1.ok()) << m1.status().ToString();
  m1->phase = m1->state = "finalized";
  ASSERT_TRUE(a.Update(*m1).ok());
  ASSERT_TRUE(b.InsertLinked(Sample("m-2"), second).ok());
  EXPECT_EQ(*a.MigrationWithKey("f-1/app"), "m-1");
  EXPECT_EQ(*a.MigrationWithKey("f-2/app"), "m-2");
}

}  // namespace pgshift::testing
