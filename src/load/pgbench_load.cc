#include "load/pgbench_load.h"

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "common/os.h"
#include "common/process.h"

namespace pgshift::load {

void ParsePgbenchOutput(const std::string& out, PgbenchStats& into) {
  std::smatch m;
  if (std::regex_search(out, m, std::regex(R"(number of transactions actually processed: (\d+))"))) {
    into.transactions += std::stoll(m[1]);
  }
  if (std::regex_search(out, m, std::regex(R"(number of failed transactions: (\d+))"))) {
    into.failed += std::stoll(m[1]);
  }
  std::regex aborted(R"(client \d+ aborted[^\n]*)");
  for (std::sregex_iterator it(out.begin(), out.end(), aborted), end; it != end; ++it) {
    ++into.aborted_clients;
    ++into.failed;
    if (into.errors.size() < 5) into.errors.push_back(it->str());
  }
  if (out.find("number of transactions actually processed") == std::string::npos &&
      into.errors.size() < 5) {
    into.errors.push_back("pgbench produced no summary: " + out.substr(0, 500));
    ++into.failed;
  }
}

namespace {

// Calls `fn` with the first 7 numeric fields of every line of every log in `dir`.
template <typename Fn>
void ForEachLogLine(const std::string& dir, Fn fn) {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    std::ifstream in(e.path());
    std::string line;
    while (std::getline(in, line)) {
      std::istringstream ls(line);
      double f[7] = {0};
      for (double& v : f) ls >> v;
      fn(f);
    }
  }
}

}  // namespace

double MaxLatencyFromLogsUs(const std::string& dir) {
  // interval_start num_transactions sum_latency sum_latency_2 min_latency max_latency ...
  double worst = 0;
  ForEachLogLine(dir, [&](const double* f) { worst = std::max(worst, f[5]); });
  return worst;
}

std::pair<double, double> MaxLatencyFromTxnLogsUs(const std::string& dir) {
  // client_id transaction_no time script_no time_epoch time_us [schedule_lag]
  double worst = 0, worst_service = 0;
  ForEachLogLine(dir, [&](const double* f) {
    worst = std::max(worst, f[2]);
    worst_service = std::max(worst_service, f[2] - f[6]);
  });
  return {worst, worst_service};
}

std::vector<TxnRecord> ReadTxnLogs(const std::string& dir) {
  std::vector<TxnRecord> out;
  std::vector<std::string> dirs = {dir};
  std::error_code ec;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir, ec)) {
    if (e.is_directory()) dirs.push_back(e.path().string());
  }
  for (const auto& d : dirs) {
    ForEachLogLine(d, [&](const double* f) {
      if (f[4] <= 0) return;  // not a transaction line
      out.push_back({.end_epoch_ms = f[4] * 1000 + f[5] / 1000,
                     .latency_ms = f[2] / 1000,
                     .lag_ms = f[6] / 1000});
    });
  }
  return out;
}

Status InitPgbench(const std::string& conninfo, int scale) {
  return RunChecked(DefaultRunner(), {.argv = {"pgbench", "-i", "-q", "-s", std::to_string(scale),
                                               conninfo},
                                      .timeout_ms = 300000})
      .status()
      .Wrap("pgbench -i");
}

PgbenchLoad::~PgbenchLoad() { Stop(); }

void PgbenchLoad::Start() { thread_ = std::thread(&PgbenchLoad::Run, this); }

void PgbenchLoad::Stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

PgbenchStats PgbenchLoad::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void PgbenchLoad::Run() {
  int run = 0;
  while (!stop_) {
    const std::string dir = o_.log_dir + "/run" + std::to_string(run++);
    std::filesystem::create_directories(dir);
    std::vector<std::string> argv = {"pgbench", "-n", "-c", std::to_string(o_.clients), "-j",
                                     std::to_string(o_.threads), "-T",
                                     std::to_string(o_.chunk_seconds), "-M", o_.protocol, "-b",
                                     o_.script, "-l", "--log-prefix=" + dir + "/pgbench_log"};
    if (!o_.per_transaction_log) argv.push_back("--aggregate-interval=1");
    if (o_.rate > 0) {
      argv.push_back("-R");
      argv.push_back(std::to_string(o_.rate));
    }
    argv.push_back(o_.conninfo);
    auto r = DefaultRunner().Run({.argv = argv, .timeout_ms = (o_.chunk_seconds + 120) * 1000});
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.runs;
    if (!r.ok()) {
      ++stats_.failed;
      stats_.errors.push_back(r.status().ToString());
      continue;
    }
    ParsePgbenchOutput(r->output, stats_);
    if (o_.per_transaction_log) {
      auto [lat, service] = MaxLatencyFromTxnLogsUs(dir);
      stats_.max_latency_ms = std::max(stats_.max_latency_ms, lat / 1000.0);
      stats_.max_service_latency_ms = std::max(stats_.max_service_latency_ms, service / 1000.0);
    } else {
      stats_.max_latency_ms = std::max(stats_.max_latency_ms, MaxLatencyFromLogsUs(dir) / 1000.0);
    }
  }
}

}  // namespace pgshift::load
