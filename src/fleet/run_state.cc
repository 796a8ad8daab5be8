#include "fleet/run_state.h"

#include <algorithm>
#include <filesystem>

#include "common/os.h"

namespace pgshift::fleet {

using nlohmann::json;

namespace {

constexpr DbStatus kDbStatuses[] = {DbStatus::kPending, DbStatus::kStarting,
                                    DbStatus::kRunning, DbStatus::kSucceeded,
                                    DbStatus::kFailed,  DbStatus::kRolledBack};
constexpr RunStatus kRunStatuses[] = {RunStatus::kRunning, RunStatus::kPaused, RunStatus::kStopped,
                                      RunStatus::kCompleted};

template <typename E, size_t N>
Result<E> ParseName(const E (&all)[N], const char* (*name)(E), const std::string& s) {
  for (E e : all) {
    if (s == name(e)) return e;
  }
  return InvalidArgument("unknown fleet status '" + s + "'");
}

}  // namespace

const char* DbStatusName(DbStatus s) {
  switch (s) {
    case DbStatus::kPending:
      return "pending";
    case DbStatus::kStarting:
      return "starting";
    case DbStatus::kRunning:
      return "running";
    case DbStatus::kSucceeded:
      return "succeeded";
    case DbStatus::kFailed:
      return "failed";
    case DbStatus::kRolledBack:
      return "rolled_back";
  }
  return "?";
}

bool IsDone(DbStatus s) {
  return s == DbStatus::kSucceeded || s == DbStatus::kFailed || s == DbStatus::kRolledBack;
}

bool CountsAgainstWave(DbStatus s) { return s == DbStatus::kFailed || s == DbStatus::kRolledBack; }

bool IsLive(DbStatus s) { return s == DbStatus::kStarting || s == DbStatus::kRunning; }

bool NeedsDriver(const FleetRun& r) {
  if (r.status == RunStatus::kRunning || r.status == RunStatus::kPaused) return true;
  return std::any_of(r.dbs.begin(), r.dbs.end(), [](const DbRun& d) { return IsLive(d.status); });
}

const char* RunStatusName(RunStatus s) {
  switch (s) {
    case RunStatus::kRunning:
      return "running";
    case RunStatus::kPaused:
      return "paused";
    case RunStatus::kStopped:
      return "stopped";
    case RunStatus::kCompleted:
      return "completed";
  }
  return "?";
}

FleetRun FleetRun::New(std::string id, FleetPlan plan, int64_t now_ms) {
  FleetRun r;
  r.id = std::move(id);
  r.created_ms = r.updated_ms = now_ms;
  for (size_t w = 0; w < plan.waves.size(); ++w) {
    for (const auto& d : plan.waves[w].databases) r.dbs.push_back({.name = d.name, .wave = w});
  }
  r.plan = std::move(plan);
  return r;
}

json FleetRun::ToJson() const {
  json dbs_json = json::array();
  for (const auto& d : dbs) {
    dbs_json.push_back({{"name", d.name},
                        {"wave", d.wave},
                        {"status", DbStatusName(d.status)},
                        {"migration_id", d.migration_id},
                        {"error", d.error},
                        {"cutover", d.cutover},
                        {"started_ms", d.started_ms},
                        {"ended_ms", d.ended_ms}});
  }
  return {{"id", id},
          {"plan", plan.ToJson()},
          {"status", RunStatusName(status)},
          {"reason", reason},
          {"created_ms", created_ms},
          {"updated_ms", updated_ms},
          {"databases", dbs_json}};
}

Result<FleetRun> FleetRun::FromJson(const json& j) {
  FleetRun r;
  try {
    r.id = j.at("id");
    PGSHIFT_ASSIGN_OR_RETURN(r.plan, FleetPlan::FromJson(j.at("plan")));
    PGSHIFT_ASSIGN_OR_RETURN(r.status, ParseName(kRunStatuses, RunStatusName, j.at("status")));
    r.reason = j.value("reason", "");
    r.created_ms = j.value("created_ms", int64_t{0});
    r.updated_ms = j.value("updated_ms", int64_t{0});
    for (const auto& d : j.at("databases")) {
      DbRun x;
      x.name = d.at("name");
      x.wave = d.at("wave");
      PGSHIFT_ASSIGN_OR_RETURN(x.status, ParseName(kDbStatuses, DbStatusName, d.at("status")));
      x.migration_id = d.value("migration_id", "");
      x.error = d.value("error", "");
      x.cutover = d.value("cutover", "");
      x.started_ms = d.value("started_ms", int64_t{0});
      x.ended_ms = d.value("ended_ms", int64_t{0});
      r.dbs.push_back(std::move(x));
    }
  } catch (const json::exception& e) {
    return InvalidArgument(std::string("fleet run record: ") + e.what());
  }
  return r;
}

Result<int> ImportFleetDir(const std::string& dir, FleetRunStore& store) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) return 0;
  std::vector<std::filesystem::path> files;
  for (const auto& f : std::filesystem::directory_iterator(dir, ec)) {
    if (f.path().extension() == ".json") files.push_back(f.path());
  }
  if (ec) return Internal("cannot list " + dir + ": " + ec.message());
  int imported = 0;
  for (const auto& path : files) {
    PGSHIFT_ASSIGN_OR_RETURN(std::string text, ReadFile(path.string()));
    json j = json::parse(text, nullptr, false);
    if (j.is_discarded()) return Internal("fleet run file " + path.string() + " is not JSON");
    auto run = FleetRun::FromJson(j);
    if (!run.ok()) return run.status().Wrap(path.string());
    Status st = store.InsertFleetRun(
        {.id = run->id, .created_at_ms = run->created_ms, .doc = run->ToJson()});
    if (st.ok()) {
      ++imported;
    } else if (st.code() != Code::kAlreadyExists) {
      return st.Wrap("importing " + path.string());
    }
  }
  std::filesystem::rename(dir, dir + ".imported", ec);
  if (ec) return Internal("imported " + dir + " but cannot rename it: " + ec.message());
  return imported;
}

}  // namespace pgshift::fleet
