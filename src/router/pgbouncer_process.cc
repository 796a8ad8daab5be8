#include "router/pgbouncer_process.h"

#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdlib>
#include <thread>

#include "common/os.h"
#include "pg/conn.h"

namespace pgshift {
namespace {

std::string Tail(const std::string& path, size_t max = 1500) {
  auto text = ReadFile(path);
  if (!text.ok()) return "(no log at " + path + ")";
  return text->size() > max ? text->substr(text->size() - max) : *text;
}


}  // namespace

std::string PgBouncerProcess::RenderIni(const Options& opts, const std::string& dir, int port) {
  std::string ini = "; written by pgshift PgBouncerProcess\n[databases]\n";
  for (const auto& db : opts.databases) {
    ini += db.name + " = host=" + db.endpoint.host + " port=" + std::to_string(db.endpoint.port) +
           " dbname=" + (db.dbname.empty() ? db.name : db.dbname);
    if (!db.extra.empty()) ini += " " + db.extra;
    ini += "\n";
  }
  ini += "\n[pgbouncer]\n";
  ini += "listen_addr = 127.0.0.1\n";
  ini += "listen_port = " + std::to_string(port) + "\n";
  ini += "unix_socket_dir =\n";
  ini += "auth_type = " + opts.auth_type + "\n";
  ini += "auth_file = " + dir + "/userlist.txt\n";
  ini += "admin_users = " + opts.admin_users + "\n";
  ini += "pool_mode = " + opts.pool_mode + "\n";
  ini += "logfile = " + dir + "/pgbouncer.log\n";
  ini += "pidfile = " + dir + "/pgbouncer.pid\n";
  ini += "server_login_retry = " + std::to_string(opts.server_login_retry_s) + "\n";
  for (const auto& [key, value] : opts.settings) ini += key + " = " + value + "\n";
  return ini;
}

Result<std::unique_ptr<PgBouncerProcess>> PgBouncerProcess::Start(Options opts,
                                                                  ProcessRunner& runner) {
  if (opts.databases.empty()) {
    return InvalidArgument("PgBouncerProcess needs at least one database in Options.databases");
  }
  for (const auto& db : opts.databases) {
    if (db.name.empty() || db.endpoint.host.empty() || db.endpoint.port <= 0) {
      return InvalidArgument("PgBouncerProcess database '" + db.name + "' -> '" +
                             db.endpoint.ToString() + "' needs a name, a host and a port");
    }
  }
  auto p = std::unique_ptr<PgBouncerProcess>(new PgBouncerProcess());
  if (opts.dir.empty()) {
    PGSHIFT_ASSIGN_OR_RETURN(p->dir_, MakeTempDir("pgshift-pgbouncer"));
    p->own_dir_ = true;
  } else {
    p->dir_ = opts.dir;
  }
  PGSHIFT_RETURN_IF_ERROR(MakeDirOwnedBy(p->dir_, opts.os_user, 0700));
  if (opts.listen_port == 0) {
    PGSHIFT_ASSIGN_OR_RETURN(opts.listen_port, FreePort());
  }
  p->port_ = opts.listen_port;

  std::string userlist;
  for (const auto& [user, password] : opts.users) {
    userlist += "\"" + user + "\" \"" + password + "\"\n";
  }
  PGSHIFT_RETURN_IF_ERROR(WriteFileAtomic(p->dir_ + "/userlist.txt", userlist));
  PGSHIFT_RETURN_IF_ERROR(
      WriteFileAtomic(p->ConfigFile(), RenderIni(opts, p->dir_, p->port_)));
  PGSHIFT_RETURN_IF_ERROR(ChownRecursive(p->dir_, opts.os_user));

  const std::string out = p->dir_ + "/pgbouncer.out";
  PGSHIFT_ASSIGN_OR_RETURN(p->pid_, runner.Spawn(ProcessSpec{.argv = {opts.binary, p->ConfigFile()},
                                                             .run_as = opts.os_user,
                                                             .cwd = p->dir_,
                                                             .output_file = out}));
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(opts.start_timeout_ms);
  while (!PortOpen("127.0.0.1", p->port_)) {
    if (ChildExited(p->pid_)) {
      p->pid_ = -1;
      return Unavailable("pgbouncer exited during start (config " + p->ConfigFile() + "): " +
                         Tail(out) + Tail(p->LogFile()));
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return Timeout("pgbouncer did not accept connections on 127.0.0.1:" +
                     std::to_string(p->port_) + " within " +
                     std::to_string(opts.start_timeout_ms) + " ms: " + Tail(p->LogFile()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  return p;
}

Status PgBouncerProcess::Stop() {
  Status result;
  if (pid_ > 0) {
    if (!StopChild(pid_, SIGTERM /* immediate shutdown */, 10000)) {
      result = Timeout("pgbouncer (pid " + std::to_string(pid_) +
                       ") ignored SIGTERM for 10 s and was killed");
    }
    pid_ = -1;
  }
  if (own_dir_ && !dir_.empty() && !KeepTestDirs()) {
    Status removed = RemoveTree(dir_);
    if (result.ok()) result = removed;
    own_dir_ = false;
  }
  return result;
}

PgBouncerProcess::~PgBouncerProcess() { (void)Stop(); }

std::string PgBouncerProcess::AdminConninfo(const std::string& user) const {
  return ClientConninfo("pgbouncer", user);
}

std::string PgBouncerProcess::ClientConninfo(const std::string& db, const std::string& user) const {
  return BuildConninfo({{"host", "127.0.0.1"},
                        {"port", std::to_string(port_)},
                        {"dbname", db},
                        {"user", user}});
}

nlohmann::json PgBouncerProcess::RouterConfig(const std::string& route) const {
  return {{"type", "pgbouncer"},
          {"admin_conninfo", AdminConninfo()},
          {"config_file", ConfigFile()},
          {"route", route}};
}

}  // namespace pgshift
