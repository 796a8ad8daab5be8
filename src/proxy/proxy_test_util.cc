#include "proxy/proxy_test_util.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <chrono>
#include <filesystem>
#include <regex>
#include <thread>

#include "common/dev_certs.h"
#include "common/os.h"
#include "router/proxy_router.h"

namespace pgshift::proxy::testing {
Status MakeCerts(const std::string& dir) { return MakeDevCerts(dir); }

Result<std::unique_ptr<ProxyEnv>> ProxyEnv::Create(bool two_clusters, bool allow_plaintext,
                                                   int busy_poll_us, UncarriableMode uncarriable,
                                                   bool upstream_pool) {
  auto env = std::make_unique<ProxyEnv>();
  std::vector<pgshift::testing::TestCluster*> clusters;
  PGSHIFT_ASSIGN_OR_RETURN(env->a, pgshift::testing::TestCluster::Create({.name = "src"}));
  clusters.push_back(env->a.get());
  if (two_clusters) {
    PGSHIFT_ASSIGN_OR_RETURN(env->b, pgshift::testing::TestCluster::Create({.name = "dst"}));
    clusters.push_back(env->b.get());
  }
  for (auto* c : clusters) {
    PGSHIFT_RETURN_IF_ERROR(
        c->Psql("SET password_encryption = 'scram-sha-256'; "
                "CREATE ROLE app LOGIN PASSWORD 'secret'; CREATE ROLE md5user LOGIN; "
                "SET password_encryption = 'md5'; ALTER ROLE md5user PASSWORD 'md5secret'")
            .status());
    PGSHIFT_RETURN_IF_ERROR(c->Psql("CREATE DATABASE app OWNER app").status());
    PGSHIFT_RETURN_IF_ERROR(c->Psql("GRANT CONNECT ON DATABASE app TO md5user").status());
    // Password logins for app and md5user, ahead of initdb's trust rules.
    std::string hba_path = c->cluster().spec().data_dir + "/pg_hba.conf";
    PGSHIFT_ASSIGN_OR_RETURN(std::string hba, ReadFile(hba_path));
    PGSHIFT_RETURN_IF_ERROR(WriteFileAtomic(
        hba_path,
        "host all app 127.0.0.1/32 scram-sha-256\nhost all md5user 127.0.0.1/32 md5\n" + hba));
    PGSHIFT_RETURN_IF_ERROR(c->Psql("SELECT pg_reload_conf()").status());
    PGSHIFT_RETURN_IF_ERROR(
        RunChecked(DefaultRunner(),
                   {.argv = {DefaultPgBinDir() + "/pgbench", "-i", "-s", "1", "-q", "-h",
                             "127.0.0.1", "-p", std::to_string(c->port()), "-U", "app", "app"},
                    .extra_env = {"PGPASSWORD=secret"},
                    .timeout_ms = 120000})
            .status());
  }
  PGSHIFT_ASSIGN_OR_RETURN(env->certs, MakeTempDir("pgshift-proxy-certs"));
  PGSHIFT_RETURN_IF_ERROR(MakeCerts(env->certs));
  nlohmann::json cfg = {
      {"listen", "127.0.0.1:0"},
      {"admin_listen", "127.0.0.1:0"},
      {"threads", 2},
      {"busy_poll_us", busy_poll_us},
      {"retire_delay_ms", kTestRetireDelayMs},
      {"tls", {{"cert", "server.crt"}, {"key", "server.key"}, {"client_ca", "ca.crt"}}},
      {"routes",
       {{{"name", "app"},
         {"database", "app"},
         {"upstream", {{"host", "127.0.0.1"}, {"port", env->a->port()}}},
         {"allow_plaintext", allow_plaintext},
         {"hold_timeout_ms", 5000},
         {"uncarriable", UncarriableModeName(uncarriable)}}}},
      {"policy",
       {{{"identity", "app-client"}, {"databases", {"app"}}, {"roles", {"app", "md5user"}}},
        {{"identity", "other-client"}, {"databases", {"postgres"}}, {"roles", {"app"}}}}},
      {"credentials",
       {{{"role", "app"}, {"password", "secret"}},
        {{"role", "md5user"}, {"password", "md5secret"}}}}};
  if (!upstream_pool) cfg["upstream_pool"] = {{"max_idle", 0}};
  PGSHIFT_RETURN_IF_ERROR(WriteFileAtomic(env->certs + "/proxy.json", cfg.dump(2)));
  PGSHIFT_ASSIGN_OR_RETURN(env->config, LoadProxyConfig(env->certs + "/proxy.json"));
  env->proxy = std::make_unique<Proxy>(env->config);
  PGSHIFT_RETURN_IF_ERROR(env->proxy->Start());
  return env;
}

ProxyEnv::~ProxyEnv() {
  if (proxy) proxy->Stop();
  proxy.reset();
  if (!certs.empty()) (void)RemoveTree(certs);
}

std::string ProxyEnv::Conninfo(const std::string& client, const std::string& db,
                               const std::string& user) const {
  std::string s = "host=127.0.0.1 port=" + std::to_string(proxy->port()) + " dbname=" + db +
                  " user=" + user + " connect_timeout=10";
  if (client.empty()) return s + " sslmode=disable";
  std::string ca = client == "evil-client" ? "ca.crt" : "ca.crt";
  return s + " sslmode=verify-full sslrootcert=" + certs + "/" + ca + " sslcert=" + certs + "/" +
         client + ".crt sslkey=" + certs + "/" + client + ".key";
}

std::string TlsUpstreamJson(const ProxyEnv& env, pgshift::testing::TestCluster& c) {
  return R"({"upstream":{"host":"127.0.0.1","port":)" + std::to_string(c.port()) +
         R"(,"tls":true,"ca":")" + env.certs + R"(/ca.crt"}})";
}

Status UseServerTls(ProxyEnv& env, pgshift::testing::TestCluster& c) {
  for (const char* f : {"server.crt", "server.key"}) {
    PGSHIFT_ASSIGN_OR_RETURN(std::string content, ReadFile(env.certs + "/" + f));
    PGSHIFT_RETURN_IF_ERROR(WriteFileAtomic(c.dir() + "/" + f, content));
    PGSHIFT_RETURN_IF_ERROR(ChownRecursive(c.dir() + "/" + f, "postgres"));
  }
  std::filesystem::permissions(c.dir() + "/server.key", std::filesystem::perms::owner_read |
                                                            std::filesystem::perms::owner_write);
  PGSHIFT_RETURN_IF_ERROR(
      c.Psql("ALTER SYSTEM SET ssl_cert_file = '" + c.dir() + "/server.crt'").status());
  PGSHIFT_RETURN_IF_ERROR(
      c.Psql("ALTER SYSTEM SET ssl_key_file = '" + c.dir() + "/server.key'").status());
  PGSHIFT_RETURN_IF_ERROR(c.Psql("ALTER SYSTEM SET ssl = on").status());
  PGSHIFT_RETURN_IF_ERROR(c.Psql("SELECT pg_reload_conf()").status());
  // The reload reaches the postmaster asynchronously.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto [code, body] = Admin(env.AdminUrl(), "PUT", "/routes/app", TlsUpstreamJson(env, c));
  if (code != 200) return Internal("PUT /routes/app: " + std::to_string(code) + " " + body);
  return Status::OK();
}

Result<ProcessResult> Psql(const std::string& conninfo, const std::string& sql) {
  return DefaultRunner().Run({.argv = {DefaultPgBinDir() + "/psql", "-X", "-At", "-v",
                                       "ON_ERROR_STOP=1", "-d", conninfo, "-c", sql},
                              .timeout_ms = 60000});
}

PgbenchSummary ParsePgbench(const ProcessResult& r) {
  PgbenchSummary s;
  s.exit_code = r.exit_code;
  s.output = r.output;
  std::smatch m;
  if (std::regex_search(r.output, m, std::regex(R"(actually processed: (\d+))")))
    s.processed = std::stoll(m[1]);
  if (std::regex_search(r.output, m, std::regex(R"(number of failed transactions: (\d+))")))
    s.failed = std::stoll(m[1]);
  else
    s.failed = -1;  // not reported: treat as unknown, never as zero
  if (std::regex_search(r.output, m, std::regex(R"(tps = ([0-9.]+))"))) s.tps = std::stod(m[1]);
  if (std::regex_search(r.output, m, std::regex(R"(latency average = ([0-9.]+) ms)")))
    s.latency_ms = std::stod(m[1]);
  s.aborted = r.output.find("aborted") != std::string::npos || r.exit_code != 0;
  return s;
}

std::pair<int, std::string> Admin(const std::string& url, const std::string& method,
                                  const std::string& path, const std::string& body) {
  httplib::Client cli(url);
  cli.set_read_timeout(std::chrono::seconds(60));
  auto res = method == "GET"    ? cli.Get(path.c_str())
             : method == "POST" ? cli.Post(path.c_str(), body, "application/json")
                                : cli.Put(path.c_str(), body, "application/json");
  if (!res) return {-1, httplib::to_string(res.error())};
  return {res->status, res->body};
}

std::string One(PgConn& c, const std::string& sql) {
  auto r = c.Query(sql);
  EXPECT_TRUE(r.ok()) << sql << ": " << r.status().ToString();
  if (!r.ok() || r->empty()) return "";
  return r->At(0, 0).value_or("");
}

std::unique_ptr<ProxyEnv> MustEnv(bool two, bool plaintext, int busy_poll_us,
                                  UncarriableMode uncarriable, bool upstream_pool) {
  auto env = ProxyEnv::Create(two, plaintext, busy_poll_us, uncarriable, upstream_pool);
  EXPECT_TRUE(env.ok()) << env.status().ToString();
  return env.ok() ? std::move(*env) : nullptr;
}

std::unique_ptr<Router> MakeRouterFor(ProxyEnv& env) {
  auto r = MakeProxyRouter({{"type", "proxy"}, {"admin_url", env.AdminUrl()}, {"route", "app"}});
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? std::move(*r) : nullptr;
}

int64_t Count(pgshift::testing::TestCluster& c, const std::string& sql) {
  auto out = c.Psql(sql, "app");
  EXPECT_TRUE(out.ok()) << out.status().ToString();
  return out.ok() ? std::stoll(*out) : -1;
}

ProcessSpec PgbenchSpec(ProxyEnv& env, const std::string& mode, int seconds, bool plaintext) {
  std::vector<std::string> tls = {"PGSSLMODE=verify-full", "PGSSLROOTCERT=" + env.certs + "/ca.crt",
                                  "PGSSLCERT=" + env.certs + "/app-client.crt",
                                  "PGSSLKEY=" + env.certs + "/app-client.key"};
  return {.argv = {DefaultPgBinDir() + "/pgbench", "-n", "-c", "4", "-j", "2", "-T",
                   std::to_string(seconds), "-M", mode, "-h", "127.0.0.1", "-p",
                   std::to_string(env.proxy->port()), "-U", "app", "app"},
          .extra_env = plaintext ? std::vector<std::string>{"PGSSLMODE=disable"} : tls,
          .timeout_ms = 120000};
}

}  // namespace pgshift::proxy::testing
