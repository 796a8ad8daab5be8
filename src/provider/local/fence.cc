#include "provider/local/fence.h"

#include <cstdlib>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "common/clock.h"
#include "common/os.h"

namespace pgshift {
namespace {

constexpr const char* kBegin = "# >>> pgshift fence";
constexpr const char* kEnd = "# <<< pgshift fence";

std::string HbaQuote(const std::string& role) {
  std::string out = "\"";
  for (char c : role) out += (c == '"') ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

// The facts every fence operation starts from, in one round trip (traffic
// may be held).
constexpr const char* kHostFacts =
    "current_setting('hba_file') as f, current_setting('data_directory') as d, "
    "pg_backend_pid() as bp";

// The hba_file of a server shown to run on this host (`facts`: kHostFacts).
Result<std::string> LocalHbaPath(const Rows& facts) {
  PGSHIFT_RETURN_IF_ERROR(ServerRunsHere(facts.Str(0, "d"), static_cast<int>(facts.Int(0, "bp"))));
  std::string path = facts.Str(0, "f");
  if (!PathExists(path)) {
    return FailedPrecondition("the source's pg_hba.conf (" + path + ") is not readable here");
  }
  return path;
}

Result<std::string> HbaPath(PgConn& admin) {
  PGSHIFT_ASSIGN_OR_RETURN(Rows r, admin.Query(std::string("select ") + kHostFacts));
  return LocalHbaPath(r);
}

}  // namespace

Status ServerRunsHere(const std::string& data_dir, int backend_pid) {
  const std::string elsewhere =
      "the source (data directory " + data_dir +
      ") does not run on this host: the local provider fences a source through its "
      "pg_hba.conf and retires it with pg_ctl, so pgshiftd must run on the source's host (";
  auto pidfile = ReadFile(data_dir + "/postmaster.pid");
  if (!pidfile.ok()) return FailedPrecondition(elsewhere + pidfile.status().message() + ")");
  const int postmaster = std::atoi(pidfile->c_str());
  auto parent = ParentPid(backend_pid);
  if (postmaster <= 0 || !parent.ok() || *parent != postmaster) {
    return FailedPrecondition(elsewhere + data_dir + "/postmaster.pid names postmaster " +
                              std::to_string(postmaster) + ", which is not the parent of the " +
                              "session's backend " + std::to_string(backend_pid) + " here)");
  }
  return Status::OK();
}

Result<std::string> LocalDataDirectory(PgConn& admin) {
  PGSHIFT_ASSIGN_OR_RETURN(Rows r, admin.Query(std::string("select ") + kHostFacts));
  PGSHIFT_RETURN_IF_ERROR(ServerRunsHere(r.Str(0, "d"), static_cast<int>(r.Int(0, "bp"))));
  return r.Str(0, "d");
}

std::string LocalFence::WithoutFence(const std::string& hba) {
  std::istringstream in(hba);
  std::string line, out;
  bool inside = false;
  while (std::getline(in, line)) {
    if (line.rfind(kBegin, 0) == 0) {
      inside = true;
      continue;
    }
    if (line.rfind(kEnd, 0) == 0) {
      inside = false;
      continue;
    }
    if (!inside) out += line + "\n";
  }
  return out;
}

std::string LocalFence::WithFence(const std::string& hba, const std::vector<std::string>& roles,
                                  const std::string& label) {
  std::string block = std::string(kBegin) + " (" + label +
                      "): every login role but pgshift's is rejected; remove with "
                      "`pgshift migration rollback` or by deleting this block and reloading\n";
  if (!roles.empty()) {
    std::string list;
    for (const auto& r : roles) list += (list.empty() ? "" : ",") + HbaQuote(r);
    block += "local all " + list + " reject\n";
    block += "host all " + list + " all reject\n";
  }
  block += std::string(kEnd) + "\n";
  return block + WithoutFence(hba);
}

Status LocalFence::Reload(PgConn& admin) {
  PGSHIFT_ASSIGN_OR_RETURN(Rows before, admin.Query("select pg_conf_load_time()::text as t"));
  return Reload(admin, before.Str(0, "t"));
}

Status LocalFence::Reload(PgConn& admin, const std::string& loaded_before) {
  PGSHIFT_RETURN_IF_ERROR(admin.Exec("select pg_reload_conf()"));
  // A new backend inherits the postmaster's configuration, so its
  // pg_conf_load_time() moves once the postmaster has re-read pg_hba.conf.
  const int64_t deadline = MonotonicMs() + options_.reload_timeout_ms;
  while (MonotonicMs() < deadline) {
    PGSHIFT_ASSIGN_OR_RETURN(
        Rows after,
        admin.Query("select pg_conf_load_time() > $1::timestamptz as reloaded", {loaded_before}));
    if (after.Bool(0, "reloaded")) return Status::OK();
    std::this_thread::sleep_for(std::chrono::milliseconds(options_.reload_poll_ms));
    // Our own backend updates its load time only when it processes SIGHUP,
    // which it does between statements; keep asking.
  }
  return Timeout("the source did not reload pg_hba.conf within " +
                 std::to_string(options_.reload_timeout_ms) + " ms");
}

Result<FenceOutcome> LocalFence::Fence(PgConn& admin, const FenceExemption& exempt) {
  // Traffic is held: what the fence needs to know comes in one round trip.
  PGSHIFT_ASSIGN_OR_RETURN(
      Rows facts,
      admin.Query(std::string("select ") + kHostFacts +
                  ", pg_conf_load_time()::text as t, "
                  "coalesce(array_to_json(array(select rolname from pg_roles where rolcanlogin "
                  "and rolname <> current_user order by 1)), '[]')::text as roles"));
  PGSHIFT_ASSIGN_OR_RETURN(const std::string path, LocalHbaPath(facts));
  std::vector<std::string> names;
  const auto roles = nlohmann::json::parse(facts.Str(0, "roles"), nullptr, false);
  if (!roles.is_array()) return Internal("fence: unreadable role list " + facts.Str(0, "roles"));
  for (const auto& r : roles) names.push_back(r.get<std::string>());
  PGSHIFT_ASSIGN_OR_RETURN(std::string hba, ReadFile(path));
  std::string fenced = WithFence(hba, names, label_);
  if (fenced != hba) {
    PGSHIFT_RETURN_IF_ERROR(WriteFileAtomic(path, fenced));
    PGSHIFT_RETURN_IF_ERROR(Reload(admin, facts.Str(0, "t")));
  }
  std::string pids = "{";
  for (size_t i = 0; i < exempt.pids.size(); ++i)
    pids += (i ? "," : "") + std::to_string(exempt.pids[i]);
  pids += "}";
  // Sessions that authenticated before the reload may still exist or be
  // finishing authentication: sweep until clean_sweeps sweeps in a row find
  // none but the spared. Each sweep decides and terminates in one statement (one view
  // of pg_stat_activity), and decides again every time, so an exempt backend
  // that starts working is terminated too. Not pg_terminate_backend(pid,
  // timeout): it checks every 100 ms per backend, and traffic is held while
  // we wait.
  const char* kSweep =
      "select pid, spared, case when not spared then pg_terminate_backend(pid) end as signalled "
      "from (select pid, coalesce(datname = $1 and pid = any($2::int[]) and state = 'idle' "
      "and backend_xid is null and xact_start is null, false) as spared "
      "from pg_stat_activity where backend_type = 'client backend' "
      "and pid <> pg_backend_pid()) s";
  std::set<std::string> terminated;
  int clean = 0;
  int spared = 0;
  const int64_t deadline = MonotonicMs() + options_.sweep_timeout_ms;
  while (true) {
    PGSHIFT_ASSIGN_OR_RETURN(Rows rows, admin.Query(kSweep, {exempt.database, pids}));
    int left = 0;
    spared = 0;
    for (size_t i = 0; i < rows.size(); ++i) {
      if (rows.Bool(i, "spared")) {
        ++spared;
      } else {
        ++left;
        terminated.insert(rows.Str(i, "pid"));
      }
    }
    clean = left == 0 ? clean + 1 : 0;
    if (clean >= options_.clean_sweeps) break;
    if (MonotonicMs() > deadline) {
      return Timeout("fence: " + std::to_string(left) +
                     " client session(s) on the source survived termination for " +
                     std::to_string(options_.sweep_timeout_ms) + " ms");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(options_.sweep_interval_ms));
  }
  return FenceOutcome{.terminated = static_cast<int>(terminated.size()), .exempted = spared};
}

Status LocalFence::Unfence(PgConn& admin) {
  PGSHIFT_ASSIGN_OR_RETURN(std::string path, HbaPath(admin));
  PGSHIFT_ASSIGN_OR_RETURN(std::string hba, ReadFile(path));
  std::string open = WithoutFence(hba);
  if (open == hba) return Status::OK();
  PGSHIFT_RETURN_IF_ERROR(WriteFileAtomic(path, open));
  return Reload(admin);
}

Result<bool> LocalFence::IsFenced(PgConn& admin) {
  PGSHIFT_ASSIGN_OR_RETURN(std::string path, HbaPath(admin));
  PGSHIFT_ASSIGN_OR_RETURN(std::string hba, ReadFile(path));
  return hba.find(kBegin) != std::string::npos;
}

}  // namespace pgshift
