#include "proxy/protocol.h"

#include <cctype>
#include <cstring>

namespace pgshift::proxy {
namespace {

uint32_t LoadBe32(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return (uint32_t{u[0]} << 24) | (uint32_t{u[1]} << 16) | (uint32_t{u[2]} << 8) | uint32_t{u[3]};
}

}  // namespace

DecodeStatus DecodeHeader(std::string_view buf, MessageHeader* out, std::string* error) {
  if (buf.size() < 5) return DecodeStatus::kNeedMoreData;
  out->type = buf[0];
  out->length = LoadBe32(buf.data() + 1);
  if (out->length < 4) {
    *error = "invalid message length " + std::to_string(out->length) + " for message type '" +
             std::string(1, out->type) + "' (must be at least 4)";
    return DecodeStatus::kError;
  }
  if (out->length > kMaxMessage) {
    *error = "message length " + std::to_string(out->length) + " exceeds the 1 GiB limit";
    return DecodeStatus::kError;
  }
  return DecodeStatus::kOk;
}

DecodeStatus DecodeMessage(std::string_view buf, Message* out, std::string* error) {
  MessageHeader h;
  DecodeStatus st = DecodeHeader(buf, &h, error);
  if (st != DecodeStatus::kOk) return st;
  if (buf.size() < h.total()) return DecodeStatus::kNeedMoreData;
  out->type = h.type;
  out->body = buf.substr(5, h.length - 4);
  out->total = h.total();
  return DecodeStatus::kOk;
}

std::string StartupPacket::Param(const std::string& key) const {
  for (const auto& [k, v] : params)
    if (k == key) return v;
  return "";
}

DecodeStatus DecodeStartup(std::string_view buf, StartupPacket* out, std::string* error) {
  // The length alone is checked first, as the server does: a client that
  // sends 4 bytes of garbage (e.g. a Terminate) is not left waiting.
  if (buf.size() < 4) return DecodeStatus::kNeedMoreData;
  uint32_t len = LoadBe32(buf.data());
  if (len < 8 || len > kMaxStartupPacket) {
    *out = StartupPacket{};
    out->framing_error = true;
    *error = "invalid length of startup packet: " + std::to_string(len);
    return DecodeStatus::kError;
  }
  if (buf.size() < len) return DecodeStatus::kNeedMoreData;  // len >= 8
  *out = StartupPacket{};
  out->total = len;
  out->protocol = static_cast<int32_t>(LoadBe32(buf.data() + 4));
  std::string_view body = buf.substr(8, len - 8);
  switch (out->protocol) {
    case kSslRequestCode:
    case kGssEncRequestCode:
      if (len != 8) {
        out->framing_error = true;
        *error = "invalid length of encryption request packet";
        return DecodeStatus::kError;
      }
      out->kind = out->protocol == kSslRequestCode ? StartupPacket::Kind::kSslRequest
                                                   : StartupPacket::Kind::kGssEncRequest;
      return DecodeStatus::kOk;
    case kCancelRequestCode:
      if (len != 16) {
        out->framing_error = true;
        *error = "invalid length of cancel request packet";
        return DecodeStatus::kError;
      }
      out->kind = StartupPacket::Kind::kCancel;
      out->cancel_pid = LoadBe32(body.data());
      out->cancel_key = LoadBe32(body.data() + 4);
      return DecodeStatus::kOk;
    default:
      break;
  }
  if ((out->protocol >> 16) != 3) {
    *error = "unsupported frontend protocol " + std::to_string(out->protocol >> 16) + "." +
             std::to_string(out->protocol & 0xffff) + ": pgshift-proxy speaks protocol 3.0";
    return DecodeStatus::kError;
  }
  out->kind = StartupPacket::Kind::kStartup;
  BodyReader r(body);
  while (true) {
    std::string_view key;
    if (!r.ReadCString(&key)) {
      *error = "startup packet is not terminated";
      return DecodeStatus::kError;
    }
    if (key.empty()) break;
    std::string_view value;
    if (!r.ReadCString(&value)) {
      *error = "startup packet has no value for parameter \"" + std::string(key) + "\"";
      return DecodeStatus::kError;
    }
    out->params.emplace_back(std::string(key), std::string(value));
  }
  if (!r.AtEnd()) {
    *error = "startup packet has bytes after its terminator";
    return DecodeStatus::kError;
  }
  return DecodeStatus::kOk;
}

bool BodyReader::ReadInt32(int32_t* v) {
  if (body_.size() - pos_ < 4) return false;
  *v = static_cast<int32_t>(LoadBe32(body_.data() + pos_));
  pos_ += 4;
  return true;
}

bool BodyReader::ReadInt16(int16_t* v) {
  if (body_.size() - pos_ < 2) return false;
  const auto* u = reinterpret_cast<const unsigned char*>(body_.data() + pos_);
  *v = static_cast<int16_t>((u[0] << 8) | u[1]);
  pos_ += 2;
  return true;
}

bool BodyReader::ReadByte(char* v) {
  if (pos_ >= body_.size()) return false;
  *v = body_[pos_++];
  return true;
}

bool BodyReader::ReadCString(std::string_view* v) {
  size_t end = body_.find('\0', pos_);
  if (end == std::string_view::npos) return false;
  *v = body_.substr(pos_, end - pos_);
  pos_ = end + 1;
  return true;
}

bool BodyReader::ReadBytes(size_t n, std::string_view* v) {
  if (body_.size() - pos_ < n) return false;
  *v = body_.substr(pos_, n);
  pos_ += n;
  return true;
}

bool ParseStatementName(std::string_view body, std::string* name) {
  BodyReader r(body);
  std::string_view n, query;
  if (!r.ReadCString(&n) || !r.ReadCString(&query)) return false;
  int16_t nparams = 0;
  if (!r.ReadInt16(&nparams) || nparams < 0) return false;
  std::string_view types;
  if (!r.ReadBytes(static_cast<size_t>(nparams) * 4, &types)) return false;
  *name = std::string(n);
  return true;
}

bool ParseBindStatement(std::string_view body, std::string* statement) {
  BodyReader r(body);
  std::string_view portal, stmt;
  if (!r.ReadCString(&portal) || !r.ReadCString(&stmt)) return false;
  *statement = std::string(stmt);
  return true;
}

bool ParseDescribeOrClose(std::string_view body, char* kind, std::string* name) {
  BodyReader r(body);
  std::string_view n;
  if (!r.ReadByte(kind) || (*kind != 'S' && *kind != 'P') || !r.ReadCString(&n)) return false;
  *name = std::string(n);
  return true;
}

bool ReportsServerState(std::string_view parameter_status_body) {
  BodyReader r(parameter_status_body);
  std::string_view name;
  if (!r.ReadCString(&name)) return false;
  return name == "in_hot_standby" || name == "server_version" || name == "server_encoding" ||
         name == "integer_datetimes";
}

bool ParseStartReplicationSlot(std::string_view sql, std::string* slot) {
  size_t i = 0;
  auto lower = [](char c) {
    return static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  };
  // The next keyword or identifier: unquoted ones folded to lower case,
  // quoted ones as written ("" is a quote). Empty at the end or on other input.
  auto token = [&]() -> std::string {
    while (i < sql.size() && std::isspace(static_cast<unsigned char>(sql[i]))) i++;
    std::string t;
    if (i < sql.size() && sql[i] == '"') {
      for (i++; i < sql.size(); i++) {
        if (sql[i] != '"') {
          t += sql[i];
        } else if (i + 1 < sql.size() && sql[i + 1] == '"') {
          t += '"';
          i++;
        } else {
          i++;
          return t;
        }
      }
      return "";  // unterminated
    }
    while (i < sql.size() &&
           (std::isalnum(static_cast<unsigned char>(sql[i])) || sql[i] == '_' || sql[i] == '$'))
      t += lower(sql[i++]);
    return t;
  };
  if (token() != "start_replication" || token() != "slot") return false;
  std::string name = token();
  if (name.empty() || token() != "logical") return false;
  *slot = std::move(name);
  return true;
}

bool ParseErrorFields(std::string_view body, std::map<char, std::string>* fields) {
  BodyReader r(body);
  while (true) {
    char code = 0;
    if (!r.ReadByte(&code)) return false;
    if (code == '\0') return true;
    std::string_view v;
    if (!r.ReadCString(&v)) return false;
    (*fields)[code] = std::string(v);
  }
}

bool ParseDataRow(std::string_view body, std::vector<std::string>* columns) {
  BodyReader r(body);
  int16_t n = 0;
  if (!r.ReadInt16(&n) || n < 0) return false;
  columns->clear();
  for (int i = 0; i < n; i++) {
    int32_t len = 0;
    std::string_view v;
    if (!r.ReadInt32(&len)) return false;
    if (len >= 0 && !r.ReadBytes(static_cast<size_t>(len), &v)) return false;
    columns->emplace_back(len >= 0 ? v : std::string_view());
  }
  return true;
}

bool IsFatalError(std::string_view error_body) {
  std::map<char, std::string> f;
  ParseErrorFields(error_body, &f);
  // 'V' is the untranslated severity (9.6+); 'S' may be localized.
  const std::string& sev = f.count('V') ? f['V'] : f['S'];
  return sev == "FATAL" || sev == "PANIC";
}

void AppendInt64(std::string* out, int64_t v) {
  AppendInt32(out, static_cast<int32_t>(static_cast<uint64_t>(v) >> 32));
  AppendInt32(out, static_cast<int32_t>(static_cast<uint64_t>(v) & 0xffffffffu));
}

void AppendInt32(std::string* out, int32_t v) {
  uint32_t u = static_cast<uint32_t>(v);
  char b[4] = {static_cast<char>(u >> 24), static_cast<char>(u >> 16), static_cast<char>(u >> 8),
               static_cast<char>(u)};
  out->append(b, 4);
}

void AppendInt16(std::string* out, int16_t v) {
  uint16_t u = static_cast<uint16_t>(v);
  char b[2] = {static_cast<char>(u >> 8), static_cast<char>(u)};
  out->append(b, 2);
}

std::string EncodeMessage(char type, std::string_view body) {
  std::string out;
  out.reserve(5 + body.size());
  out.push_back(type);
  AppendInt32(&out, static_cast<int32_t>(body.size() + 4));
  out.append(body);
  return out;
}

namespace {
void AppendCString(std::string* out, std::string_view s) {
  out->append(s);
  out->push_back('\0');
}
}  // namespace

std::string ErrorResponse(std::string_view severity, std::string_view sqlstate,
                          std::string_view message, std::string_view detail) {
  std::string body;
  body.push_back('S');
  AppendCString(&body, severity);
  body.push_back('V');
  AppendCString(&body, severity);
  body.push_back('C');
  AppendCString(&body, sqlstate);
  body.push_back('M');
  AppendCString(&body, message);
  if (!detail.empty()) {
    body.push_back('D');
    AppendCString(&body, detail);
  }
  body.push_back('\0');
  return EncodeMessage('E', body);
}

std::string AuthenticationOk() {
  std::string body;
  AppendInt32(&body, 0);
  return EncodeMessage('R', body);
}

std::string ParameterStatus(std::string_view name, std::string_view value) {
  std::string body;
  AppendCString(&body, name);
  AppendCString(&body, value);
  return EncodeMessage('S', body);
}

std::string BackendKeyData(uint32_t pid, uint32_t key) {
  std::string body;
  AppendInt32(&body, static_cast<int32_t>(pid));
  AppendInt32(&body, static_cast<int32_t>(key));
  return EncodeMessage('K', body);
}

std::string ReadyForQuery(char status) { return EncodeMessage('Z', std::string_view(&status, 1)); }

std::string QueryMessage(std::string_view sql) {
  std::string body(sql);
  body.push_back('\0');
  return EncodeMessage('Q', body);
}

std::string TerminateMessage() { return EncodeMessage('X', ""); }

std::string StartupMessage(const std::vector<std::pair<std::string, std::string>>& params) {
  std::string body;
  AppendInt32(&body, kProtocolV3);
  for (const auto& [k, v] : params) {
    AppendCString(&body, k);
    AppendCString(&body, v);
  }
  body.push_back('\0');
  std::string out;
  AppendInt32(&out, static_cast<int32_t>(body.size() + 4));
  return out + body;
}

std::string SslRequest() {
  std::string out;
  AppendInt32(&out, 8);
  AppendInt32(&out, kSslRequestCode);
  return out;
}

std::string CancelRequest(uint32_t pid, uint32_t key) {
  std::string out;
  AppendInt32(&out, 16);
  AppendInt32(&out, kCancelRequestCode);
  AppendInt32(&out, static_cast<int32_t>(pid));
  AppendInt32(&out, static_cast<int32_t>(key));
  return out;
}

std::string PasswordMessage(std::string_view password) {
  std::string body;
  AppendCString(&body, password);
  return EncodeMessage('p', body);
}

std::string SaslInitialResponse(std::string_view mechanism, std::string_view data) {
  std::string body;
  AppendCString(&body, mechanism);
  AppendInt32(&body, static_cast<int32_t>(data.size()));
  body.append(data);
  return EncodeMessage('p', body);
}

std::string SaslResponse(std::string_view data) { return EncodeMessage('p', data); }

std::string PrimaryKeepalive(uint64_t wal_end, int64_t send_time_us, bool reply_requested) {
  std::string body(1, 'k');
  AppendInt64(&body, static_cast<int64_t>(wal_end));
  AppendInt64(&body, send_time_us);
  body.push_back(reply_requested ? 1 : 0);
  return EncodeMessage('d', body);
}

}  // namespace pgshift::proxy
