#include "common/lsn.h"

#include <cstdio>

namespace pgshift {

Result<Lsn> Lsn::Parse(const std::string& text) {
  unsigned int hi = 0, lo = 0;
  char tail = 0;
  if (std::sscanf(text.c_str(), "%X/%X%c", &hi, &lo, &tail) != 2) {
    return InvalidArgument("not a WAL position (expected like 0/16B3748): '" + text + "'");
  }
  return Lsn{(static_cast<uint64_t>(hi) << 32) | lo};
}

std::string Lsn::ToString() const {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%X/%X", static_cast<unsigned>(value >> 32),
                static_cast<unsigned>(value & 0xffffffffu));
  return buf;
}

}  // namespace pgshift
