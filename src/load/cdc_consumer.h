// CdcConsumer: a real change-data-capture consumer for the tests, PostgreSQL's
// own pg_recvlogical streaming a logical replication slot (test_decoding or
// wal2json) into a file; and CheckCdc, the ledger's proof for consumers: every
// ledger row a writer saw acknowledged reached the consumer exactly once.
//
// pg_recvlogical's delivery contract (PostgreSQL 15, established by
// cdc_consumer_test): it reports to the server what it wrote every status
// interval, and as flushed (what the slot's confirmed_flush_lsn advances to)
// what it last fsynced, every fsync interval. It reports nothing more when
// its stream ends, SIGINT included. A stream started again on the slot (its
// own reconnect after a lost connection, or a new process) begins after the
// transaction confirmed last, so the changes written since the last
// confirmation arrive again: streaming is at-least-once, and a restart is
// exactly-once only when the slot had confirmed everything written before
// (WaitConfirmed). Such re-deliveries repeat the same rows; CheckCdc counts
// them as `replayed`, apart from two different rows carrying one number.
// The server keeps confirmed_flush_lsn in memory and PostgreSQL 15 writes it
// to disk only along with other slot changes, so after a server restart a slot
// may replay from much further back.
//
// pg_recvlogical is a client: like pgbench it runs as the calling user.
// Thread-safety: every method may be called from any thread; Start, Stop,
// Kill and Running wait for one another (Start until the stream is up).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/lsn.h"
#include "common/status.h"

namespace pgshift::load {

enum class CdcPlugin { kTestDecoding, kWal2Json };
const char* CdcPluginName(CdcPlugin p);

// pg_recvlogical's own defaults: what a user runs it with.
inline constexpr int kDefaultCdcStatusIntervalS = 10;
inline constexpr int kDefaultCdcFsyncIntervalS = 10;
inline constexpr int64_t kDefaultCdcStartTimeoutMs = 30000;
inline constexpr int64_t kDefaultCdcStopGraceMs = 5000;

struct CdcConsumerOptions {
  // libpq conninfo (key=value) of the database: a server or pgshift-proxy,
  // TLS parameters included. pg_recvlogical adds replication=database itself.
  std::string conninfo;
  std::string slot;
  CdcPlugin plugin = CdcPlugin::kTestDecoding;
  std::string output_file;  // the decoded changes, appended across restarts
  std::string log_file;     // pg_recvlogical's messages; empty: output_file + ".log"
  int status_interval_s = kDefaultCdcStatusIntervalS;
  int fsync_interval_s = kDefaultCdcFsyncIntervalS;
  // Off: pg_recvlogical reconnects every 5 s when its stream ends, which is
  // how a consumer survives a migration.
  bool no_loop = false;
  // More plugin options as name=value (wal2json always gets format-version=2).
  std::vector<std::string> plugin_options;
  std::string bin_dir;  // PostgreSQL client binaries; empty: DefaultPgBinDir()
  int64_t start_timeout_ms = kDefaultCdcStartTimeoutMs;
  int64_t stop_grace_ms = kDefaultCdcStopGraceMs;
};

// One INSERT into public.pgshift_ledger as the consumer received it.
struct LedgerChange {
  int64_t id = 0;  // the row's id: the same id twice is a replay, not a second row
  int writer = 0;
  int64_t n = 0;
  bool operator==(const LedgerChange&) const = default;
};

// The ledger INSERTs in `text`, pg_recvlogical output of `plugin` (test_decoding
// lines, or wal2json format-version 2 lines); everything else is skipped. Only
// whole lines count: a last line without its newline may still be being
// written, and `consumed` (when given) ends after the last newline, where the
// next call starts. A record that lost its newline (the process was killed
// between its two writes) is glued to the next record; both are read.
std::vector<LedgerChange> ParseLedgerChanges(CdcPlugin plugin, std::string_view text,
                                             size_t* consumed = nullptr);

// What pg_recvlogical's messages (run with -v) say about its streams.
struct CdcLog {
  int streams_started = 0;  // the first stream and every reconnect that got through
  int disconnects = 0;      // "disconnected; waiting 5 seconds to try again"
  std::vector<std::string> last_lines;
};
CdcLog ParseCdcLog(std::string_view text);

struct CdcCheck {
  int64_t acknowledged = 0;
  int64_t delivered = 0;  // acknowledged numbers received at least once
  int64_t lost = 0;       // acknowledged, never received
  // Numbers of the writer received more than once, acknowledged or not: a
  // consumer must not see any change twice.
  int64_t duplicated = 0;
  int64_t replayed = 0;  // of `duplicated`: only the same row again (a re-delivery)
  // Received but never acknowledged: committed while the writer lost its
  // connection (its outcome was uncertain). Not an error.
  int64_t unacknowledged_delivered = 0;
};

// Compares what writer `writer_id` saw acknowledged with what a consumer received.
CdcCheck CheckCdc(const std::vector<LedgerChange>& received, int writer_id,
                  const std::set<int64_t>& acknowledged);

class CdcConsumer {
 public:
  explicit CdcConsumer(CdcConsumerOptions options);
  ~CdcConsumer();  // stops the process
  CdcConsumer(const CdcConsumer&) = delete;
  CdcConsumer& operator=(const CdcConsumer&) = delete;

  const CdcConsumerOptions& options() const { return o_; }

  // pg_recvlogical --create-slot --if-not-exists with the plugin; --drop-slot.
  Status CreateSlot() const;
  Status DropSlot() const;

  // Starts pg_recvlogical --start and returns once it streams. When it exits
  // or does not stream within start_timeout_ms, it is stopped and the error
  // quotes its messages.
  Status Start();
  // SIGINT, then SIGKILL after stop_grace_ms (an error says it was killed).
  Status Stop();
  // SIGKILL at once: a crashed consumer.
  void Kill();
  bool Running();

  CdcLog Log() const;
  // Every ledger change received so far, by every run of this consumer's
  // output file (read incrementally).
  Result<std::vector<LedgerChange>> Changes();
  // Waits until writer `writer_id`'s `numbers` were all received; fails early
  // when pg_recvlogical is not running.
  Status WaitDelivered(int writer_id, const std::set<int64_t>& numbers, int64_t timeout_ms);

  // The slot's confirmed_flush_lsn: its next stream starts after it.
  Result<Lsn> ConfirmedFlush() const;
  // Waits until the slot confirmed `target` (e.g. pg_current_wal_lsn() once
  // the writers stopped): a restart from then on is exactly-once.
  Status WaitConfirmed(Lsn target, int64_t timeout_ms) const;

 private:
  std::string Binary() const;
  std::string LogTail() const;
  Status RunSlotCommand(const std::vector<std::string>& action) const;

  CdcConsumerOptions o_;
  std::mutex mu_;  // pid_
  pid_t pid_ = 0;
  std::mutex parse_mu_;  // the incremental read of output_file
  size_t parsed_bytes_ = 0;
  std::vector<LedgerChange> changes_;
};

}  // namespace pgshift::load
