#include "checks/parity.h"

#include <future>
#include <map>
#include <optional>
#include <thread>

#include "common/clock.h"
#include "pg/conn.h"

namespace pgshift::checks {

namespace {

struct TableSum {
  int64_t rows = 0;
  std::string checksum;
  std::string error;  // set when the table could not be read (e.g. unlogged on a standby)
};

struct SideTables {
  std::map<std::string, std::string> qualified;  // "schema.table" → quoted name
  std::map<std::string, bool> unlogged;
  // oid and relfilenode as the transaction's snapshot sees them.
  std::map<std::string, std::pair<std::string, std::string>> storage;
};

Status PinSession(PgConn& c) {
  for (const char* sql :
       {"set DateStyle = 'ISO, YMD'", "set IntervalStyle = 'postgres'", "set TimeZone = 'UTC'",
        "set extra_float_digits = 3", "set bytea_output = 'hex'", "set statement_timeout = 0",
        "set application_name = 'pgshift-parity'"}) {
    PGSHIFT_RETURN_IF_ERROR(c.Exec(sql));
  }
  return Status::OK();
}

Result<SideTables> ListTables(PgConn& c) {
  PGSHIFT_ASSIGN_OR_RETURN(
      Rows rows, c.Query("select n.nspname || '.' || c.relname as name, "
                         "quote_ident(n.nspname) || '.' || quote_ident(c.relname) as qname, "
                         "c.relpersistence = 'u' as unlogged, c.oid::text as oid, "
                         "c.relfilenode::text as filenode from pg_class c "
                         "join pg_namespace n on n.oid = c.relnamespace where c.relkind = 'r' "
                         "and n.nspname not in ('pg_catalog', 'information_schema') "
                         "and n.nspname not like 'pg_toast%' and n.nspname not like 'pg_temp%' "
                         "order by 1"));
  SideTables t;
  for (size_t i = 0; i < rows.size(); ++i) {
    t.qualified[rows.Str(i, "name")] = rows.Str(i, "qname");
    t.unlogged[rows.Str(i, "name")] = rows.Bool(i, "unlogged");
    t.storage[rows.Str(i, "name")] = {rows.Str(i, "oid"), rows.Str(i, "filenode")};
  }
  return t;
}

// Whether the table the snapshot lists was dropped or rewritten (TRUNCATE,
// a rewriting ALTER TABLE, VACUUM FULL, CLUSTER) after the snapshot: catalog
// lookups see the present, so its file is no longer the snapshot's and its
// contents at the snapshot cannot be read any more.
bool RewrittenSince(PgConn& c, const std::pair<std::string, std::string>& storage) {
  auto now = c.Query("select coalesce(pg_relation_filenode(" + QuoteLiteral(storage.first) +
                     "::oid)::text, '') as filenode");
  return now.ok() && now->Str(0, "filenode") != storage.second;
}

Finding Rewritten(const std::string& table) {
  Finding f;
  f.id = "data_parity";
  f.severity = Severity::kWarning;
  f.subject = table;
  f.value = {{"compared", false}};
  f.threshold = "equal row count and checksum";
  f.message = "table " + table +
              " was dropped or rewritten (TRUNCATE, ALTER TABLE, VACUUM FULL, "
              "CLUSTER) on the target after promotion, so its contents at promotion can no "
              "longer be read; not compared";
  f.remedy = "compare it with the application's own checks if it matters";
  return f;
}

// Adds the decimal `text` (a numeric sum of int64 hashes) to `acc`.
bool AddDecimal(const std::string& text, __int128* acc) {
  __int128 v = 0;
  size_t i = 0;
  const bool neg = !text.empty() && text[0] == '-';
  if (neg) i = 1;
  if (i >= text.size()) return false;
  for (; i < text.size(); ++i) {
    if (text[i] < '0' || text[i] > '9') return false;
    v = v * 10 + (text[i] - '0');
  }
  *acc += neg ? -v : v;
  return true;
}

std::string DecimalString(__int128 v) {
  if (v == 0) return "0";
  const bool neg = v < 0;
  std::string out;
  while (v != 0) {
    int d = static_cast<int>(v % 10);
    out.push_back(static_cast<char>('0' + (d < 0 ? -d : d)));
    v /= 10;
  }
  if (neg) out.push_back('-');
  return {out.rbegin(), out.rend()};
}

// Pauses after `worked_ms` of scanning so that scanning is `load_pct` of the time.
void Throttle(int64_t worked_ms, int load_pct, std::atomic<bool>* cancel) {
  if (load_pct >= 100 || worked_ms <= 0) return;
  int64_t pause = worked_ms * (100 - load_pct) / load_pct;
  while (pause > 0 && !(cancel && cancel->load())) {
    const int64_t step = std::min<int64_t>(pause, 50);
    std::this_thread::sleep_for(std::chrono::milliseconds(step));
    pause -= step;
  }
}

// Inside a savepoint, so a table that cannot be read (an unlogged table on a
// standby) does not abort the transaction holding the snapshot.
TableSum SumTable(PgConn& c, const std::string& qname, bool ranged, const ParityOptions& options,
                  std::atomic<bool>* cancel) {
  TableSum s;
  Status sp = c.Exec("savepoint parity_table");
  if (!sp.ok()) {
    s.error = sp.message();
    return s;
  }
  const std::string sum_sql =
      "select count(*) as n, coalesce(sum(hashtextextended(t::text, 0)), "
      "0)::text as h from " +
      qname + " t";
  int64_t pages = 0;
  if (ranged) {
    auto size = c.Query("select pg_relation_size(" + QuoteLiteral(qname) +
                        "::regclass) / current_setting('block_size')::int8 as pages");
    if (!size.ok()) {
      s.error = size.status().message();
      (void)c.Exec("rollback to savepoint parity_table");
      return s;
    }
    pages = size->Int(0, "pages");
  }
  const int64_t chunk = std::max<int64_t>(options.chunk_pages, 1);
  __int128 total = 0;
  // Ranges up to the size seen now, then one open range: rows visible to
  // the snapshot are never beyond it, and the open range catches any growth.
  for (int64_t from = 0;; from += chunk) {
    if (cancel && cancel->load()) {
      s.error = "cancelled";
      break;
    }
    const bool last = !ranged || from + chunk >= pages;
    std::string sql = sum_sql;
    if (ranged) {
      sql += " where ctid >= '(" + std::to_string(from) + ",0)'::tid";
      if (!last) sql += " and ctid < '(" + std::to_string(from + chunk) + ",0)'::tid";
    }
    const int64_t t0 = MonotonicMs();
    auto rows = c.Query(sql);
    if (!rows.ok()) {
      s.error = rows.status().message();
      break;
    }
    s.rows += rows->Int(0, "n");
    if (!AddDecimal(rows->Str(0, "h"), &total)) {
      s.error = "unexpected checksum text '" + rows->Str(0, "h") + "'";
      break;
    }
    if (last) break;
    Throttle(MonotonicMs() - t0, options.load_pct, cancel);
  }
  if (!s.error.empty()) {
    (void)c.Exec("rollback to savepoint parity_table");
    return s;
  }
  (void)c.Exec("release savepoint parity_table");
  s.checksum = DecimalString(total);
  return s;
}

// TID range scans (PostgreSQL 14+) make a page range cheap to read.
bool SupportsRanges(PgConn& c) {
  auto v = c.Query("select current_setting('server_version_num')::int as v");
  return v.ok() && v->Int(0, "v") >= 140000;
}

nlohmann::json SideJson(const std::optional<TableSum>& s) {
  if (!s) return {{"exists", false}};
  if (!s->error.empty()) return {{"exists", true}, {"error", s->error}};
  return {{"exists", true}, {"rows", s->rows}, {"checksum", s->checksum}};
}

Finding Mismatch(const std::string& table, const std::optional<TableSum>& src,
                 const std::optional<TableSum>& tgt, const std::string& why) {
  Finding f;
  f.id = "data_parity";
  f.severity = Severity::kBlocking;
  f.subject = table;
  f.value = {{"source", SideJson(src)}, {"target", SideJson(tgt)}};
  if (src && src->error.empty()) f.value["source_rows"] = src->rows;
  if (tgt && tgt->error.empty()) f.value["target_rows"] = tgt->rows;
  f.threshold = "equal row count and checksum";
  f.message = "table " + table + " differs between source and target: " + why;
  f.remedy =
      "do not finalize: investigate (the fence may not have held, or the table is "
      "UNLOGGED); roll back to the source if the target is missing data";
  return f;
}

}  // namespace

Result<std::vector<Finding>> RunDataParity(const std::string& source_conninfo,
                                           const std::string& target_conninfo,
                                           const std::string& snapshot_id,
                                           std::function<void(const ParityProgress&)> progress,
                                           std::atomic<bool>* cancel,
                                           const ParityOptions& options) {
  const int64_t started = MonotonicMs();
  PGSHIFT_ASSIGN_OR_RETURN(auto src, PgConn::Connect(source_conninfo));
  PGSHIFT_ASSIGN_OR_RETURN(auto tgt, PgConn::Connect(target_conninfo));
  PGSHIFT_RETURN_IF_ERROR(PinSession(*src).Wrap("preparing the source session"));
  PGSHIFT_RETURN_IF_ERROR(PinSession(*tgt).Wrap("preparing the target session"));
  PGSHIFT_RETURN_IF_ERROR(src->Exec("begin isolation level repeatable read read only"));
  PGSHIFT_RETURN_IF_ERROR(tgt->Exec("begin isolation level repeatable read read only"));
  if (!options.source_snapshot.empty()) {
    Status st = src->Exec("set transaction snapshot " + QuoteLiteral(options.source_snapshot));
    if (!st.ok()) {
      return FailedPrecondition("cannot import snapshot '" + options.source_snapshot +
                                "' on the source: " + st.message());
    }
  }
  if (!snapshot_id.empty()) {
    Status st = tgt->Exec("set transaction snapshot " + QuoteLiteral(snapshot_id));
    if (!st.ok()) {
      return FailedPrecondition("cannot import snapshot '" + snapshot_id +
                                "' on the target (the exporting transaction must still be open, "
                                "in the same database): " +
                                st.message());
    }
  }
  const bool src_ranged = SupportsRanges(*src), tgt_ranged = SupportsRanges(*tgt);
  PGSHIFT_ASSIGN_OR_RETURN(SideTables src_tables, ListTables(*src));
  PGSHIFT_ASSIGN_OR_RETURN(SideTables tgt_tables, ListTables(*tgt));
  std::map<std::string, bool> all;
  for (const auto& [name, q] : src_tables.qualified) all[name] = true;
  for (const auto& [name, q] : tgt_tables.qualified) all[name] = true;

  ParityProgress prog;
  prog.tables_total = static_cast<int>(all.size());
  std::vector<Finding> out;
  int matched = 0, skipped = 0, rewritten = 0;
  for (const auto& [name, unused] : all) {
    if (cancel && cancel->load()) return Aborted("data parity check cancelled");
    if (options.time_budget_ms > 0 && MonotonicMs() - started > options.time_budget_ms) {
      ++skipped;
      continue;
    }
    prog.current = name;
    if (progress) progress(prog);
    auto s_it = src_tables.qualified.find(name);
    auto t_it = tgt_tables.qualified.find(name);
    std::optional<TableSum> s, t;
    if (s_it != src_tables.qualified.end() && t_it != tgt_tables.qualified.end()) {
      auto fut = std::async(std::launch::async, [&, q = s_it->second] {
        return SumTable(*src, q, src_ranged, options, cancel);
      });
      t = SumTable(*tgt, t_it->second, tgt_ranged, options, cancel);
      s = fut.get();
    } else if (s_it != src_tables.qualified.end()) {
      s = SumTable(*src, s_it->second, src_ranged, options, cancel);
    } else {
      t = SumTable(*tgt, t_it->second, tgt_ranged, options, cancel);
    }
    if (cancel && cancel->load()) return Aborted("data parity check cancelled");
    ++prog.tables_done;
    if (s && !s->error.empty() && !src->Healthy()) return Unavailable("source lost: " + s->error);
    if (t && !t->error.empty() && !tgt->Healthy()) return Unavailable("target lost: " + t->error);
    const bool differs = !s || !t || !s->error.empty() || !t->error.empty() || s->rows != t->rows ||
                         s->checksum != t->checksum;
    if (differs && t && !snapshot_id.empty() && RewrittenSince(*tgt, tgt_tables.storage[name])) {
      ++rewritten;
      out.push_back(Rewritten(name));
    } else if (!s) {
      out.push_back(Mismatch(name, s, t, "it exists only on the target"));
    } else if (!t) {
      out.push_back(Mismatch(name, s, t, "it exists only on the source"));
    } else if (!s->error.empty() || !t->error.empty()) {
      const bool unlogged = tgt_tables.unlogged[name];
      out.push_back(
          Mismatch(name, s, t,
                   unlogged ? "it is UNLOGGED and cannot be read on the target "
                              "(its contents do not replicate)"
                            : "it could not be read: " + (s->error.empty() ? t->error : s->error)));
    } else if (s->rows != t->rows || s->checksum != t->checksum) {
      out.push_back(Mismatch(name, s, t,
                             "source has " + std::to_string(s->rows) + " rows, target " +
                                 std::to_string(t->rows) +
                                 (s->rows == t->rows ? " (same count, different contents)" : "")));
    } else {
      ++matched;
    }
  }
  prog.current.clear();
  if (progress) progress(prog);
  (void)src->Exec("commit");
  (void)tgt->Exec("commit");
  if (skipped > 0) {
    Finding f;
    f.id = "data_parity";
    f.severity = Severity::kWarning;
    f.value = {{"tables_compared", prog.tables_done}, {"tables_skipped", skipped}};
    f.threshold = {{"time_budget_ms", options.time_budget_ms}};
    f.message = "time budget ran out: " + std::to_string(skipped) + " of " +
                std::to_string(prog.tables_total) + " table(s) not compared";
    f.remedy = "run the full parity check after promotion";
    out.push_back(std::move(f));
  }
  bool any_blocking = false;
  for (const Finding& f : out) any_blocking |= f.severity == Severity::kBlocking;
  if (!any_blocking) {
    Finding ok;
    ok.id = "data_parity";
    ok.severity = Severity::kOk;
    ok.value = {{"tables_matched", matched}, {"tables_rewritten", rewritten}};
    ok.message = std::to_string(matched) + " table(s) match in row count and checksum" +
                 (snapshot_id.empty() ? "" : " (target read at snapshot " + snapshot_id + ")");
    out.push_back(std::move(ok));
  }
  return out;
}

}  // namespace pgshift::checks
