// PgBouncerProcess: a real PgBouncer started for tests, the demo and
// integration runs. It writes pgbouncer.ini and userlist.txt into a
// directory owned by the OS user (PgBouncer refuses to run as root), starts
// pgbouncer in the foreground as that user on 127.0.0.1:<port> with the unix
// socket disabled, and waits until the port accepts connections. The
// destructor stops it (SIGTERM, then SIGKILL) and removes a directory it
// made itself. Not thread-safe; one owner drives a PgBouncerProcess.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/process.h"
#include "common/status.h"
#include "router/router.h"

namespace pgshift {

class PgBouncerProcess {
 public:
  struct Database {
    std::string name;       // the name clients connect to (and the router's route)
    Endpoint endpoint;      // the PostgreSQL server behind it
    std::string dbname;     // database on the server; empty: same as name
    std::string extra;      // more key=value pairs for the line, e.g. "pool_size=5"
  };
  struct Options {
    std::string dir;        // config/log/pid files; empty: a fresh temp dir, removed on Stop
    int listen_port = 0;    // 0: a free port
    std::vector<Database> databases;
    std::string pool_mode = "transaction";
    std::string admin_users = "postgres";
    std::string auth_type = "trust";
    // userlist.txt entries: user → password (empty password with trust auth).
    std::map<std::string, std::string> users = {{"postgres", ""}};
    // PgBouncer 1.18 marks a server login cut off by PAUSE as failed and then waits
    // server_login_retry (default 15 s) before connecting again after RESUME; keep it short.
    int server_login_retry_s = 1;
    std::map<std::string, std::string> settings;  // more [pgbouncer] settings
    std::string os_user = "postgres";
    std::string binary = "pgbouncer";
    int start_timeout_ms = 15000;
  };

  static Result<std::unique_ptr<PgBouncerProcess>> Start(Options opts,
                                                         ProcessRunner& runner = DefaultRunner());
  ~PgBouncerProcess();
  PgBouncerProcess(const PgBouncerProcess&) = delete;
  PgBouncerProcess& operator=(const PgBouncerProcess&) = delete;

  // Stops PgBouncer (SIGTERM, SIGKILL after 10 s) and removes a temp dir it made.
  // Idempotent.
  Status Stop();
  bool Running() const { return pid_ > 0; }

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  const std::string& dir() const { return dir_; }
  std::string ConfigFile() const { return dir_ + "/pgbouncer.ini"; }
  std::string LogFile() const { return dir_ + "/pgbouncer.log"; }
  std::string AdminConninfo(const std::string& user = "postgres") const;
  std::string ClientConninfo(const std::string& db, const std::string& user = "postgres") const;
  // {"type":"pgbouncer","admin_conninfo":..,"config_file":..,"route":route} for MakeRouter.
  nlohmann::json RouterConfig(const std::string& route) const;

  // The pgbouncer.ini text for `opts` (exposed for tests).
  static std::string RenderIni(const Options& opts, const std::string& dir, int port);

 private:
  PgBouncerProcess() = default;
  std::string dir_;
  bool own_dir_ = false;
  int port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace pgshift
