// libFuzzer target for pgshift-proxy's protocol decoder: the bytes a client
// (or a hostile upstream) may send. Built by scripts/fuzz.sh with
// clang -fsanitize=fuzzer,address. Every input must decode to Ok,
// NeedMoreData or Error — never a crash, an overread or an exception.
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "proxy/protocol.h"
#include "proxy/scram.h"

using namespace pgshift::proxy;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  std::string err;
  StartupPacket p;
  size_t pos = 0;
  if (DecodeStartup(in, &p, &err) == DecodeStatus::kOk) {
    (void)p.Param("user");
    pos = p.total;
  }
  // Then a stream of typed messages, as the session's pumps see them.
  while (pos < in.size()) {
    MessageHeader h;
    if (DecodeHeader(in.substr(pos), &h, &err) != DecodeStatus::kOk) break;
    Message m;
    DecodeStatus st = DecodeMessage(in.substr(pos), &m, &err);
    if (st != DecodeStatus::kOk) break;
    std::string name;
    char kind;
    std::map<char, std::string> fields;
    switch (m.type) {
      case 'P': (void)ParseStatementName(m.body, &name); break;
      case 'B': (void)ParseBindStatement(m.body, &name); break;
      case 'D':
      case 'C': (void)ParseDescribeOrClose(m.body, &kind, &name); break;
      case 'E':
      case 'N': (void)ParseErrorFields(m.body, &fields); break;
      case 'R': {
        // SASL continue/final payloads from an upstream.
        ScramClient c("pw", "nonce");
        c.ClientFirst();
        BodyReader r(m.body);
        int32_t code;
        // Skip huge SCRAM iteration counts: slow by design, not a decoder property.
        std::string_view rest = r.Rest();
        size_t i = rest.find("i=");
        bool cheap = i == std::string_view::npos || rest.substr(i + 2).find_first_not_of(
                                                        "0123456789") <= 4;
        if (cheap && r.ReadInt32(&code)) {
          (void)c.ClientFinal(r.Rest());
          (void)c.VerifyServerFinal(r.Rest());
        }
        break;
      }
      default: {
        BodyReader r(m.body);
        std::string_view s;
        int16_t i16;
        while (r.ReadCString(&s) && r.ReadInt16(&i16)) {
        }
      }
    }
    pos += m.total;
  }
  return 0;
}
