// Client side of PostgreSQL password authentication for the proxy's upstream
// logins: SCRAM-SHA-256 (RFC 5802 / RFC 7677, without channel binding, the
// password prepared with SASLprep as libpq does) and the md5 scheme. One
// ScramClient serves one login; not thread-safe (the salted-password cache
// behind it is). SaslPrep is a pure function, thread-safe.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace pgshift::proxy {

// The password as SCRAM hashes it, like libpq's pg_saslprep (RFC 4013 with
// RFC 3454's tables, via ICU's SASLprep profile): ASCII stays as it is;
// otherwise non-ASCII spaces map to a space, "mapped to nothing" characters
// go, NFKC normalises. When the result is prohibited (a control character,
// an unassigned code point, a bidi violation, empty) or the input is not
// UTF-8, the raw password is used — as both libpq and the server do, so a
// password stored through either still matches.
std::string SaslPrep(std::string_view password);

class ScramClient {
 public:
  // `nonce` empty: 18 random bytes from RAND_bytes, base64 (tests pass a fixed one).
  // `user` stays empty for PostgreSQL (it takes the name from the startup packet).
  // The password goes through SaslPrep.
  explicit ScramClient(std::string password, std::string nonce = "", std::string user = "");

  // client-first-message: "n,,n=,r=<nonce>".
  std::string ClientFirst();
  // Takes server-first-message, returns client-final-message.
  Result<std::string> ClientFinal(std::string_view server_first);
  // Checks the server signature in server-final-message ("v=...").
  Status VerifyServerFinal(std::string_view server_final);

 private:
  std::string password_;
  std::string nonce_;
  std::string user_;
  std::string client_first_bare_;
  std::string auth_message_;
  std::string salted_password_;
};

// "md5" + md5hex(md5hex(password + user) + salt), as AuthenticationMD5Password wants.
std::string Md5PasswordHash(std::string_view user, std::string_view password,
                            std::string_view salt4);

std::string Base64Encode(std::string_view in);
Result<std::string> Base64Decode(std::string_view in);

}  // namespace pgshift::proxy
