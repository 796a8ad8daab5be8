// Session, part five: what the proxy reads from the messages it forwards —
// transaction state (Query/Sync/ReadyForQuery), named prepared statements
// (Parse/Bind/Describe/Close, DEALLOCATE), session settings (SET results,
// ParameterStatus, set_config) and their capture from the server. Same
// thread-safety as session.h: one session runs on one strand.
#include <algorithm>
#include <cctype>

#include "proxy/session.h"

namespace pgshift::proxy {
namespace {

// The settings this session changed, plus the role when SET ROLE is active
// (role is not listed in pg_settings).
// session_authorization is not in pg_settings: a SET SESSION AUTHORIZATION
// shows as a session user other than the one that logged in (which
// pg_stat_activity keeps). It comes first, since setting it resets the role.
constexpr const char* kCaptureSql =
    "SELECT 'session_authorization', session_user::text WHERE session_user <> "
    "(SELECT usename FROM pg_catalog.pg_stat_activity WHERE pid = pg_catalog.pg_backend_pid()) "
    "UNION ALL SELECT name, current_setting(name) FROM pg_catalog.pg_settings "
    "WHERE source = 'session' "
    "UNION ALL SELECT 'role', current_user::text WHERE current_user <> session_user";

// The statement name of a lone "DEALLOCATE [PREPARE] name" query, or "" (ALL is
// handled from its CommandComplete tag).
std::string DeallocatedName(std::string_view sql) {
  auto skip_space = [&](size_t i) {
    while (i < sql.size() && std::isspace(static_cast<unsigned char>(sql[i]))) i++;
    return i;
  };
  auto word = [&](size_t& i) {
    i = skip_space(i);
    std::string w;
    if (i < sql.size() && sql[i] == '"') {
      size_t end = sql.find('"', i + 1);
      if (end == std::string_view::npos) return std::string();
      w = std::string(sql.substr(i + 1, end - i - 1));
      i = end + 1;
      return w;
    }
    while (i < sql.size() && (std::isalnum(static_cast<unsigned char>(sql[i])) || sql[i] == '_'))
      w += static_cast<char>(std::tolower(static_cast<unsigned char>(sql[i++])));
    return w;
  };
  size_t i = skip_space(0);
  if (i == sql.size() || (sql[i] != 'd' && sql[i] != 'D')) return "";  // cheap exit per query
  if (word(i) != "deallocate") return "";
  std::string name = word(i);
  if (name == "prepare") name = word(i);
  i = skip_space(i);
  if (i < sql.size() && sql[i] == ';') i = skip_space(i + 1);
  if (i < sql.size() && sql[i] != '\0') return "";  // more statements: not a lone DEALLOCATE
  return name == "all" ? "" : name;
}

// True when the SQL text calls set_config(): a session setting may change without
// a SET tag or a ParameterStatus report.
bool MentionsSetConfig(std::string_view sql) {
  static constexpr std::string_view kNeedle = "set_config";
  // ASCII folding, not std::tolower: this runs on every query's text.
  auto it = std::search(sql.begin(), sql.end(), kNeedle.begin(), kNeedle.end(), [](char a, char b) {
    return (a >= 'A' && a <= 'Z' ? static_cast<char>(a + ('a' - 'A')) : a) == b;
  });
  return it != sql.end();
}

}  // namespace

bool Session::OnClientMessage(const Message& m) {
  std::string_view raw(m.body.data() - 5, m.total);
  auto ensure_prepared = [&](const std::string& name) {
    if (name.empty() || prepared_upstream_.count(name)) return;
    auto it = statements_.find(name);
    if (it == statements_.end()) return;  // unknown to us: the server answers for it
    server_->outbox.Append(it->second);
    parse_expect_.push_back({syncs_sent_, true});
    prepared_upstream_.insert(name);
  };
  switch (m.type) {
    case 'Q': {
      pending_++;
      syncs_sent_++;
      // SQL DEALLOCATE of a protocol-level statement: forget it, so a later Bind is
      // not answered by re-preparing it on a new server.
      std::string gone = DeallocatedName(m.body);
      if (!gone.empty()) {
        statements_.erase(gone);
        prepared_upstream_.erase(gone);
      }
      if (MentionsSetConfig(m.body)) settings_dirty_ = true;
      NoteStateKeywords(m.body);
      RememberForWarmUp(m.body);
      if (replication_) OnReplicationQuery(m.body);
      break;
    }
    case 'F':
      pending_++;
      syncs_sent_++;
      break;
    case 'S':
      pending_++;
      syncs_sent_++;
      batch_open_ = false;
      break;
    case 'P': {
      std::string name;
      if (!ParseStatementName(m.body, &name)) return false;
      BodyReader pr(m.body);
      std::string_view pname, ptext;
      if (pr.ReadCString(&pname) && pr.ReadCString(&ptext)) {
        if (MentionsSetConfig(ptext)) settings_dirty_ = true;  // re-read at the next boundary
        NoteStateKeywords(ptext);
        RememberForWarmUp(ptext);
      }
      if (!name.empty()) {
        statements_[name] = std::string(raw);
        prepared_upstream_.insert(name);
      } else {
        BodyReader r(m.body);
        std::string_view n, query;
        if (r.ReadCString(&n) && r.ReadCString(&query)) {
          // Erased when parsed: should it then fail, the client only loses the re-prepare.
          std::string gone = DeallocatedName(query);
          if (!gone.empty()) {
            statements_.erase(gone);
            prepared_upstream_.erase(gone);
          }
        }
      }
      parse_expect_.push_back({syncs_sent_, false});
      batch_open_ = true;
      break;
    }
    case 'B': {
      std::string stmt;
      if (!ParseBindStatement(m.body, &stmt)) return false;
      ensure_prepared(stmt);
      batch_open_ = true;
      break;
    }
    case 'D':
    case 'C': {
      char kind = 0;
      std::string name;
      if (!ParseDescribeOrClose(m.body, &kind, &name)) return false;
      if (kind == 'S') {
        if (m.type == 'D') {
          ensure_prepared(name);
        } else {
          statements_.erase(name);
          prepared_upstream_.erase(name);
        }
      }
      batch_open_ = true;
      break;
    }
    case 'E':
      batch_open_ = true;
      break;
    default:
      break;
  }
  server_->outbox.Append(raw);
  return true;
}

void Session::StartCapture() {
  capture_inflight_ = true;
  capture_failed_ = false;
  capture_rows_.clear();
  syncs_sent_++;
  server_->outbox.Append(QueryMessage(kCaptureSql));
}

void Session::RememberForWarmUp(std::string_view text) {
  constexpr size_t kMaxTexts = 16, kMaxLength = 4096;
  if (warm_texts_.size() >= kMaxTexts) return;
  if (!text.empty() && text.back() == '\0') text.remove_suffix(1);
  if (text.empty() || text.size() > kMaxLength) return;
  for (const auto& t : warm_texts_)
    if (t == text) return;
  warm_texts_.emplace_back(text);
}

void Session::OnReadyForQuery(char status) {
  rfq_seen_++;
  if (pending_ > 0) pending_--;
  txn_status_ = status;
  if (replication_) OnReplicationCommandDone();
  while (!parse_expect_.empty() && parse_expect_.front().sync_index < rfq_seen_)
    parse_expect_.pop_front();
  if (AtBoundary() && (state_ == SessionState::kActive || state_ == SessionState::kStreaming)) {
    CountTransaction();
    Advance(SessionEvent::kBoundaryReached);
    // A session a hold waits for (uncarriable: wait) looks again at what it holds now.
    if (uncarriable_id_ != 0 && watch_timer_ && route_->held()) watch_timer_->cancel();
  }
}

bool Session::OnServerMessage(const Message& m) {
  // What a client that takes this backend from the pool is told at its login.
  if (m.type == 'S' && server_) NoteParameterStatus(m.body, &server_->parameters);
  if (probe_inflight_) {
    OnProbeMessage(m);
    return false;
  }
  if (capture_inflight_) {
    if (m.type == 'D') {
      std::vector<std::string> cols;
      if (ParseDataRow(m.body, &cols) && cols.size() == 2)
        capture_rows_.emplace_back(cols[0], cols[1]);
      else
        capture_failed_ = true;
    } else if (m.type == 'E') {
      capture_failed_ = true;
    } else if (m.type == 'Z') {
      rfq_seen_++;
      while (!parse_expect_.empty() && parse_expect_.front().sync_index < rfq_seen_)
        parse_expect_.pop_front();
      capture_inflight_ = false;
      if (!capture_failed_) {
        settings_ = capture_rows_;
        settings_dirty_ = false;
      }
      wake_->cancel();
    }
    return false;
  }
  switch (m.type) {
    case 'Z':
      if (m.body.size() != 1) return true;
      OnReadyForQuery(m.body[0]);
      return true;
    case '1':
      if (!parse_expect_.empty()) {
        bool injected = parse_expect_.front().injected;
        parse_expect_.pop_front();
        if (injected) return false;
      }
      return true;
    case 'S':
      // A report of the server's own state (a promotion turns in_hot_standby
      // off on every session) changes nothing the session must carry.
      if (!ReportsServerState(m.body)) {
        settings_dirty_ = true;
        capture_failed_ = false;
      }
      return true;
    case 'E':
      route_->errors++;
      txn_failed_ = true;
      copy_out_open_ = false;
      return true;
    case 'C': {
      std::string_view tag = m.body;
      if (!tag.empty() && tag.back() == '\0') tag.remove_suffix(1);
      if (tag == "SET" || tag == "RESET" || tag == "DISCARD ALL") {
        settings_dirty_ = true;
        capture_failed_ = false;
      }
      if (tag == "DISCARD ALL" || tag == "DEALLOCATE ALL") {
        statements_.clear();
        prepared_upstream_.clear();
      }
      return true;
    }
    case 'W':
      if (state_ == SessionState::kActive) Advance(SessionEvent::kCopyBothStarted);
      copy_out_open_ = true;
      return true;
    case 'c':  // CopyDone: the server sends no more CopyData
      copy_out_open_ = false;
      return true;
    default:
      return true;
  }
}

}  // namespace pgshift::proxy
