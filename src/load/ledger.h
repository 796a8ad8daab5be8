// Ledger: the proof that a migration lost nothing. Writers insert numbered
// rows, one transaction each, and remember exactly which numbers the server
// acknowledged; Check() then counts, on the new primary, every acknowledged
// number that is missing (lost) or present more than once (duplicated).
//
// A write whose COMMIT outcome is unknown (the connection broke while it was
// in flight) is counted apart as `uncertain`, never as committed.
// LedgerWriter is thread-safe (Stop/Stats from any thread).
#pragma once

#include <atomic>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"

namespace pgshift::load {

// Creates the ledger table (idempotent).
Status CreateLedgerTable(const std::string& conninfo);

struct LedgerStats {
  int64_t committed = 0;
  int64_t failed = 0;          // statement errors and refused connections
  int64_t uncertain = 0;       // connection lost with the outcome unknown
  int64_t max_latency_us = 0;  // slowest acknowledged transaction
  int64_t max_gap_us = 0;      // longest time without an acknowledgement
  std::vector<std::string> errors;  // the first few distinct error messages
};

class LedgerWriter {
 public:
  // `writer_id` distinguishes writers sharing the table.
  LedgerWriter(std::string conninfo, int writer_id, int pause_us = 2000);
  ~LedgerWriter();
  void Start();
  void Stop();
  LedgerStats Stats() const;
  std::set<int64_t> Acknowledged() const;
  int writer_id() const { return writer_id_; }

 private:
  void Run();
  void NoteError(const std::string& e);

  std::string conninfo_;
  int writer_id_;
  int pause_us_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  mutable std::mutex mu_;
  std::set<int64_t> acked_;
  LedgerStats stats_;
};

struct LedgerCheck {
  int64_t acknowledged = 0;
  int64_t found = 0;
  int64_t lost = 0;        // acknowledged, not on the server
  int64_t duplicated = 0;  // acknowledged, on the server more than once
};

// Compares what a writer saw acknowledged with what `conninfo` holds.
Result<LedgerCheck> CheckLedger(const std::string& conninfo, int writer_id,
                                const std::set<int64_t>& acknowledged);

}  // namespace pgshift::load
