#include "proxy/session.h"

#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <random>

namespace pgshift::proxy {
namespace {

constexpr size_t kReadChunk = 16384;
constexpr int kLoginTimeoutSeconds = 60;

// The settings this session changed, plus the role when SET ROLE is active
// (role is not listed in pg_settings).
constexpr const char* kCaptureSql =
    "SELECT name, current_setting(name) FROM pg_catalog.pg_settings WHERE source = 'session' "
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

Session::Session(tcp::socket client, ProxyShared& shared)
    : shared_(shared),
      client_(std::move(client), shared.server_tls ? *shared.server_tls : shared.plain_ctx),
      client_out_(client_.socket().get_executor()) {
  wake_ = std::make_shared<asio::steady_timer>(client_.socket().get_executor());
}

Session::~Session() { Close(); }

std::string Session::Tag() const {
  return "session " + std::to_string(cancel_pid_) + " (" + user_ + "@" + database_ + ")";
}

void Session::Advance(SessionEvent e) {
  auto next = Transition(state_, e);
  if (!next) {
    spdlog::error("pgshift-proxy: {}: event {} is not allowed in state {}; closing", Tag(),
                  EventName(e), StateName(state_));
    next = SessionState::kClosed;
    closed_ = true;
  }
  if (route_) {
    // An upstream login counts as work in flight: a hold waits for it, so no
    // login reaches the old server once the hold is in place (and the fence).
    auto busy = [](SessionState s) {
      return s == SessionState::kActive || s == SessionState::kAuthenticating;
    };
    auto waiting = [](SessionState s) {
      return s == SessionState::kHeld || s == SessionState::kLoginHeld;
    };
    auto pre_login = [](SessionState s) {
      return s == SessionState::kStartup || s == SessionState::kAuthenticating ||
             s == SessionState::kLoginHeld;
    };
    if (busy(state_) && !busy(*next)) route_->in_transaction--;
    if (!busy(state_) && busy(*next)) route_->in_transaction++;
    if (waiting(state_) && !waiting(*next)) route_->held_sessions--;
    if (!waiting(state_) && waiting(*next)) route_->held_sessions++;
    if (*next == SessionState::kIdle && state_ == SessionState::kAuthenticating) route_->sessions++;
    if (*next == SessionState::kClosed && state_ != SessionState::kClosed && !pre_login(state_))
      route_->sessions--;
  }
  state_ = *next;
}

void Session::Close() {
  closing_ = true;
  DetachSplice();  // before the sockets close, with the kernel's counts accounted
  if (state_ != SessionState::kClosed) Advance(SessionEvent::kClose);
  closed_ = true;
  if (server_) server_->stream.Close();
  client_.Close();
  if (cancel_target_) {
    shared_.cancels.Unregister(cancel_pid_, cancel_key_);
    cancel_target_.reset();
  }
  if (member_id_ != 0) {
    route_->RemoveMember(member_id_);
    member_id_ = 0;
  }
  if (prewarmed_) {
    prewarmed_->stream.Close();
    prewarmed_.reset();
  }
  if (wake_) wake_->cancel();
}

asio::awaitable<void> Session::Run() {
  auto self = shared_from_this();
  asio::error_code ig;
  client_.socket().set_option(tcp::no_delay(true), ig);
  // Like the server's authentication_timeout: a client that never finishes its
  // startup (TLS, startup packet, upstream login) does not hold a session forever.
  auto login_deadline = std::make_shared<asio::steady_timer>(client_.socket().get_executor());
  login_deadline->expires_after(std::chrono::seconds(kLoginTimeoutSeconds));
  std::weak_ptr<Session> weak = self;
  login_deadline->async_wait([weak](asio::error_code ec) {
    auto s = weak.lock();
    if (ec || !s) return;
    if (s->state_ == SessionState::kStartup || s->state_ == SessionState::kAuthenticating) {
      spdlog::info("pgshift-proxy: closing a client that did not finish its startup in {} s",
                   kLoginTimeoutSeconds);
      s->client_.Close();
    }
  });
  bool started = co_await Startup();
  login_deadline->cancel();
  if (started) {
    auto ex = co_await asio::this_coro::executor;
    auto sc = server_;
    asio::co_spawn(
        ex, [self, sc]() -> asio::awaitable<void> { co_await self->ServerPump(sc); },
        asio::detached);
    co_await ClientPump();
  }
  Close();
}

asio::awaitable<bool> Session::FlushClient() { co_return co_await client_out_.Flush(client_); }

asio::awaitable<bool> Session::FlushServer() {
  auto sc = server_;
  if (!sc) co_return false;
  co_return co_await sc->outbox.Flush(sc->stream);
}

asio::awaitable<void> Session::WaitWake(int ms) {
  wake_->expires_after(std::chrono::milliseconds(ms));
  co_await wake_->async_wait(kNoThrow);
}

asio::awaitable<void> Session::ClientPump() {
  std::string& in = client_in_;
  size_t skip = 0;  // bytes of a streamed CopyData message still to forward
  char tmp[kReadChunk];
  while (!closed_) {
    auto [ec, n] = co_await client_.ReadSome(tmp, sizeof(tmp));
    LeaveSplice();  // whatever woke us, the kernel's part comes first
    if (ec || closed_) break;
    route_->bytes_from_clients += static_cast<int64_t>(n);
    in.append(tmp, n);
    size_t pos = 0;
    bool stop = false;
    while (pos < in.size() && !stop) {
      if (skip > 0) {
        size_t take = std::min(skip, in.size() - pos);
        server_->outbox.Append(std::string_view(in).substr(pos, take));
        pos += take;
        skip -= take;
        continue;
      }
      MessageHeader h;
      std::string err;
      DecodeStatus st = DecodeHeader(std::string_view(in).substr(pos), &h, &err);
      if (st == DecodeStatus::kNeedMoreData) break;
      if (st == DecodeStatus::kError) {
        shared_.protocol_errors++;
        co_await Refuse("08P01", "pgshift-proxy: invalid message from client: " + err);
        stop = true;
        break;
      }
      if (h.type == 'X') {
        server_->outbox.Append(TerminateMessage());
        stop = true;
        break;
      }
      if (state_ == SessionState::kIdle) {
        if ((!server_->outbox.WriteNow(server_->stream) && !co_await FlushServer()) ||
            (!BeginTransactionNow() && !co_await EnterTransaction())) {
          stop = true;
          break;
        }
      }
      if (h.type == 'd') {  // CopyData: stream it through without buffering it whole
        size_t take = std::min(h.total(), in.size() - pos);
        server_->outbox.Append(std::string_view(in).substr(pos, take));
        skip = h.total() - take;
        pos += take;
        continue;
      }
      if (in.size() - pos < h.total()) break;
      Message m{h.type, std::string_view(in).substr(pos + 5, h.length - 4), h.total()};
      if (!OnClientMessage(m)) {
        shared_.protocol_errors++;
        co_await Refuse(
            "08P01", std::string("pgshift-proxy: malformed '") + h.type + "' message from client");
        stop = true;
        break;
      }
      pos += h.total();
    }
    in.erase(0, pos);
    if (server_ && !server_->outbox.WriteNow(server_->stream) && !co_await FlushServer()) break;
    if (stop) break;
  }
  Close();
}

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
      RememberForWarmUp(m.body);
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
  while (!parse_expect_.empty() && parse_expect_.front().sync_index < rfq_seen_)
    parse_expect_.pop_front();
  if (AtBoundary() && (state_ == SessionState::kActive || state_ == SessionState::kStreaming)) {
    route_->transactions++;
    Advance(SessionEvent::kBoundaryReached);
  }
}

bool Session::OnServerMessage(const Message& m) {
  if (capture_inflight_) {
    BodyReader r(m.body);
    if (m.type == 'D') {
      int16_t n = 0;
      std::vector<std::string> cols;
      r.ReadInt16(&n);
      for (int i = 0; i < n; i++) {
        int32_t len = 0;
        std::string_view v;
        if (!r.ReadInt32(&len) || len < 0 || !r.ReadBytes(static_cast<size_t>(len), &v)) break;
        cols.emplace_back(v);
      }
      if (cols.size() == 2)
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
      return true;
    default:
      return true;
  }
}

asio::awaitable<void> Session::ServerPump(std::shared_ptr<ServerConn> sc) {
  std::string in = std::move(sc->leftover);
  sc->leftover.clear();
  size_t skip = 0;
  bool skip_forward = true;
  std::string out;
  char tmp[kReadChunk];
  bool fatal_at_boundary = false;
  while (true) {
    size_t pos = 0;
    bool capture_was = capture_inflight_;
    while (pos < in.size()) {
      if (skip > 0) {
        size_t take = std::min(skip, in.size() - pos);
        if (skip_forward) out.append(in, pos, take);
        pos += take;
        skip -= take;
        continue;
      }
      MessageHeader h;
      std::string err;
      DecodeStatus st = DecodeHeader(std::string_view(in).substr(pos), &h, &err);
      if (st == DecodeStatus::kNeedMoreData) break;
      if (st == DecodeStatus::kError) {
        spdlog::error("pgshift-proxy: {}: malformed message from upstream: {}", Tag(), err);
        Close();
        co_return;
      }
      bool inspect = capture_inflight_ || h.type == 'Z' || h.type == '1' || h.type == 'S' ||
                     h.type == 'E' || h.type == 'C' || h.type == 'W';
      if (!inspect) {
        size_t take = std::min(h.total(), in.size() - pos);
        out.append(in, pos, take);
        skip = h.total() - take;
        skip_forward = true;
        pos += take;
        continue;
      }
      if (in.size() - pos < h.total()) break;
      Message m{h.type, std::string_view(in).substr(pos + 5, h.length - 4), h.total()};
      bool forward = true;
      if (h.type == 'E' && !capture_inflight_ && state_ != SessionState::kActive &&
          state_ != SessionState::kStreaming) {
        // The server ends an idle session (e.g. a fence terminating backends): keep the
        // client, it reconnects at its next transaction.
        std::map<char, std::string> f;
        ParseErrorFields(m.body, &f);
        std::string sev = f.count('V') ? f['V'] : f['S'];
        if (sev == "FATAL" || sev == "PANIC") {
          forward = false;
          fatal_at_boundary = true;
        }
      }
      if (forward) forward = OnServerMessage(m);
      if (forward) out.append(in, pos, h.total());
      pos += h.total();
    }
    in.erase(0, pos);
    if (!out.empty() && sc == server_) {
      route_->bytes_to_clients += static_cast<int64_t>(out.size());
      client_out_.Append(out);
      out.clear();
      if (!client_out_.WriteNow(client_) && !co_await FlushClient()) {
        Close();
        co_return;
      }
    }
    out.clear();
    if (sc != server_ || closed_) co_return;
    if (!capture_was && capture_inflight_) co_await FlushServer();
    if (state_ == SessionState::kIdle && settings_dirty_ && !capture_inflight_ && !replication_ &&
        !capture_failed_ && !fatal_at_boundary) {
      StartCapture();
      co_await FlushServer();
    }
    if (in.empty() && skip == 0 && !fatal_at_boundary && CanSplice()) EnterSplice();
    auto [ec, n] = co_await sc->stream.ReadSome(tmp, sizeof(tmp));
    if (sc != server_ || closed_) co_return;
    LeaveSplice();
    if (ec) break;
    in.append(tmp, n);
  }
  // The upstream connection ended.
  if (state_ == SessionState::kIdle || state_ == SessionState::kHeld ||
      state_ == SessionState::kMigrating) {
    server_lost_ = true;
    capture_inflight_ = false;
    sc->stream.Close();
    wake_->cancel();
    spdlog::info(
        "pgshift-proxy: {}: upstream closed at a transaction boundary; the session "
        "reconnects at its next transaction",
        Tag());
    co_return;
  }
  Close();
}

}  // namespace pgshift::proxy
