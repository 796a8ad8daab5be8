#include "load/ledger.h"

#include <libpq-fe.h>

#include <map>

#include "common/clock.h"
#include "pg/conn.h"

namespace pgshift::load {

Status CreateLedgerTable(const std::string& conninfo) {
  PGSHIFT_ASSIGN_OR_RETURN(auto c, PgConn::Connect(conninfo));
  return c->Exec(
      "create table if not exists pgshift_ledger (id bigserial primary key, "
      "writer int not null, n bigint not null, at timestamptz not null default now())");
}

LedgerWriter::LedgerWriter(std::string conninfo, int writer_id, int pause_us)
    : conninfo_(std::move(conninfo)), writer_id_(writer_id), pause_us_(pause_us) {}

LedgerWriter::~LedgerWriter() { Stop(); }

void LedgerWriter::Start() { thread_ = std::thread(&LedgerWriter::Run, this); }

void LedgerWriter::Stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

LedgerStats LedgerWriter::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

std::set<int64_t> LedgerWriter::Acknowledged() const {
  std::lock_guard<std::mutex> lock(mu_);
  return acked_;
}

void LedgerWriter::NoteError(const std::string& e) {
  if (stats_.errors.size() < 5) {
    for (const auto& seen : stats_.errors) {
      if (seen == e) return;
    }
    stats_.errors.push_back(e);
  }
}

void LedgerWriter::Run() {
  PgConnPtr conn;
  int64_t n = 0;
  int64_t last_ack_us = MonotonicUs();
  while (!stop_) {
    if (!conn || PQstatus(conn.get()) != CONNECTION_OK) {
      conn.reset(PQconnectdb(conninfo_.c_str()));
      if (PQstatus(conn.get()) != CONNECTION_OK) {
        std::lock_guard<std::mutex> lock(mu_);
        ++stats_.failed;
        NoteError(std::string("connect: ") + PQerrorMessage(conn.get()));
        conn.reset();
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        continue;
      }
    }
    ++n;
    const std::string sql = "insert into pgshift_ledger (writer, n) values (" +
                            std::to_string(writer_id_) + ", " + std::to_string(n) + ")";
    const int64_t start = MonotonicUs();
    PgResultPtr res(PQexec(conn.get(), sql.c_str()));
    const int64_t end = MonotonicUs();
    std::lock_guard<std::mutex> lock(mu_);
    if (res && PQresultStatus(res.get()) == PGRES_COMMAND_OK) {
      acked_.insert(n);
      ++stats_.committed;
      stats_.max_latency_us = std::max(stats_.max_latency_us, end - start);
      stats_.max_gap_us = std::max(stats_.max_gap_us, end - last_ack_us);
      last_ack_us = end;
    } else if (PQstatus(conn.get()) != CONNECTION_OK) {
      // The server may or may not have committed it.
      ++stats_.uncertain;
      NoteError(std::string("connection lost: ") + PQerrorMessage(conn.get()));
    } else {
      ++stats_.failed;
      NoteError(res ? PQresultErrorMessage(res.get()) : PQerrorMessage(conn.get()));
    }
    if (pause_us_ > 0) std::this_thread::sleep_for(std::chrono::microseconds(pause_us_));
  }
}

Result<LedgerCheck> CheckLedger(const std::string& conninfo, int writer_id,
                                const std::set<int64_t>& acknowledged) {
  PGSHIFT_ASSIGN_OR_RETURN(auto c, PgConn::Connect(conninfo));
  PGSHIFT_ASSIGN_OR_RETURN(
      Rows rows, c->Query("select n, count(*) as c from pgshift_ledger where writer = $1 "
                          "group by n",
                          {std::to_string(writer_id)}));
  std::map<int64_t, int64_t> on_server;
  for (size_t i = 0; i < rows.size(); ++i) on_server[rows.Int(i, "n")] = rows.Int(i, "c");
  LedgerCheck out;
  out.acknowledged = static_cast<int64_t>(acknowledged.size());
  for (int64_t n : acknowledged) {
    auto it = on_server.find(n);
    if (it == on_server.end()) {
      ++out.lost;
    } else {
      ++out.found;
      if (it->second > 1) ++out.duplicated;
    }
  }
  return out;
}

}  // namespace pgshift::load
