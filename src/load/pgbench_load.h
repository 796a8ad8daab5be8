// PgbenchLoad: real pgbench traffic for the duration of a migration, run in
// short back-to-back chunks (pgbench prints its summary only when a run ends)
// and summed: transactions, failures, aborted clients and the worst
// per-interval maximum latency from pgbench's aggregated log.
// Thread-safe: Start/Stop/Stats from any thread.
#pragma once

#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"

namespace pgshift::load {

struct PgbenchOptions {
  std::string conninfo;      // libpq conninfo (passed as the dbname argument)
  int clients = 4;
  int threads = 2;
  int chunk_seconds = 3;
  std::string protocol = "simple";  // simple | extended | prepared
  std::string script = "tpcb-like"; // -b builtin
  int rate = 0;                     // -R tps (0 = as fast as possible)
  std::string log_dir;              // for pgbench's logs (required)
  // Per-transaction logs instead of 1 s aggregates: also yields the service
  // latency (without -R schedule lag) of the slowest transaction.
  bool per_transaction_log = false;
};

struct PgbenchStats {
  int64_t transactions = 0;
  int64_t failed = 0;           // failed transactions + transactions of aborted clients
  int64_t aborted_clients = 0;
  int64_t runs = 0;
  double max_latency_ms = 0;          // as pgbench defines it (includes -R schedule lag)
  double max_service_latency_ms = 0;  // start to end of the slowest transaction (per-txn logs)
  std::vector<std::string> errors;
};

// Parses one pgbench run's output into `into` (exposed for unit tests).
void ParsePgbenchOutput(const std::string& out, PgbenchStats& into);
// Largest max_latency (µs) in pgbench --aggregate-interval logs under `dir`.
double MaxLatencyFromLogsUs(const std::string& dir);
// {max latency, max latency minus schedule lag} (µs) from per-transaction logs.
std::pair<double, double> MaxLatencyFromTxnLogsUs(const std::string& dir);

// One line of a per-transaction log.
struct TxnRecord {
  double end_epoch_ms = 0;  // when the transaction ended
  double latency_ms = 0;    // from its scheduled start (includes -R schedule lag)
  double lag_ms = 0;        // -R schedule lag
};
// Every transaction of the per-transaction logs under `dir` and its
// subdirectories (one per pgbench run), in no particular order.
std::vector<TxnRecord> ReadTxnLogs(const std::string& dir);

class PgbenchLoad {
 public:
  explicit PgbenchLoad(PgbenchOptions o) : o_(std::move(o)) {}
  ~PgbenchLoad();
  void Start();
  void Stop();  // waits for the running chunk to end
  PgbenchStats Stats() const;

 private:
  void Run();
  PgbenchOptions o_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  mutable std::mutex mu_;
  PgbenchStats stats_;
};

// pgbench -i on `conninfo` with the given scale.
Status InitPgbench(const std::string& conninfo, int scale);

}  // namespace pgshift::load
