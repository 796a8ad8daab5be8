#include "fleet/tz.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "common/os.h"

namespace pgshift::fleet {
namespace {

constexpr int64_t kSecondsPerDay = 86400;
constexpr int64_t kSecondsPerHour = 3600;
constexpr int64_t kDefaultRuleTimeS = 2 * kSecondsPerHour;  // POSIX: 02:00 local
constexpr size_t kHeaderSize = 44;

// One end of a DST period: month, week (5 = last) and weekday (0 = Sunday),
// at `time_s` local seconds.
struct RuleDate {
  int month = 0, week = 0, weekday = 0;
  int64_t time_s = kDefaultRuleTimeS;
};

// A footer's rule: standard offset, and a DST offset with its period when any.
struct PosixRule {
  int64_t std_off = 0;  // east of UTC
  std::optional<int64_t> dst_off;
  RuleDate start, end;
};

struct Zone {
  std::vector<int64_t> transitions;  // epoch seconds, ascending
  std::vector<int64_t> offsets;      // per transition: the offset from it on
  int64_t initial_offset = 0;        // before the first transition
  std::optional<PosixRule> footer;   // past the last transition
};

class Reader {
 public:
  explicit Reader(const std::string& s, size_t pos = 0) : s_(s), pos_(pos) {}
  bool Has(size_t n) const { return pos_ + n <= s_.size(); }
  int64_t Be(size_t n) {  // big-endian signed
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v = (v << 8) | static_cast<unsigned char>(s_[pos_ + i]);
    pos_ += n;
    if (n == 4) return static_cast<int32_t>(v);
    return static_cast<int64_t>(v);
  }
  void Skip(size_t n) { pos_ += n; }
  size_t pos() const { return pos_; }

 private:
  const std::string& s_;
  size_t pos_;
};

// [+-]hh[:mm[:ss]]
bool ParseHms(const std::string& s, size_t& i, int64_t* out) {
  int sign = 1;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) sign = s[i++] == '-' ? -1 : 1;
  int64_t parts[3] = {0, 0, 0};
  for (int p = 0; p < 3; ++p) {
    if (p > 0) {
      if (i >= s.size() || s[i] != ':') break;
      ++i;
    }
    size_t start = i;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
    if (i == start) return false;
    parts[p] = std::stoll(s.substr(start, i - start));
  }
  *out = sign * (parts[0] * kSecondsPerHour + parts[1] * 60 + parts[2]);
  return true;
}

bool SkipName(const std::string& s, size_t& i) {
  if (i < s.size() && s[i] == '<') {
    i = s.find('>', i);
    if (i == std::string::npos) return false;
    ++i;
    return true;
  }
  size_t start = i;
  while (i < s.size() && std::isalpha(static_cast<unsigned char>(s[i]))) ++i;
  return i - start >= 3;
}

bool ParseRuleDate(const std::string& s, size_t& i, RuleDate* d) {
  if (i >= s.size() || s[i] != 'M') return false;  // Jn and n: no current zone uses them
  ++i;
  int* fields[] = {&d->month, &d->week, &d->weekday};
  for (int f = 0; f < 3; ++f) {
    if (f > 0 && (i >= s.size() || s[i++] != '.')) return false;
    size_t start = i;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
    if (i == start) return false;
    *fields[f] = std::stoi(s.substr(start, i - start));
  }
  if (d->month < 1 || d->month > 12 || d->week < 1 || d->week > 5 || d->weekday > 6) return false;
  if (i < s.size() && s[i] == '/') return ParseHms(s, ++i, &d->time_s);
  return true;
}

std::optional<PosixRule> ParsePosix(const std::string& s) {
  PosixRule r;
  size_t i = 0;
  int64_t west = 0;
  if (!SkipName(s, i) || !ParseHms(s, i, &west)) return std::nullopt;
  r.std_off = -west;  // POSIX offsets count west of UTC
  if (i == s.size()) return r;
  if (!SkipName(s, i)) return std::nullopt;
  r.dst_off = r.std_off + kSecondsPerHour;
  if (i < s.size() && s[i] != ',') {
    if (!ParseHms(s, i, &west)) return std::nullopt;
    r.dst_off = -west;
  }
  if (i >= s.size() || s[i++] != ',' || !ParseRuleDate(s, i, &r.start)) return std::nullopt;
  if (i >= s.size() || s[i++] != ',' || !ParseRuleDate(s, i, &r.end)) return std::nullopt;
  if (i != s.size()) return std::nullopt;
  return r;
}

// Local midnight (as epoch-like seconds) of the rule's day in `year`.
int64_t RuleDay(int year, const RuleDate& d) {
  using namespace std::chrono;
  const sys_days first{std::chrono::year{year} / d.month / 1};
  const int first_wd = static_cast<int>(weekday{first}.c_encoding());
  int day = 1 + (d.weekday - first_wd + 7) % 7 + (d.week - 1) * 7;
  const int days_in_month = static_cast<int>(
      static_cast<unsigned>(year_month_day_last{std::chrono::year{year} / d.month / last}.day()));
  while (day > days_in_month) day -= 7;
  return (first.time_since_epoch().count() + day - 1) * kSecondsPerDay;
}

int64_t RuleOffset(const PosixRule& r, int64_t at_s) {
  if (!r.dst_off) return r.std_off;
  using namespace std::chrono;
  const sys_days local_day{days{(at_s + r.std_off) / kSecondsPerDay}};
  const int year = static_cast<int>(year_month_day{local_day}.year());
  // Each change is given in the local time in force before it.
  const int64_t start = RuleDay(year, r.start) + r.start.time_s - r.std_off;
  const int64_t end = RuleDay(year, r.end) + r.end.time_s - *r.dst_off;
  const bool dst = start < end ? (at_s >= start && at_s < end) : !(at_s >= end && at_s < start);
  return dst ? *r.dst_off : r.std_off;
}

Result<Zone> ParseTzif(const std::string& data, const std::string& zone) {
  const auto bad = [&] { return InvalidArgument("'" + zone + "' is not a readable TZif zone"); };
  if (data.size() < kHeaderSize || data.compare(0, 4, "TZif") != 0) return bad();
  const bool v2 = data[4] >= '2';
  auto counts = [&](size_t at, int64_t c[6]) {
    Reader r(data, at + 20);
    for (int i = 0; i < 6; ++i) c[i] = r.Be(4);
  };
  // isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt
  int64_t c[6];
  counts(0, c);
  size_t at = 0;
  size_t time_size = 4;
  if (v2) {
    at = kHeaderSize + c[3] * 5 + c[4] * 6 + c[5] + c[2] * 8 + c[1] + c[0];
    if (data.size() < at + kHeaderSize) return bad();
    counts(at, c);
    time_size = 8;
  }
  Reader r(data, at + kHeaderSize);
  const size_t body =
      c[3] * time_size + c[3] + c[4] * 6 + c[5] + c[2] * (time_size + 4) + c[1] + c[0];
  if (c[4] < 1 || !r.Has(body)) return bad();
  Zone z;
  for (int64_t i = 0; i < c[3]; ++i) z.transitions.push_back(r.Be(time_size));
  std::vector<int> idx;
  for (int64_t i = 0; i < c[3]; ++i) idx.push_back(static_cast<int>(r.Be(1)));
  std::vector<int64_t> utoff;
  for (int64_t i = 0; i < c[4]; ++i) {
    utoff.push_back(r.Be(4));
    r.Skip(2);  // isdst, desigidx
  }
  for (int i : idx) {
    if (i < 0 || i >= static_cast<int>(utoff.size())) return bad();
    z.offsets.push_back(utoff[i]);
  }
  z.initial_offset = utoff[0];
  r.Skip(c[5] + c[2] * (time_size + 4) + c[1] + c[0]);
  if (v2 && r.pos() < data.size() && data[r.pos()] == '\n') {
    const size_t end = data.find('\n', r.pos() + 1);
    if (end != std::string::npos) {
      const std::string footer = data.substr(r.pos() + 1, end - r.pos() - 1);
      if (!footer.empty()) {
        z.footer = ParsePosix(footer);
        if (!z.footer) {
          return InvalidArgument("zone '" + zone + "' has a rule this pgshiftd cannot read (" +
                                 footer + "); use a fixed offset like UTC+02:00");
        }
      }
    }
  }
  return z;
}

bool SafeName(const std::string& zone) {
  if (zone.empty() || zone[0] == '/' || zone.find("..") != std::string::npos) return false;
  return std::all_of(zone.begin(), zone.end(), [](char ch) {
    return std::isalnum(static_cast<unsigned char>(ch)) || ch == '/' || ch == '_' || ch == '-' ||
           ch == '+';
  });
}

}  // namespace

Result<int64_t> ZoneOffsetSeconds(const std::string& zone, int64_t at_s, const std::string& dir) {
  static std::mutex mu;
  static std::map<std::string, std::shared_ptr<const Zone>> cache;
  if (!SafeName(zone)) return InvalidArgument("'" + zone + "' is not a time zone name");
  const std::string path = dir + "/" + zone;
  std::shared_ptr<const Zone> z;
  {
    std::lock_guard lock(mu);
    if (auto it = cache.find(path); it != cache.end()) z = it->second;
  }
  if (!z) {
    auto data = ReadFile(path);
    if (!data.ok()) {
      return InvalidArgument("time zone '" + zone + "' is not in " + dir +
                             " (a tz database name like Europe/Paris, or UTC+02:00)");
    }
    PGSHIFT_ASSIGN_OR_RETURN(Zone parsed, ParseTzif(*data, zone));
    z = std::make_shared<const Zone>(std::move(parsed));
    std::lock_guard lock(mu);
    cache[path] = z;
  }
  if (z->transitions.empty() || at_s >= z->transitions.back()) {
    if (z->footer) return RuleOffset(*z->footer, at_s);
    return z->offsets.empty() ? z->initial_offset : z->offsets.back();
  }
  auto it = std::upper_bound(z->transitions.begin(), z->transitions.end(), at_s);
  if (it == z->transitions.begin()) return z->initial_offset;
  return z->offsets[it - z->transitions.begin() - 1];
}

}  // namespace pgshift::fleet
