// Spec building from `migration create` flags, and --spec files.
#include "cli/spec_builder.h"

#include <gtest/gtest.h>

#include <fstream>

#include "common/os.h"

namespace pgshift::cli {
namespace {

using nlohmann::json;

CreateFlags Minimal() {
  CreateFlags f;
  f.name = "orders";
  f.source_conninfo = "host=127.0.0.1 port=5432 user=postgres";
  f.target_dir = "/var/lib/pgshift/orders";
  f.target_port = 5544;
  return f;
}

void ExpectInvalid(const Result<json>& r, const std::string& part) {
  ASSERT_FALSE(r.ok()) << r->dump();
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_NE(r.status().message().find(part), std::string::npos) << r.status().message();
}

TEST(BuildSpec, MinimalHasNoRouterAndNoOptions) {
  auto spec = BuildSpec(Minimal());
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(*spec, json::parse(R"({
    "name": "orders",
    "source": {"conninfo": "host=127.0.0.1 port=5432 user=postgres"},
    "target": {"provider": "local", "data_dir": "/var/lib/pgshift/orders", "port": 5544}
  })"));
}

TEST(BuildSpec, EverythingGiven) {
  CreateFlags f = Minimal();
  f.target_bin_dir = "/usr/lib/postgresql/15/bin";
  f.target_settings = {"max_connections=200", "shared_buffers=256MB", "search_path=a,b=c"};
  f.router_type = "pgbouncer";
  f.router_admins = {"host=127.0.0.1 port=6432 dbname=pgbouncer user=pgbouncer"};
  f.router_config = "/etc/pgbouncer/pgbouncer.ini";
  f.route = "orders";
  f.lag_threshold_bytes = 65536;
  f.sustain_seconds = 30;
  f.auto_cutover = true;
  f.verify_seconds = 2.5;
  f.hold_timeout_ms = 5000;
  auto spec = BuildSpec(f);
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ((*spec)["target"]["bin_dir"], "/usr/lib/postgresql/15/bin");
  EXPECT_EQ(
      (*spec)["target"]["settings"],
      json({{"max_connections", "200"}, {"shared_buffers", "256MB"}, {"search_path", "a,b=c"}}));
  EXPECT_EQ((*spec)["router"], json({{"type", "pgbouncer"},
                                     {"admin_conninfo", f.router_admins[0]},
                                     {"config_file", "/etc/pgbouncer/pgbouncer.ini"},
                                     {"route", "orders"}}));
  EXPECT_EQ((*spec)["options"], json({{"lag_threshold_bytes", 65536},
                                      {"sustain_seconds", 30},
                                      {"auto_cutover", true},
                                      {"verify_seconds", 2.5},
                                      {"hold_timeout_ms", 5000}}));
  EXPECT_TRUE((*spec)["options"]["sustain_seconds"].is_number_integer());
  EXPECT_FALSE((*spec)["options"].contains("auto_finalize"));
}

TEST(BuildSpec, SourceReplicationAddress) {
  CreateFlags f = Minimal();
  f.replication_conninfo = "host=10.1.2.3 port=6432";
  auto spec = BuildSpec(f);
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ((*spec)["source"]["replication_conninfo"], "host=10.1.2.3 port=6432");
  f.replication_conninfo = "host='10.1.2.3";
  ExpectInvalid(BuildSpec(f), "--source-replication");
}

TEST(BuildSpec, ProxyAndNoneRouters) {
  CreateFlags f = Minimal();
  f.router_type = "proxy";
  f.router_admins = {"http://127.0.0.1:7433"};
  f.route = "orders";
  auto spec = BuildSpec(f);
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ((*spec)["router"],
            json({{"type", "proxy"}, {"admin_url", "http://127.0.0.1:7433"}, {"route", "orders"}}));
  f = Minimal();
  f.router_type = "none";
  spec = BuildSpec(f);
  ASSERT_TRUE(spec.ok());
  EXPECT_EQ((*spec)["router"], json({{"type", "none"}}));
}

TEST(BuildSpec, SeveralProxyInstances) {
  CreateFlags f = Minimal();
  f.router_type = "proxy";
  f.route = "orders";
  f.router_admins = {"http://10.0.1.1:7433", "http://10.0.1.2:7433, https://10.0.1.3:7433"};
  auto spec = BuildSpec(f);
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ((*spec)["router"], json::parse(R"({"type": "proxy", "route": "orders", "instances": [
    {"admin_url": "http://10.0.1.1:7433"}, {"admin_url": "http://10.0.1.2:7433"},
    {"admin_url": "https://10.0.1.3:7433"}]})"));
  f.router_admins = {"http://10.0.1.1:7433,http://10.0.1.2:7433"};
  spec = BuildSpec(f);
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ((*spec)["router"]["instances"].size(), 2u);
  f.router_admins = {"http://10.0.1.1:7433,"};
  ExpectInvalid(BuildSpec(f), "--router-type proxy needs --router-admin URL");
  f.router_admins = {"http://10.0.1.1:7433", "10.0.1.2:7433"};
  ExpectInvalid(BuildSpec(f), "got '10.0.1.2:7433'");
  f.router_admins = {"http://10.0.1.1:7433", "http://10.0.1.1:7433"};
  ExpectInvalid(BuildSpec(f), "--router-admin lists http://10.0.1.1:7433 twice");
  f = Minimal();
  f.router_type = "pgbouncer";
  f.router_admins = {"host=a port=6432", "host=b port=6432"};
  ExpectInvalid(BuildSpec(f), "--router-type pgbouncer takes one --router-admin");
  f.router_admins = {"host=a,b port=6432,6432 dbname=pgbouncer"};  // libpq's multi-host form
  spec = BuildSpec(f);
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ((*spec)["router"]["admin_conninfo"], f.router_admins[0]);
}

TEST(BuildSpec, MissingFlagsAreAllNamed) {
  ExpectInvalid(BuildSpec(CreateFlags{}),
                "missing --name, --source, --target-dir, --target-port (or give a whole spec with "
                "--spec FILE.json)");
  CreateFlags f = Minimal();
  f.target_port.reset();
  ExpectInvalid(BuildSpec(f), "missing --target-port");
}

TEST(BuildSpec, BadConnectionStringUsesLibpqMessage) {
  CreateFlags f = Minimal();
  f.source_conninfo = "host=127.0.0.1 port";
  ExpectInvalid(BuildSpec(f), "--source: bad connection string 'host=127.0.0.1 port'");
  ExpectInvalid(BuildSpec(f), "missing \"=\" after \"port\"");
  f.source_conninfo = "host=127.0.0.1 colour=blue";
  ExpectInvalid(BuildSpec(f), "invalid connection option \"colour\"");
}

TEST(BuildSpec, BadValues) {
  CreateFlags f = Minimal();
  f.target_dir = "relative/dir";
  ExpectInvalid(BuildSpec(f), "--target-dir 'relative/dir' must be an absolute path");
  f = Minimal();
  f.target_port = 70000;
  ExpectInvalid(BuildSpec(f), "--target-port 70000 is not a TCP port");
  f = Minimal();
  f.target_settings = {"max_connections"};
  ExpectInvalid(BuildSpec(f), "--target-setting 'max_connections' is not key=value");
  f.target_settings = {"=5"};
  ExpectInvalid(BuildSpec(f), "is not key=value");
  f = Minimal();
  f.hold_timeout_ms = 0;
  ExpectInvalid(BuildSpec(f), "--hold-timeout-ms must be > 0");
  f = Minimal();
  f.sustain_seconds = -1;
  ExpectInvalid(BuildSpec(f), "--sustain-seconds must be >= 0");
}

TEST(BuildSpec, RouterCombinations) {
  CreateFlags f = Minimal();
  f.router_admins = {"host=x"};
  ExpectInvalid(BuildSpec(f), "need --router-type");
  f = Minimal();
  f.router_type = "pgbouncer";
  ExpectInvalid(BuildSpec(f), "--router-type pgbouncer needs --router-admin CONNINFO");
  f.router_admins = {"port="};
  f.router_admins = {"host=127.0.0.1 dbname"};
  ExpectInvalid(BuildSpec(f), "--router-admin: bad connection string");
  f.router_admins = {"host=127.0.0.1 port=6432 dbname=pgbouncer"};
  f.router_config = "pgbouncer.ini";
  ExpectInvalid(BuildSpec(f), "--router-config 'pgbouncer.ini' must be an absolute path");
  f = Minimal();
  f.router_type = "proxy";
  f.router_admins = {"host=127.0.0.1"};
  ExpectInvalid(BuildSpec(f), "--router-type proxy needs --router-admin URL");
  f.router_admins = {"http://127.0.0.1:7433"};
  f.router_config = "/etc/x.ini";
  ExpectInvalid(BuildSpec(f), "--router-config is for --router-type pgbouncer");
  f = Minimal();
  f.router_type = "none";
  f.route = "orders";
  ExpectInvalid(BuildSpec(f), "--router-type none takes no");
  f = Minimal();
  f.router_type = "haproxy";
  ExpectInvalid(BuildSpec(f), "not one of pgbouncer, proxy, none");
}

class SpecFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = MakeTempDir("pgshift-spec-test");
    ASSERT_TRUE(d.ok());
    dir_ = *d;
  }
  void TearDown() override { (void)RemoveTree(dir_); }
  std::string Write(const std::string& name, const std::string& content) {
    std::string path = dir_ + "/" + name;
    std::ofstream(path) << content;
    return path;
  }
  std::string dir_;
};

TEST_F(SpecFileTest, LoadsObjectVerbatim) {
  std::string text =
      R"({"name":"x","source":{"conninfo":"host=a port=5432"},"target":{"port":1},"extra":[1]})";
  auto spec = LoadSpecFile(Write("ok.json", text));
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(*spec, json::parse(text));
}

TEST_F(SpecFileTest, Errors) {
  ExpectInvalid(LoadSpecFile(dir_ + "/absent.json"),
                "--spec: cannot read " + dir_ + "/absent.json");
  ExpectInvalid(LoadSpecFile(Write("bad.json", "{\"name\": }")),
                "is not valid JSON: parse error at line 1, column 10");
  ExpectInvalid(LoadSpecFile(Write("arr.json", "[]")),
                "must hold a JSON object (the migration spec), not array");
  ExpectInvalid(LoadSpecFile(Write("conn.json", R"({"source":{"conninfo":"host"}})")),
                "source.conninfo: bad connection string 'host'");
  ExpectInvalid(LoadSpecFile(Write("router.json", R"({"router":{"admin_conninfo":"a b"}})")),
                "router.admin_conninfo: bad connection string");
}

}  // namespace
}  // namespace pgshift::cli
