// Data parity between the fenced source and the promoted target.
//
// Per user table (relkind 'r', including partitions; in the database named by
// the conninfos) both sides compute the row count and an order-independent
// checksum: sum(hashtextextended(row::text, 0)) over the table. That is one
// sequential scan per side with no sort and no dependence on keys (so tables
// without a primary key are covered); the 64-bit hash per row makes a
// coincidental match negligible. Both sessions pin the settings that shape
// row text (DateStyle, IntervalStyle, TimeZone, extra_float_digits,
// bytea_output) so the text is comparable. The target side runs inside
// REPEATABLE READ with SET TRANSACTION SNAPSHOT <snapshot_id> when given, so
// it sees the target exactly as it was at promotion while new writes flow.
// The source side runs in one REPEATABLE READ READ ONLY transaction.
//
// Tables are compared one at a time with both sides queried in parallel.
// On PostgreSQL 14+ each table is read in ranges of `chunk_pages` pages (TID
// range scans) and the per-range sums are added, so the scan can pause
// between ranges: with `load_pct` < 100 it sleeps after each range so that it
// works at most that share of the wall time, which keeps a parity check of a
// live target from starving production traffic.
// Thread-safe: each call uses its own connections.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "checks/finding.h"

namespace pgshift::checks {

struct ParityProgress {
  int tables_total = 0;
  int tables_done = 0;
  std::string current;  // schema.table being compared ("" when done)
};

struct ParityOptions {
  // 0 = no limit. When the budget runs out, the remaining tables are not
  // compared and a warning data_parity finding says how many were skipped
  // (the quick pre-promotion variant).
  int64_t time_budget_ms = 0;
  // Share of wall time each side may spend scanning (1-100); 100 = no pauses.
  int load_pct = 100;
  int64_t chunk_pages = 128;  // 1 MB: short bursts of work between pauses
  // A snapshot exported on the source to read it at (the source is no longer
  // frozen once reverse replication applies the target's writes); "" reads
  // the source as it is.
  std::string source_snapshot;
};

// data_parity findings: blocking per table that differs or exists on one side
// only (value: both counts and checksums); one ok summary when all match. With
// a snapshot, a table that differs because the target dropped or rewrote it
// after the snapshot (its file is no longer the snapshot's) is a warning: what
// it held at promotion cannot be read any more.
// Returns Aborted when *cancel becomes true, Unavailable when a side cannot
// be reached, FailedPrecondition when the snapshot cannot be imported.
Result<std::vector<Finding>> RunDataParity(const std::string& source_conninfo,
                                           const std::string& target_conninfo,
                                           const std::string& snapshot_id,
                                           std::function<void(const ParityProgress&)> progress,
                                           std::atomic<bool>* cancel,
                                           const ParityOptions& options = {});

}  // namespace pgshift::checks
