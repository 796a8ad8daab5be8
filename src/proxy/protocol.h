// PostgreSQL frontend/backend protocol (v3) framing for pgshift-proxy.
//
// The decoder never throws and never reads past the buffer it is given:
// incomplete input is NeedMoreData, malformed input is an Error with a
// message fit for an ErrorResponse. Encoders build the few messages the
// proxy writes itself. All functions are pure and thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace pgshift::proxy {

inline constexpr int32_t kProtocolV3 = 196608;  // 3.0
inline constexpr int32_t kSslRequestCode = 80877103;
inline constexpr int32_t kGssEncRequestCode = 80877104;
inline constexpr int32_t kCancelRequestCode = 80877102;
inline constexpr size_t kMaxStartupPacket = 10000;  // as the server's MAX_STARTUP_PACKET_LENGTH
inline constexpr size_t kMaxMessage = 1u << 30;     // 1 GiB, the server's own bound

enum class DecodeStatus { kOk, kNeedMoreData, kError };

// One typed message: type byte, then an int32 length that counts itself.
struct MessageHeader {
  char type = 0;
  uint32_t length = 0;  // as on the wire (includes the 4 length bytes)
  size_t total() const { return 1 + static_cast<size_t>(length); }
};

// Reads the 5-byte header at the start of `buf`.
DecodeStatus DecodeHeader(std::string_view buf, MessageHeader* out, std::string* error);

struct Message {
  char type = 0;
  std::string_view body;  // without type and length
  size_t total = 0;       // bytes consumed from the buffer
};
// Decodes one complete message at the start of `buf`.
DecodeStatus DecodeMessage(std::string_view buf, Message* out, std::string* error);

struct StartupPacket {
  enum class Kind { kStartup, kSslRequest, kGssEncRequest, kCancel };
  Kind kind = Kind::kStartup;
  int32_t protocol = 0;
  std::vector<std::pair<std::string, std::string>> params;  // in wire order
  uint32_t cancel_pid = 0;
  uint32_t cancel_key = 0;
  size_t total = 0;
  // Set with a decode error when the packet's length is wrong: PostgreSQL
  // logs that and closes without a reply (a client that sent something else,
  // e.g. Terminate, expects none); other errors get a FATAL.
  bool framing_error = false;
  // The value of `key`, or "" when absent.
  std::string Param(const std::string& key) const;
};
// Decodes the untyped first packet of a connection.
DecodeStatus DecodeStartup(std::string_view buf, StartupPacket* out, std::string* error);

// Bounds-checked reader over a message body.
class BodyReader {
 public:
  explicit BodyReader(std::string_view body) : body_(body) {}
  bool ReadInt32(int32_t* v);
  bool ReadInt16(int16_t* v);
  bool ReadByte(char* v);
  bool ReadCString(std::string_view* v);
  bool ReadBytes(size_t n, std::string_view* v);
  std::string_view Rest() const { return body_.substr(pos_); }
  bool AtEnd() const { return pos_ == body_.size(); }

 private:
  std::string_view body_;
  size_t pos_ = 0;
};

// Fields of the client messages the proxy inspects. Each returns false on a
// malformed body.
bool ParseStatementName(std::string_view parse_body, std::string* name);          // 'P'
bool ParseBindStatement(std::string_view bind_body, std::string* statement);      // 'B'
bool ParseDescribeOrClose(std::string_view body, char* kind, std::string* name);  // 'D' / 'C'
// The columns of a DataRow ('D') body as text (NULL as ""); false when malformed.
bool ParseDataRow(std::string_view body, std::vector<std::string>* columns);
// True when an ErrorResponse body is FATAL or PANIC: the server ends the session.
bool IsFatalError(std::string_view error_body);
// ErrorResponse / NoticeResponse fields by code ('S','C','M',...).
bool ParseErrorFields(std::string_view body, std::map<char, std::string>* fields);
// True when a ParameterStatus ('S') body reports the server's state rather than
// a setting a session can change (in_hot_standby flips on every session of a
// standby when it is promoted; server_version and the like never change by SET).
bool ReportsServerState(std::string_view parameter_status_body);
// The slot of a replication command "START_REPLICATION SLOT <slot> LOGICAL
// ..." (the text of a Query, keywords in any case, the name unquoted and
// folded to lower case as the server does, or double-quoted); false for any
// other text, a physical START_REPLICATION included.
bool ParseStartReplicationSlot(std::string_view sql, std::string* slot);

// Replication timestamps count microseconds from 2000-01-01 00:00 UTC.
inline constexpr int64_t kPgEpochUnixSeconds = 946684800;

// Encoders.
void AppendInt64(std::string* out, int64_t v);
void AppendInt32(std::string* out, int32_t v);
void AppendInt16(std::string* out, int16_t v);
std::string EncodeMessage(char type, std::string_view body);
std::string ErrorResponse(std::string_view severity, std::string_view sqlstate,
                          std::string_view message, std::string_view detail = "");
std::string AuthenticationOk();
std::string ParameterStatus(std::string_view name, std::string_view value);
std::string BackendKeyData(uint32_t pid, uint32_t key);
std::string ReadyForQuery(char status);
std::string QueryMessage(std::string_view sql);
std::string TerminateMessage();
std::string StartupMessage(const std::vector<std::pair<std::string, std::string>>& params);
std::string SslRequest();
std::string CancelRequest(uint32_t pid, uint32_t key);
std::string PasswordMessage(std::string_view password);  // cleartext or md5 string
std::string SaslInitialResponse(std::string_view mechanism, std::string_view data);
std::string SaslResponse(std::string_view data);
// A primary keepalive of the replication protocol in a CopyData message:
// 'k', walEnd, sendTime (PG epoch microseconds), replyRequested.
std::string PrimaryKeepalive(uint64_t wal_end, int64_t send_time_us, bool reply_requested);

}  // namespace pgshift::proxy
