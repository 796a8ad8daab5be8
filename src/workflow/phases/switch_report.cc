#include "workflow/phases/switch_report.h"

namespace pgshift {

std::string SwitchReportEvent(Router& router, Clock& clock, const Endpoint& to) {
  const int64_t until = clock.NowMs() + kSwitchReportSettleMs;
  while (true) {
    auto r = router.LastSwitch();
    if (!r.ok() || !r->has_value() || (*r)->to != to) return "";
    if ((*r)->pending == 0 || clock.NowMs() >= until) return (*r)->Summary();
    clock.SleepMs(kSwitchReportPollMs);
  }
}

}  // namespace pgshift
