#include "fleet/plan.h"

#include <algorithm>
#include <atomic>
#include <ctime>
#include <set>
#include <sstream>
#include <thread>

#include "fleet/tz.h"

namespace pgshift::fleet {

using nlohmann::json;

namespace {

constexpr int64_t kMsPerMinute = 60 * 1000;
constexpr int kMinutesPerDay = 24 * 60;
constexpr const char* kDayNames[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

Status ReadLimit(const json& j, const char* key, int min, int* out) {
  if (!j.contains(key)) return Status::OK();
  const json& v = j[key];
  if (!v.is_number_integer() || v.get<int64_t>() < min || v.get<int64_t>() > kMaxConcurrencyLimit) {
    return InvalidArgument(std::string("'") + key + "' must be an integer from " +
                           std::to_string(min) + " to " + std::to_string(kMaxConcurrencyLimit));
  }
  *out = v.get<int>();
  return Status::OK();
}

Status ReadStrings(const json& j, const char* key, std::vector<std::string>* out) {
  if (!j.contains(key)) return Status::OK();
  const json& v = j[key];
  if (!v.is_array()) return InvalidArgument(std::string("'") + key + "' must be a list of names");
  for (const auto& s : v) {
    if (!s.is_string() || s.get<std::string>().empty()) {
      return InvalidArgument(std::string("'") + key + "' must be a list of non-empty names");
    }
    out->push_back(s);
  }
  return Status::OK();
}

// The values of `e` a wave may be chosen by.
std::vector<std::string> Keys(const inventory::DatabaseEntry& e, const std::string& by) {
  if (by == "team") return e.team.empty() ? std::vector<std::string>{} : std::vector{e.team};
  return e.tags;
}

Result<int> Minutes(const std::string& hhmm) {
  if (hhmm.size() != 5 || hhmm[2] != ':') return InvalidArgument("'" + hhmm + "' is not HH:MM");
  try {
    return std::stoi(hhmm.substr(0, 2)) * 60 + std::stoi(hhmm.substr(3, 2));
  } catch (const std::exception&) {
    return InvalidArgument("'" + hhmm + "' is not HH:MM");
  }
}

// The offset east of UTC of `tz` at `now_ms`: UTC, a fixed offset, or a
// named zone of the tz database (tz.h).
Result<int> OffsetMinutes(const std::string& tz, int64_t now_ms) {
  std::string rest = tz;
  if (rest.rfind("UTC", 0) == 0) rest = rest.substr(3);
  if (rest.empty()) return 0;
  if ((rest[0] == '+' || rest[0] == '-') && rest.size() == 6) {
    auto m = Minutes(rest.substr(1));
    if (m.ok()) return rest[0] == '-' ? -*m : *m;
  }
  auto named = ZoneOffsetSeconds(tz, now_ms / 1000);
  if (!named.ok()) {
    return InvalidArgument("timezone '" + tz + "': " + named.status().message() +
                           "; the cutover waits for an approval");
  }
  return static_cast<int>(*named / 60);
}

}  // namespace

Result<FleetRequest> FleetRequest::FromJson(const json& j) {
  if (!j.is_object()) return InvalidArgument("the fleet request must be a JSON object");
  static const std::set<std::string> kKnown = {"by",
                                               "waves",
                                               "databases",
                                               "max_concurrent",
                                               "wave_concurrency",
                                               "stop_after",
                                               "approve_outside_window",
                                               "options"};
  for (const auto& [k, v] : j.items()) {
    if (!kKnown.count(k)) return InvalidArgument("unknown field '" + k + "' in the fleet request");
  }
  FleetRequest r;
  if (j.contains("by")) {
    if (!j["by"].is_string() || (j["by"] != "tag" && j["by"] != "team" && j["by"] != "size")) {
      return InvalidArgument("'by' must be \"tag\", \"team\" or \"size\"");
    }
    r.by = j["by"];
  }
  PGSHIFT_RETURN_IF_ERROR(ReadStrings(j, "waves", &r.waves));
  if (r.by == "size") {
    for (const auto& w : r.waves) {
      if (auto b = ParseSize(w); !b.ok()) {
        return InvalidArgument("'waves' by size are upper bounds like \"10GB\": " +
                               b.status().message());
      }
    }
  }
  PGSHIFT_RETURN_IF_ERROR(ReadStrings(j, "databases", &r.databases));
  PGSHIFT_RETURN_IF_ERROR(ReadLimit(j, "max_concurrent", 1, &r.max_concurrent));
  PGSHIFT_RETURN_IF_ERROR(ReadLimit(j, "wave_concurrency", 1, &r.wave_concurrency));
  PGSHIFT_RETURN_IF_ERROR(ReadLimit(j, "stop_after", 1, &r.stop_after));
  if (j.contains("approve_outside_window")) {
    if (!j["approve_outside_window"].is_boolean()) {
      return InvalidArgument("'approve_outside_window' must be true or false");
    }
    r.approve_outside_window = j["approve_outside_window"];
  }
  if (j.contains("options")) {
    if (!j["options"].is_object()) return InvalidArgument("'options' must be a JSON object");
    r.options = j["options"];
  }
  return r;
}

json FleetRequest::ToJson() const {
  return {{"by", by},
          {"waves", waves},
          {"databases", databases},
          {"max_concurrent", max_concurrent},
          {"wave_concurrency", wave_concurrency},
          {"stop_after", stop_after},
          {"approve_outside_window", approve_outside_window},
          {"options", options}};
}

json FleetPlan::ToJson() const {
  json w = json::array();
  for (const auto& wave : waves) {
    json dbs = json::array();
    for (const auto& d : wave.databases) {
      json x = {{"name", d.name},
                {"team", d.team},
                {"window", d.window ? d.window->ToJson() : json(nullptr)}};
      if (d.size_bytes >= 0) x["size_bytes"] = d.size_bytes;
      dbs.push_back(std::move(x));
    }
    w.push_back({{"name", wave.name}, {"databases", dbs}});
  }
  return {{"request", request.ToJson()}, {"waves", w}, {"unplanned", unplanned}, {"notes", notes}};
}

Result<FleetPlan> FleetPlan::FromJson(const json& j) {
  FleetPlan p;
  PGSHIFT_ASSIGN_OR_RETURN(p.request, FleetRequest::FromJson(j.value("request", json::object())));
  for (const auto& w : j.value("waves", json::array())) {
    Wave wave{w.value("name", ""), {}};
    for (const auto& d : w.value("databases", json::array())) {
      PlannedDatabase pd{d.value("name", ""), d.value("team", ""), std::nullopt,
                         d.value("size_bytes", int64_t{-1})};
      if (d.contains("window") && d["window"].is_object()) {
        const json& win = d["window"];
        inventory::Window x;
        x.days = win.value("days", std::vector<std::string>{});
        x.start = win.value("start", "");
        x.end = win.value("end", "");
        x.timezone = win.value("timezone", "UTC");
        pd.window = x;
      }
      wave.databases.push_back(std::move(pd));
    }
    p.waves.push_back(std::move(wave));
  }
  p.unplanned = j.value("unplanned", std::vector<std::string>{});
  p.notes = j.value("notes", std::vector<std::string>{});
  return p;
}

namespace {

// The size of each of `selected`, measured kSizeConcurrency at a time.
std::vector<Result<int64_t>> MeasureAll(
    const std::vector<const inventory::DatabaseEntry*>& selected, const SizeOf& sizes) {
  std::vector<Result<int64_t>> out(selected.size(), Internal("not measured"));
  std::atomic<size_t> next{0};
  std::vector<std::thread> pool;
  const size_t threads = std::min<size_t>(kSizeConcurrency, selected.size());
  for (size_t t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      for (size_t i = next++; i < selected.size(); i = next++) out[i] = sizes(*selected[i]);
    });
  }
  for (auto& t : pool) t.join();
  return out;
}

// Waves by size: each database measured, under the first bound not below it.
Status PlanBySize(const std::vector<const inventory::DatabaseEntry*>& selected, const SizeOf& sizes,
                  FleetPlan* plan) {
  if (!sizes)
    return FailedPrecondition("this pgshiftd cannot measure sources: plan by tag or team");
  std::vector<std::string> names = plan->request.waves;
  if (names.empty()) names.assign(std::begin(kDefaultSizeBounds), std::end(kDefaultSizeBounds));
  std::vector<int64_t> bounds;
  for (const auto& n : names) {
    PGSHIFT_ASSIGN_OR_RETURN(int64_t b, ParseSize(n));
    bounds.push_back(b);
  }
  std::sort(bounds.begin(), bounds.end());
  bounds.erase(std::unique(bounds.begin(), bounds.end()), bounds.end());
  for (int64_t b : bounds) plan->waves.push_back({"up to " + FormatSize(b), {}});
  const std::vector<Result<int64_t>> measured = MeasureAll(selected, sizes);
  for (size_t i = 0; i < selected.size(); ++i) {
    const inventory::DatabaseEntry* e = selected[i];
    const Result<int64_t>& size = measured[i];
    if (!size.ok()) {
      plan->unplanned.push_back(e->name);
      plan->notes.push_back(e->name + ": size unknown (" + size.status().message() + ")");
      continue;
    }
    auto wave = std::lower_bound(bounds.begin(), bounds.end(), *size);
    if (wave == bounds.end()) {
      plan->unplanned.push_back(e->name);
      plan->notes.push_back(e->name + ": " + FormatSize(*size) + ", above every wave's bound");
      continue;
    }
    plan->waves[wave - bounds.begin()].databases.push_back({e->name, e->team, e->window, *size});
  }
  for (auto& w : plan->waves) {
    std::stable_sort(w.databases.begin(), w.databases.end(),
                     [](const PlannedDatabase& x, const PlannedDatabase& y) {
                       return x.size_bytes < y.size_bytes;
                     });
  }
  return Status::OK();
}

}  // namespace

Result<FleetPlan> BuildPlan(const FleetRequest& request, const inventory::Registry& registry,
                            const SizeOf& sizes) {
  std::vector<const inventory::DatabaseEntry*> selected;
  if (request.databases.empty()) {
    for (const auto& [name, e] : registry.databases) selected.push_back(&e);
  } else {
    for (const auto& name : request.databases) {
      auto it = registry.databases.find(name);
      if (it == registry.databases.end()) {
        return NotFound("database '" + name + "' is not in the registry " + registry.path);
      }
      selected.push_back(&it->second);
    }
  }
  FleetPlan plan;
  plan.request = request;
  if (request.by == "size") {
    PGSHIFT_RETURN_IF_ERROR(PlanBySize(selected, sizes, &plan));
    std::erase_if(plan.waves, [](const Wave& w) { return w.databases.empty(); });
    if (plan.waves.empty()) return InvalidArgument("no database falls in a wave by size");
    return plan;
  }
  std::vector<std::string> order = request.waves;
  if (order.empty()) {
    std::set<std::string> all;
    for (const auto* e : selected) {
      for (const auto& k : Keys(*e, request.by)) all.insert(k);
    }
    order.assign(all.begin(), all.end());
  }
  for (const auto& value : order) plan.waves.push_back({value, {}});
  for (const auto* e : selected) {
    const auto keys = Keys(*e, request.by);
    auto wave = std::find_if(plan.waves.begin(), plan.waves.end(), [&](const Wave& w) {
      return std::find(keys.begin(), keys.end(), w.name) != keys.end();
    });
    if (wave == plan.waves.end()) {
      plan.unplanned.push_back(e->name);
      continue;
    }
    wave->databases.push_back({e->name, e->team, e->window});
  }
  std::erase_if(plan.waves, [](const Wave& w) { return w.databases.empty(); });
  if (plan.waves.empty()) {
    return InvalidArgument("no database of the registry falls in a wave (by " + request.by +
                           "); name the waves by existing " + request.by + " values");
  }
  return plan;
}

Result<bool> WindowOpen(const inventory::Window& w, int64_t now_ms) {
  PGSHIFT_ASSIGN_OR_RETURN(int offset, OffsetMinutes(w.timezone, now_ms));
  PGSHIFT_ASSIGN_OR_RETURN(int start, Minutes(w.start));
  PGSHIFT_ASSIGN_OR_RETURN(int end, Minutes(w.end));
  const int64_t local_min = now_ms / kMsPerMinute + offset;
  const int minute =
      static_cast<int>(((local_min % kMinutesPerDay) + kMinutesPerDay) % kMinutesPerDay);
  // 1970-01-01 was a Thursday (index 4 from Sunday).
  const int64_t day_index = (local_min - minute) / kMinutesPerDay;
  auto day_ok = [&](int64_t day) {
    if (w.days.empty()) return true;
    const char* name = kDayNames[((day + 4) % 7 + 7) % 7];
    return std::find(w.days.begin(), w.days.end(), name) != w.days.end();
  };
  if (start <= end) return day_ok(day_index) && minute >= start && minute < end;
  // Spans midnight: open late on an allowed day, or early on the day after one.
  return (minute >= start && day_ok(day_index)) || (minute < end && day_ok(day_index - 1));
}

Result<int64_t> ParseSize(const std::string& text) {
  static const std::pair<const char*, int64_t> kUnits[] = {{"TB", int64_t{1} << 40},
                                                           {"GB", int64_t{1} << 30},
                                                           {"MB", int64_t{1} << 20},
                                                           {"kB", int64_t{1} << 10},
                                                           {"B", 1}};
  const auto bad = [&] {
    return InvalidArgument("'" + text + "' is not a size (e.g. 512MB, 10GB, 1.5TB)");
  };
  int64_t unit = 1;
  std::string number = text;
  for (const auto& [suffix, mult] : kUnits) {
    const std::string suf = suffix;
    if (text.size() > suf.size() && text.compare(text.size() - suf.size(), suf.size(), suf) == 0) {
      unit = mult;
      number = text.substr(0, text.size() - suf.size());
      break;
    }
  }
  if (number.empty() || number.find_first_not_of("0123456789.") != std::string::npos) return bad();
  try {
    const double v = std::stod(number);
    if (v <= 0) return bad();
    return static_cast<int64_t>(v * static_cast<double>(unit));
  } catch (const std::exception&) {
    return bad();
  }
}

std::string FormatSize(int64_t bytes) {
  static const std::pair<const char*, int64_t> kUnits[] = {{"TB", int64_t{1} << 40},
                                                           {"GB", int64_t{1} << 30},
                                                           {"MB", int64_t{1} << 20},
                                                           {"kB", int64_t{1} << 10}};
  for (const auto& [suffix, mult] : kUnits) {
    if (bytes < mult) continue;
    std::ostringstream out;
    out << static_cast<double>(bytes) / static_cast<double>(mult) << suffix;
    return out.str();
  }
  return std::to_string(bytes) + "B";
}

std::string RenderPlanText(const json& plan) {
  std::ostringstream out;
  const json req = plan.value("request", json::object());
  out << "fleet plan by " << req.value("by", "tag") << ": max " << req.value("max_concurrent", 0)
      << " at once, " << req.value("wave_concurrency", 0) << " per wave, stop after "
      << req.value("stop_after", 0) << " failure(s) or rollback(s) in a wave"
      << (req.value("approve_outside_window", false) ? ", cutovers approved outside windows" : "")
      << "\n";
  int n = 0;
  for (const auto& w : plan.value("waves", json::array())) {
    out << "wave " << ++n << " (" << w.value("name", "") << "):\n";
    for (const auto& d : w.value("databases", json::array())) {
      out << "  " << d.value("name", "");
      if (!d.value("team", "").empty()) out << "  team " << d.value("team", "");
      if (d.contains("size_bytes")) out << "  size " << FormatSize(d["size_bytes"]);
      if (d.contains("window") && d["window"].is_object()) {
        const json& win = d["window"];
        std::string days;
        for (const auto& day : win.value("days", json::array())) {
          days += (days.empty() ? "" : ",") + day.get<std::string>();
        }
        out << "  window " << (days.empty() ? "daily" : days) << " " << win.value("start", "")
            << "-" << win.value("end", "") << " " << win.value("timezone", "UTC");
      } else {
        out << "  window any time";
      }
      out << "\n";
    }
  }
  for (const auto& u : plan.value("unplanned", json::array())) {
    out << "not planned (in no wave): " << u.get<std::string>() << "\n";
  }
  for (const auto& n : plan.value("notes", json::array())) {
    out << "  " << n.get<std::string>() << "\n";
  }
  return out.str();
}

}  // namespace pgshift::fleet
