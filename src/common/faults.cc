#include "common/faults.h"

#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <mutex>
#include <set>
#include <sstream>

namespace pgshift {
namespace {

struct Faults {
  std::string spec;
  std::set<std::string> crash;
  std::set<std::string> fail;
  std::mutex mu;  // guards `fail` (a fail fault fires once)
};

Faults& Armed() {
  static Faults* f = [] {
    auto* out = new Faults();
    const char* env = std::getenv("PGSHIFT_FAULTS");
    if (env == nullptr) return out;
    out->spec = env;
    std::stringstream in(out->spec);
    for (std::string item; std::getline(in, item, ',');) {
      if (item.rfind("crash:", 0) == 0) out->crash.insert(item.substr(6));
      if (item.rfind("fail:", 0) == 0) out->fail.insert(item.substr(5));
    }
    return out;
  }();
  return *f;
}

}  // namespace

Status FaultPoint(std::string_view name) {
  Faults& f = Armed();
  if (f.spec.empty()) return Status::OK();
  const std::string n(name);
  if (f.crash.count(n)) {
    ::kill(::getpid(), SIGKILL);
    ::pause();
  }
  std::lock_guard<std::mutex> lock(f.mu);
  if (f.fail.erase(n)) return Internal("injected fault at " + n + " (PGSHIFT_FAULTS)");
  return Status::OK();
}

std::string ArmedFaults() { return Armed().spec; }

}  // namespace pgshift
