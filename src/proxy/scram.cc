#include "proxy/scram.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <unicode/usprep.h>
#include <unicode/ustring.h>

#include <cstdio>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace pgshift::proxy {
namespace {

std::string Hmac(std::string_view key, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &len);
  return std::string(reinterpret_cast<char*>(out), len);
}

// PBKDF2 with PostgreSQL's 4096 iterations costs about a millisecond of the
// event loop per login; a switch logs every session in again with the same
// password, salt and count (a physical replica keeps pg_authid), so the
// result is remembered. The key includes the password, which the proxy holds
// in memory anyway. Shared by all threads of the proxy.
std::string SaltedPassword(const std::string& password, const std::string& salt, int iterations) {
  static std::mutex mu;
  static std::unordered_map<std::string, std::string> cache;
  constexpr size_t kMaxEntries = 4096;
  std::string key =
      std::to_string(iterations) + ":" + std::to_string(salt.size()) + ":" + salt + password;
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
  }
  unsigned char salted[32];
  PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()),
                    reinterpret_cast<const unsigned char*>(salt.data()),
                    static_cast<int>(salt.size()), iterations, EVP_sha256(), sizeof(salted),
                    salted);
  std::string out(reinterpret_cast<char*>(salted), sizeof(salted));
  std::lock_guard<std::mutex> lock(mu);
  if (cache.size() >= kMaxEntries) cache.clear();
  cache.emplace(std::move(key), out);
  return out;
}

std::string Sha256(std::string_view data) {
  unsigned char out[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), out);
  return std::string(reinterpret_cast<char*>(out), sizeof(out));
}

std::string Md5Hex(std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), out, &len, EVP_md5(), nullptr);
  std::string hex;
  char b[3];
  for (unsigned i = 0; i < len; i++) {
    std::snprintf(b, sizeof(b), "%02x", out[i]);
    hex += b;
  }
  return hex;
}

// Attribute `key` ("r", "s", "i", "v", "e") of a SCRAM message, or nullopt-like empty + false.
bool Attr(std::string_view msg, char key, std::string* value) {
  size_t pos = 0;
  while (pos <= msg.size()) {
    size_t end = msg.find(',', pos);
    if (end == std::string_view::npos) end = msg.size();
    std::string_view part = msg.substr(pos, end - pos);
    if (part.size() >= 2 && part[0] == key && part[1] == '=') {
      *value = std::string(part.substr(2));
      return true;
    }
    pos = end + 1;
  }
  return false;
}

bool IsAscii(std::string_view s) {
  for (char c : s)
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  return true;
}

}  // namespace

std::string SaslPrep(std::string_view password) {
  std::string raw(password);
  if (IsAscii(password)) return raw;  // libpq's quick path: ASCII needs no preparation
  UErrorCode err = U_ZERO_ERROR;
  int32_t len16 = 0;
  u_strFromUTF8(nullptr, 0, &len16, password.data(), static_cast<int32_t>(password.size()), &err);
  if (err != U_BUFFER_OVERFLOW_ERROR && U_FAILURE(err)) return raw;  // not UTF-8
  std::u16string in(static_cast<size_t>(len16), u'\0');
  err = U_ZERO_ERROR;
  u_strFromUTF8(in.data(), len16, nullptr, password.data(), static_cast<int32_t>(password.size()),
                &err);
  if (U_FAILURE(err)) return raw;
  err = U_ZERO_ERROR;
  UStringPrepProfile* profile = usprep_openByType(USPREP_RFC4013_SASLPREP, &err);
  if (U_FAILURE(err)) return raw;
  std::unique_ptr<UStringPrepProfile, decltype(&usprep_close)> owner(profile, usprep_close);
  // NFKC of the mapped text is at most a few times longer (NFKC's expansion factor is 18).
  std::u16string out(in.size() * 18 + 1, u'\0');
  err = U_ZERO_ERROR;
  int32_t n = usprep_prepare(profile, in.data(), static_cast<int32_t>(in.size()), out.data(),
                             static_cast<int32_t>(out.size()), USPREP_DEFAULT, nullptr, &err);
  if (U_FAILURE(err) || n <= 0) return raw;  // prohibited, unassigned, bidi, or empty
  out.resize(static_cast<size_t>(n));
  int32_t len8 = 0;
  err = U_ZERO_ERROR;
  u_strToUTF8(nullptr, 0, &len8, out.data(), n, &err);
  if (err != U_BUFFER_OVERFLOW_ERROR && U_FAILURE(err)) return raw;
  std::string prepared(static_cast<size_t>(len8), '\0');
  err = U_ZERO_ERROR;
  u_strToUTF8(prepared.data(), len8, nullptr, out.data(), n, &err);
  return U_FAILURE(err) ? raw : prepared;
}

std::string Base64Encode(std::string_view in) {
  std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(in.data()),
                          static_cast<int>(in.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

Result<std::string> Base64Decode(std::string_view in) {
  if (in.size() % 4 != 0) return InvalidArgument("base64 text has a length not divisible by 4");
  std::string out(3 * in.size() / 4 + 1, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(in.data()),
                          static_cast<int>(in.size()));
  if (n < 0) return InvalidArgument("invalid base64 text");
  size_t len = static_cast<size_t>(n);
  // EVP_DecodeBlock counts the padding as zero bytes.
  for (size_t i = in.size(); i > 0 && in[i - 1] == '='; i--) len--;
  out.resize(len);
  return out;
}

ScramClient::ScramClient(std::string password, std::string nonce, std::string user)
    : password_(SaslPrep(password)), nonce_(std::move(nonce)), user_(std::move(user)) {
  if (nonce_.empty()) {
    unsigned char raw[18];
    RAND_bytes(raw, sizeof(raw));
    nonce_ = Base64Encode(std::string_view(reinterpret_cast<char*>(raw), sizeof(raw)));
  }
}

std::string ScramClient::ClientFirst() {
  // PostgreSQL takes the user name from the startup packet, so n= stays empty.
  client_first_bare_ = "n=" + user_ + ",r=" + nonce_;
  return "n,," + client_first_bare_;
}

Result<std::string> ScramClient::ClientFinal(std::string_view server_first) {
  std::string nonce, salt_b64, iter_s, err;
  if (Attr(server_first, 'e', &err)) return Unavailable("SCRAM server error: " + err);
  if (!Attr(server_first, 'r', &nonce) || !Attr(server_first, 's', &salt_b64) ||
      !Attr(server_first, 'i', &iter_s))
    return Internal("malformed SCRAM server-first-message");
  if (nonce.compare(0, nonce_.size(), nonce_) != 0 || nonce.size() <= nonce_.size())
    return Internal("SCRAM server nonce does not extend the client nonce");
  PGSHIFT_ASSIGN_OR_RETURN(std::string salt, Base64Decode(salt_b64));
  int iterations = 0;
  try {
    iterations = std::stoi(iter_s);
  } catch (...) {
    return Internal("SCRAM iteration count is not a number");
  }
  if (iterations < 1 || iterations > 10'000'000)
    return Internal("SCRAM iteration count out of range");
  salted_password_ = SaltedPassword(password_, salt, iterations);
  std::string client_key = Hmac(salted_password_, "Client Key");
  std::string stored_key = Sha256(client_key);
  std::string final_without_proof = "c=biws,r=" + nonce;  // biws = base64("n,,")
  auth_message_ = client_first_bare_ + "," + std::string(server_first) + "," + final_without_proof;
  std::string signature = Hmac(stored_key, auth_message_);
  std::string proof = client_key;
  for (size_t i = 0; i < proof.size(); i++) proof[i] = static_cast<char>(proof[i] ^ signature[i]);
  return final_without_proof + ",p=" + Base64Encode(proof);
}

Status ScramClient::VerifyServerFinal(std::string_view server_final) {
  std::string v, err;
  if (Attr(server_final, 'e', &err)) return Unavailable("SCRAM server error: " + err);
  if (!Attr(server_final, 'v', &v)) return Internal("malformed SCRAM server-final-message");
  std::string server_key = Hmac(salted_password_, "Server Key");
  std::string expected = Base64Encode(Hmac(server_key, auth_message_));
  if (v != expected)
    return Internal(
        "SCRAM server signature does not match: the upstream server is not who it claims");
  return Status::OK();
}

std::string Md5PasswordHash(std::string_view user, std::string_view password,
                            std::string_view salt4) {
  std::string inner = Md5Hex(std::string(password) + std::string(user));
  return "md5" + Md5Hex(inner + std::string(salt4));
}

}  // namespace pgshift::proxy
