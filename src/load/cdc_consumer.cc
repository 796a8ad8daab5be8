#include "load/cdc_consumer.h"

#include <signal.h>

#include <charconv>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "common/clock.h"
#include "common/os.h"
#include "common/process.h"
#include "pg/conn.h"

namespace pgshift::load {
namespace {

constexpr std::string_view kLedgerSchema = "public";
constexpr std::string_view kLedgerTable = "pgshift_ledger";
// test_decoding: "table public.pgshift_ledger: INSERT: id[bigint]:5 writer[integer]:1 ..."
constexpr std::string_view kTestDecodingInsert = "table public.pgshift_ledger: INSERT: ";
// wal2json format-version 2: every record is one object opening with its action.
constexpr std::string_view kWal2JsonRecord = "{\"action\":";
// pg_recvlogical -v messages.
constexpr std::string_view kStreamStarted = "streaming initiated";
constexpr std::string_view kDisconnected = "disconnected; waiting";
constexpr size_t kLogTailLines = 10;
constexpr int64_t kPollMs = 100;
constexpr int64_t kSlotCommandTimeoutMs = 60000;

// The pieces of `line` starting at each occurrence of `marker`, each up to the next.
std::vector<std::string_view> SplitAtMarker(std::string_view line, std::string_view marker) {
  std::vector<std::string_view> out;
  size_t pos = line.find(marker);
  while (pos != std::string_view::npos) {
    const size_t next = line.find(marker, pos + marker.size());
    out.push_back(line.substr(pos, next == std::string_view::npos ? next : next - pos));
    pos = next;
  }
  return out;
}

std::optional<int64_t> ToInt(std::string_view s) {
  int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

// A ledger change when the record held all three ledger columns.
std::optional<LedgerChange> LedgerRow(std::optional<int64_t> id, std::optional<int64_t> writer,
                                      std::optional<int64_t> n) {
  if (!id || !writer || !n) return std::nullopt;
  return LedgerChange{.id = *id, .writer = static_cast<int>(*writer), .n = *n};
}

// The ledger columns of one test_decoding record. Columns read
// `name[type]:value`, space separated; a quoted value ('' for a quote) may
// hold spaces. A record torn after its ledger columns still counts.
std::optional<LedgerChange> ParseTestDecodingInsert(std::string_view rec) {
  rec.remove_prefix(kTestDecodingInsert.size());
  std::optional<int64_t> id, writer, n;
  while (!rec.empty()) {
    const size_t open = rec.find('[');
    const size_t close = rec.find("]:", open);
    if (open == std::string_view::npos || close == std::string_view::npos) break;
    const std::string_view name = rec.substr(0, open);
    rec.remove_prefix(close + 2);
    size_t end = 0;
    if (!rec.empty() && rec[0] == '\'') {
      for (end = 1; end < rec.size(); ++end) {
        if (rec[end] != '\'') continue;
        if (end + 1 < rec.size() && rec[end + 1] == '\'') {
          ++end;
          continue;
        }
        break;
      }
      if (end == rec.size()) break;  // torn inside the quoted value
      ++end;
    } else {
      end = std::min(rec.find(' '), rec.size());
    }
    const std::string_view value = rec.substr(0, end);
    if (name == "id") id = ToInt(value);
    if (name == "writer") writer = ToInt(value);
    if (name == "n") n = ToInt(value);
    rec.remove_prefix(end);
    if (!rec.empty() && rec[0] == ' ') rec.remove_prefix(1);
  }
  return LedgerRow(id, writer, n);
}

// `key` of object `j` when it is a string, else "".
std::string StringField(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

std::optional<LedgerChange> ParseWal2JsonInsert(std::string_view rec) {
  const auto j = nlohmann::json::parse(rec, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || StringField(j, "action") != "I" ||
      StringField(j, "schema") != kLedgerSchema || StringField(j, "table") != kLedgerTable) {
    return std::nullopt;
  }
  auto columns = j.find("columns");
  if (columns == j.end() || !columns->is_array()) return std::nullopt;
  std::optional<int64_t> id, writer, n;
  for (const auto& c : *columns) {
    if (!c.is_object()) continue;
    auto value = c.find("value");
    if (value == c.end() || !value->is_number_integer()) continue;
    const std::string name = StringField(c, "name");
    if (name == "id") id = value->get<int64_t>();
    if (name == "writer") writer = value->get<int64_t>();
    if (name == "n") n = value->get<int64_t>();
  }
  return LedgerRow(id, writer, n);
}

}  // namespace

const char* CdcPluginName(CdcPlugin p) {
  return p == CdcPlugin::kWal2Json ? "wal2json" : "test_decoding";
}

std::vector<LedgerChange> ParseLedgerChanges(CdcPlugin plugin, std::string_view text,
                                             size_t* consumed) {
  const size_t whole = text.rfind('\n') == std::string_view::npos ? 0 : text.rfind('\n') + 1;
  if (consumed) *consumed = whole;
  const std::string_view marker =
      plugin == CdcPlugin::kWal2Json ? kWal2JsonRecord : kTestDecodingInsert;
  std::vector<LedgerChange> out;
  size_t start = 0;
  while (start < whole) {
    const size_t nl = text.find('\n', start);
    for (std::string_view rec : SplitAtMarker(text.substr(start, nl - start), marker)) {
      auto change =
          plugin == CdcPlugin::kWal2Json ? ParseWal2JsonInsert(rec) : ParseTestDecodingInsert(rec);
      if (change) out.push_back(*change);
    }
    start = nl + 1;
  }
  return out;
}

CdcLog ParseCdcLog(std::string_view text) {
  CdcLog log;
  size_t start = 0;
  while (start < text.size()) {
    size_t nl = text.find('\n', start);
    if (nl == std::string_view::npos) nl = text.size();
    const std::string_view line = text.substr(start, nl - start);
    start = nl + 1;
    if (line.empty()) continue;
    if (line.find(kStreamStarted) != std::string_view::npos) ++log.streams_started;
    if (line.find(kDisconnected) != std::string_view::npos) ++log.disconnects;
    log.last_lines.emplace_back(line);
    if (log.last_lines.size() > kLogTailLines) log.last_lines.erase(log.last_lines.begin());
  }
  return log;
}

CdcCheck CheckCdc(const std::vector<LedgerChange>& received, int writer_id,
                  const std::set<int64_t>& acknowledged) {
  std::map<int64_t, std::vector<int64_t>> ids_by_n;
  for (const auto& c : received) {
    if (c.writer == writer_id) ids_by_n[c.n].push_back(c.id);
  }
  CdcCheck out;
  out.acknowledged = static_cast<int64_t>(acknowledged.size());
  for (const auto& [n, ids] : ids_by_n) {
    if (acknowledged.count(n)) {
      ++out.delivered;
    } else {
      ++out.unacknowledged_delivered;
    }
    if (ids.size() > 1) {
      ++out.duplicated;
      if (std::set<int64_t>(ids.begin(), ids.end()).size() == 1) ++out.replayed;
    }
  }
  out.lost = out.acknowledged - out.delivered;
  return out;
}

CdcConsumer::CdcConsumer(CdcConsumerOptions options) : o_(std::move(options)) {
  if (o_.log_file.empty()) o_.log_file = o_.output_file + ".log";
}

CdcConsumer::~CdcConsumer() { (void)Stop(); }

std::string CdcConsumer::Binary() const {
  return (o_.bin_dir.empty() ? DefaultPgBinDir() : o_.bin_dir) + "/pg_recvlogical";
}

Status CdcConsumer::RunSlotCommand(const std::vector<std::string>& action) const {
  std::vector<std::string> argv = {Binary(), "-d", o_.conninfo, "-S", o_.slot};
  argv.insert(argv.end(), action.begin(), action.end());
  return RunChecked(DefaultRunner(), {.argv = argv, .timeout_ms = kSlotCommandTimeoutMs})
      .status()
      .Wrap("slot " + o_.slot);
}

Status CdcConsumer::CreateSlot() const {
  return RunSlotCommand({"--create-slot", "--if-not-exists", "-P", CdcPluginName(o_.plugin)});
}

Status CdcConsumer::DropSlot() const { return RunSlotCommand({"--drop-slot"}); }

std::string CdcConsumer::LogTail() const {
  std::string tail;
  for (const auto& line : Log().last_lines) tail += "\n  " + line;
  return tail.empty() ? " (no messages)" : tail;
}

Status CdcConsumer::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (pid_ > 0 && !ChildExited(pid_)) {
    return FailedPrecondition("pg_recvlogical already streams slot " + o_.slot);
  }
  pid_ = 0;
  std::vector<std::string> argv = {Binary(),
                                   "--start",
                                   "-v",
                                   "-d",
                                   o_.conninfo,
                                   "-S",
                                   o_.slot,
                                   "-f",
                                   o_.output_file,
                                   "--status-interval=" + std::to_string(o_.status_interval_s),
                                   "--fsync-interval=" + std::to_string(o_.fsync_interval_s)};
  if (o_.no_loop) argv.push_back("--no-loop");
  if (o_.plugin == CdcPlugin::kWal2Json) argv.insert(argv.end(), {"-o", "format-version=2"});
  for (const auto& opt : o_.plugin_options) argv.insert(argv.end(), {"-o", opt});
  const int streams_before = Log().streams_started;
  PGSHIFT_ASSIGN_OR_RETURN(pid_, DefaultRunner().Spawn({.argv = argv, .output_file = o_.log_file}));
  const int64_t deadline = MonotonicMs() + o_.start_timeout_ms;
  while (Log().streams_started <= streams_before) {
    if (ChildExited(pid_)) {
      pid_ = 0;
      return Unavailable("pg_recvlogical exited before streaming slot " + o_.slot + ":" +
                         LogTail());
    }
    if (MonotonicMs() > deadline) {
      StopChild(pid_, SIGKILL, o_.stop_grace_ms);
      pid_ = 0;
      return Timeout("pg_recvlogical did not stream slot " + o_.slot + " within " +
                     std::to_string(o_.start_timeout_ms) + " ms:" + LogTail());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(kPollMs));
  }
  return Status::OK();
}

Status CdcConsumer::Stop() {
  std::lock_guard<std::mutex> lock(mu_);
  if (pid_ <= 0) return Status::OK();
  const bool clean = StopChild(pid_, SIGINT, o_.stop_grace_ms);
  pid_ = 0;
  if (!clean) {
    return Internal("pg_recvlogical (slot " + o_.slot + ") ignored SIGINT for " +
                    std::to_string(o_.stop_grace_ms) + " ms and was killed");
  }
  return Status::OK();
}

void CdcConsumer::Kill() {
  std::lock_guard<std::mutex> lock(mu_);
  if (pid_ <= 0) return;
  StopChild(pid_, SIGKILL, o_.stop_grace_ms);
  pid_ = 0;
}

bool CdcConsumer::Running() {
  std::lock_guard<std::mutex> lock(mu_);
  if (pid_ > 0 && ChildExited(pid_)) pid_ = 0;
  return pid_ > 0;
}

CdcLog CdcConsumer::Log() const {
  auto text = ReadFile(o_.log_file);
  return text.ok() ? ParseCdcLog(*text) : CdcLog{};
}

Result<std::vector<LedgerChange>> CdcConsumer::Changes() {
  std::lock_guard<std::mutex> lock(parse_mu_);
  // pg_recvlogical creates its output file with the first change.
  if (!PathExists(o_.output_file)) return changes_;
  std::ifstream in(o_.output_file, std::ios::binary);
  if (!in) return Internal("cannot read " + o_.output_file);
  in.seekg(static_cast<std::streamoff>(parsed_bytes_));
  const std::string fresh((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t consumed = 0;
  for (const auto& c : ParseLedgerChanges(o_.plugin, fresh, &consumed)) changes_.push_back(c);
  parsed_bytes_ += consumed;
  return changes_;
}

Status CdcConsumer::WaitDelivered(int writer_id, const std::set<int64_t>& numbers,
                                  int64_t timeout_ms) {
  const int64_t deadline = MonotonicMs() + timeout_ms;
  while (true) {
    PGSHIFT_ASSIGN_OR_RETURN(auto changes, Changes());
    std::set<int64_t> missing = numbers;
    for (const auto& c : changes) {
      if (c.writer == writer_id) missing.erase(c.n);
    }
    if (missing.empty()) return Status::OK();
    const std::string progress = std::to_string(numbers.size() - missing.size()) + " of " +
                                 std::to_string(numbers.size()) + " rows of writer " +
                                 std::to_string(writer_id) +
                                 " (first missing: " + std::to_string(*missing.begin()) + ")";
    if (!Running()) {
      return FailedPrecondition("pg_recvlogical (slot " + o_.slot + ") is not running; received " +
                                progress + ":" + LogTail());
    }
    if (MonotonicMs() > deadline) {
      return Timeout("the consumer of slot " + o_.slot + " received " + progress + " within " +
                     std::to_string(timeout_ms) + " ms:" + LogTail());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(kPollMs));
  }
}

Result<Lsn> CdcConsumer::ConfirmedFlush() const {
  PGSHIFT_ASSIGN_OR_RETURN(auto conn, PgConn::Connect(o_.conninfo));
  // No parameters: a replication=database connection takes simple queries only.
  PGSHIFT_ASSIGN_OR_RETURN(Rows rows, conn->Query("select confirmed_flush_lsn::text as lsn from "
                                                  "pg_replication_slots where slot_name = " +
                                                  QuoteLiteral(o_.slot)));
  if (rows.empty()) return NotFound("no replication slot " + o_.slot);
  return Lsn::Parse(rows.Str(0, "lsn"));
}

Status CdcConsumer::WaitConfirmed(Lsn target, int64_t timeout_ms) const {
  const int64_t deadline = MonotonicMs() + timeout_ms;
  std::string last;
  while (MonotonicMs() <= deadline) {
    auto confirmed = ConfirmedFlush();
    if (confirmed.ok() && *confirmed >= target) return Status::OK();
    last = confirmed.ok() ? confirmed->ToString() : confirmed.status().ToString();
    std::this_thread::sleep_for(std::chrono::milliseconds(kPollMs));
  }
  return Timeout("slot " + o_.slot + " did not confirm " + target.ToString() + " within " +
                 std::to_string(timeout_ms) + " ms (last: " + last + "):" + LogTail());
}

}  // namespace pgshift::load
