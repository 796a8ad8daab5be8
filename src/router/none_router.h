// NoneRouter: the router for migrations without one — applications connect
// to the database directly, so a cutover only fences the source. Hold,
// Release and Repoint succeed without doing anything.
//
// Current() returns the endpoint of the last Repoint on this instance and
// NotFound before any Repoint (there is no router to ask; a restarted
// pgshiftd sees NotFound and must not read it as "not switched yet").
// Stats() is all zeros; there are no replication sessions to list, ask or
// pause (Router's defaults). Thread-compatible.
#pragma once

#include <optional>

#include "router/router.h"

namespace pgshift {

class NoneRouter : public Router {
 public:
  std::string Kind() const override { return "none"; }
  Status Hold(int64_t) override { return Status::OK(); }
  Status Release() override { return Status::OK(); }
  Status Repoint(const Endpoint& to) override {
    last_repoint_ = to;
    return Status::OK();
  }
  Result<Endpoint> Current() override {
    if (!last_repoint_) {
      return NotFound(
          "the \"none\" router does not route traffic: applications connect "
          "directly, so there is no current endpoint");
    }
    return *last_repoint_;
  }
  Result<RouteStats> Stats() override { return RouteStats{}; }

 private:
  std::optional<Endpoint> last_repoint_;
};

}  // namespace pgshift
