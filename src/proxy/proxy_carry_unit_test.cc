// Unit tests of what pgshift-proxy carries with a session (session_carry.h):
// the keyword scan, statement splitting, the re-creation SQL, the lock gate;
// and SASLprep of SCRAM passwords (RFC 4013's examples).
#include <gtest/gtest.h>

#include "proxy/protocol.h"
#include "proxy/scram.h"
#include "proxy/session_carry.h"

namespace pgshift::proxy {
namespace {

TEST(SaslPrep, FollowsTheRfc4013ExamplesAndFallsBackToTheRawPasswordLikeLibpq) {
  EXPECT_EQ(SaslPrep("I\xC2\xADX"), "IX");  // SOFT HYPHEN mapped to nothing
  EXPECT_EQ(SaslPrep("user"), "user");
  EXPECT_EQ(SaslPrep("USER"), "USER");
  EXPECT_EQ(SaslPrep("\xC2\xAA"), "a");       // FEMININE ORDINAL INDICATOR, NFKC
  EXPECT_EQ(SaslPrep("\xE2\x85\xA8"), "IX");  // ROMAN NUMERAL NINE, NFKC
  EXPECT_EQ(SaslPrep("IX-\xE2\x85\xA8"), "IX-IX");
  EXPECT_EQ(SaslPrep("a\xE2\x80\x83"
                     "b"),
            "a b");  // EM SPACE maps to SPACE
  // Prohibited output: RFC 4013 says fail; libpq (and the server) then use
  // the password as it is. ASCII is never prepared at all (libpq's quick path).
  EXPECT_EQ(SaslPrep(std::string("\x07", 1)), std::string("\x07", 1));
  EXPECT_EQ(SaslPrep("\xD8\xA7"
                     "1"),
            "\xD8\xA7"
            "1");                                         // bidi: RandALCat then L/digit
  EXPECT_EQ(SaslPrep("a\xEF\xBF\xBE"), "a\xEF\xBF\xBE");  // U+FFFE, a non-character
  EXPECT_EQ(SaslPrep("\xC2\xAD"), "\xC2\xAD");            // empty once mapped
  EXPECT_EQ(SaslPrep("bad\xC3"), "bad\xC3");              // not UTF-8
}

TEST(SaslPrep, ScramProofsUseThePreparedPassword) {
  // The same nonce and server-first message: a password and its prepared form
  // give the same proof, another password does not.
  const std::string server_first = "r=fixednonceSERVER,s=" + Base64Encode("salt") + ",i=4096";
  auto proof = [&](const std::string& pw) {
    ScramClient c(pw, "fixednonce");
    c.ClientFirst();
    auto f = c.ClientFinal(server_first);
    EXPECT_TRUE(f.ok());
    return f.ok() ? *f : "";
  };
  EXPECT_EQ(proof("IX-\xE2\x85\xA8"), proof("IX-IX"));
  EXPECT_NE(proof("IX-\xE2\x85\xA8"), proof("IX-X"));
}

TEST(StateKeywords, FindsStatementsThatCreateSessionStateInAnyCase) {
  EXPECT_EQ(StateKeywords("SELECT 1"), 0u);
  EXPECT_EQ(StateKeywords("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = $1"),
            0u);
  EXPECT_EQ(StateKeywords("PREPARE q(int) AS SELECT $1"), kStatePrepared);
  EXPECT_EQ(StateKeywords("listen \"Chan\""), kStateListen);
  EXPECT_EQ(StateKeywords("select pg_try_advisory_lock(1)"), kStateAdvisory);
  EXPECT_EQ(StateKeywords("CREATE TEMPORARY TABLE t(a int)"), kStateTemporary);
  EXPECT_EQ(StateKeywords("create table pg_temp.t(a int)"), kStateTemporary);
  EXPECT_EQ(StateKeywords("DECLARE c CURSOR WITH HOLD FOR SELECT 1"), kStateHoldable);
  EXPECT_EQ(StateKeywords("LISTEN a; SELECT pg_advisory_lock(2); CREATE TEMP TABLE x()"),
            kStateListen | kStateAdvisory | kStateTemporary);
  // A superset by design: a false hit only costs a probe at the next move.
  EXPECT_EQ(StateKeywords("SELECT threshold FROM templates"), kStateTemporary | kStateHoldable);
}

TEST(SessionCarry, SplitsStatementsOutsideQuotesAndComments) {
  EXPECT_EQ(SplitStatements("PREPARE a AS SELECT 1; PREPARE b AS SELECT ';'"),
            (std::vector<std::string>{"PREPARE a AS SELECT 1", "PREPARE b AS SELECT ';'"}));
  EXPECT_EQ(SplitStatements("select $$a;b$$; select $t$;$t$ -- c;d\n; /* x; /* y; */ z; */"),
            (std::vector<std::string>{"select $$a;b$$", "select $t$;$t$ -- c;d",
                                      "/* x; /* y; */ z; */"}));
  EXPECT_EQ(SplitStatements("select \"a;b\", E'\\';', 'it''s;';;"),
            (std::vector<std::string>{"select \"a;b\", E'\\';', 'it''s;'"}));
  EXPECT_EQ(SplitStatements("select $1; select 2"),
            (std::vector<std::string>{"select $1", "select 2"}));
}

TEST(SessionCarry, NamesThePreparedStatementOfAPrepare) {
  EXPECT_EQ(PreparedName("PREPARE Foo(int) AS SELECT $1"), "foo");
  EXPECT_EQ(PreparedName("prepare\n\"My \"\"Q\"\"\" AS SELECT 1"), "My \"Q\"");
  EXPECT_EQ(PreparedName("/* c */ PREPARE q AS SELECT 1"), "q");
  EXPECT_EQ(PreparedName("PREPARED q"), "");
  EXPECT_EQ(PreparedName("SELECT 1"), "");
  EXPECT_EQ(PreparedName("PREPARE TRANSACTION 'x'"), "transaction");
}

TEST(SessionCarry, RecreatesPreparedStatementsChannelsAndLocksFromTheProbe) {
  CarriedState s;
  ASSERT_TRUE(
      AddProbeRow({"prepared", "b", "PREPARE a AS SELECT 1; PREPARE B AS SELECT 2;"}, &s).ok());
  ASSERT_TRUE(AddProbeRow({"listen", "Chan\"1", ""}, &s).ok());
  ASSERT_TRUE(AddProbeRow({"lock", "42", ""}, &s).ok());
  ASSERT_TRUE(AddProbeRow({"lock_shared", "-1, 7", ""}, &s).ok());
  EXPECT_FALSE(AddProbeRow({"lock", "1); DROP TABLE x; --", ""}, &s).ok());
  EXPECT_FALSE(AddProbeRow({"mystery", "", ""}, &s).ok());
  EXPECT_FALSE(AddProbeRow({"listen", "x"}, &s).ok());
  EXPECT_EQ(Uncarriable(s), "");
  auto sql = RecreateSql(s);
  ASSERT_TRUE(sql.ok()) << sql.status().ToString();
  EXPECT_EQ(*sql, "PREPARE B AS SELECT 2;\nLISTEN \"Chan\"\"1\";\n");
  EXPECT_EQ(LockSql(s),
            "SELECT pg_catalog.pg_try_advisory_lock(42), "
            "pg_catalog.pg_try_advisory_lock_shared(-1, 7)");

  CarriedState lost;
  ASSERT_TRUE(AddProbeRow({"prepared", "q", "EXECUTE 'PREPARE q AS SELECT 1'"}, &lost).ok());
  EXPECT_FALSE(RecreateSql(lost).ok());

  CarriedState held;
  ASSERT_TRUE(AddProbeRow({"temp", "t1", ""}, &held).ok());
  ASSERT_TRUE(AddProbeRow({"cursor", "c", ""}, &held).ok());
  EXPECT_EQ(Uncarriable(held), "temporary table(s) \"t1\" and WITH HOLD cursor(s) \"c\"");
  EXPECT_EQ(LockSql(held), "");
}

TEST(SessionCarry, GateHoldsOthersUntilEveryLockHolderIsOnTheNewGeneration) {
  CarryGate g;
  EXPECT_FALSE(g.Behind(5));
  uint64_t a = g.Add(1), b = g.Add(1);
  EXPECT_FALSE(g.Behind(1));
  EXPECT_TRUE(g.Behind(2));
  g.Update(a, 2);
  EXPECT_TRUE(g.Behind(2));
  EXPECT_FALSE(g.Behind(2, b)) << "a holder does not wait for itself";
  g.Remove(b);
  EXPECT_FALSE(g.Behind(2));
  g.Remove(a);
  g.Remove(a);
  EXPECT_FALSE(g.Behind(9));
}

TEST(Protocol, ReadsDataRowsAndTellsFatalErrors) {
  std::string body;
  AppendInt16(&body, 2);
  AppendInt32(&body, 3);
  body += "abc";
  AppendInt32(&body, -1);
  std::vector<std::string> cols;
  ASSERT_TRUE(ParseDataRow(body, &cols));
  EXPECT_EQ(cols, (std::vector<std::string>{"abc", ""}));
  EXPECT_FALSE(ParseDataRow(body.substr(0, 7), &cols));
  std::string fatal = ErrorResponse("FATAL", "57P01", "terminating");
  std::string error = ErrorResponse("ERROR", "42P01", "no table");
  EXPECT_TRUE(IsFatalError(std::string_view(fatal).substr(5)));
  EXPECT_FALSE(IsFatalError(std::string_view(error).substr(5)));
}

}  // namespace
}  // namespace pgshift::proxy
