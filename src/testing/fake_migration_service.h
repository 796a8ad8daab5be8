// FakeMigrationService: an in-memory MigrationService for unit tests of the
// API server and the CLI (a test seam; the real engine is tested with real
// PostgreSQL elsewhere). It keeps a small, strict state machine so tests can
// exercise success and refusal paths:
//   Create: needs spec.name (InvalidArgument), unique name (AlreadyExists);
//           new migrations start at phase "preflight", state "running".
//   CreateLinked: as a store keeps a MigrationLink — a key used before or a
//           database with a live migration is AlreadyExists; each link is
//           also recorded in `link_store` when set (where the by-name
//           starter reads links).
//   cutover:  needs phase "ready" (FailedPrecondition otherwise) → "quiesce".
//   rollback: after "switch" needs {"discard_target_writes":true} → "rolling_back".
//   finalize: needs phase "verify" → "finalize".
//   override: needs "finding" naming a finding and a non-empty "reason".
// Tests can also Put() any migration JSON, script successive Get() answers
// and inject one failure. Thread-safe (one mutex).
#pragma once

#include <deque>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "model/phase.h"
#include "model/state.h"
#include "workflow/service.h"

namespace pgshift::api {

class FakeMigrationService : public MigrationService {
 public:
  struct Call {
    std::string method;  // Create | Get | List | Events | Act
    std::string id;
    std::string action;
    nlohmann::json body;
  };

  Result<nlohmann::json> Create(const nlohmann::json& spec) override {
    std::lock_guard lock(mu_);
    calls_.push_back({"Create", "", "", spec});
    if (auto st = TakeFailure()) return *st;
    if (!spec.contains("name") || !spec["name"].is_string() ||
        spec["name"].get<std::string>().empty()) {
      return InvalidArgument("spec.name is required: give the migration a name");
    }
    std::string name = spec["name"];
    for (const auto& [id, m] : migrations_) {
      if (m["name"] == name) return AlreadyExists("a migration named '" + name + "' exists: " + id);
    }
    std::string id = "m-" + std::to_string(++next_id_);
    nlohmann::json m = {{"id", id},
                        {"name", name},
                        {"phase", PhaseName(Phase::kPreflight)},
                        {"state", StateName(MigrationState::kRunning)},
                        {"created_at", "2024-05-01T10:00:00Z"},
                        {"updated_at", "2024-05-01T10:00:00Z"},
                        {"spec", spec},
                        {"progress", nlohmann::json::object()},
                        {"result", nlohmann::json::object()},
                        {"findings", nlohmann::json::array()},
                        {"error", ""},
                        {"pending_action", ""}};
    migrations_[id] = m;
    order_.push_back(id);
    return m;
  }

  Result<nlohmann::json> CreateLinked(const nlohmann::json& spec,
                                      const MigrationLink& link) override {
    {
      std::lock_guard lock(mu_);
      for (const auto& [id, l] : links_) {
        if (!link.key.empty() && l.key == link.key) {
          return AlreadyExists("migration " + id + " was created with key " + link.key);
        }
        const nlohmann::json& m = migrations_[id];
        auto phase = ParsePhase(m.value("phase", ""));
        if (!link.database.empty() && l.database == link.database && phase && !IsTerminal(*phase)) {
          return AlreadyMigrating(link.database, id, m.value("phase", ""), m.value("state", ""));
        }
      }
    }
    auto m = Create(spec);
    if (!m.ok()) return m;
    const std::string id = (*m)["id"];
    {
      std::lock_guard lock(mu_);
      links_[id] = link;
    }
    if (link_store && !link.database.empty()) {
      PGSHIFT_RETURN_IF_ERROR(link_store->LinkDatabase(id, link.database));
    }
    return m;
  }

  Result<nlohmann::json> Get(const std::string& id) override {
    std::lock_guard lock(mu_);
    calls_.push_back({"Get", id, "", nullptr});
    if (auto st = TakeFailure()) return *st;
    auto it = migrations_.find(id);
    if (it == migrations_.end()) return NotFoundError(id);
    auto& script = scripted_[id];
    if (!script.empty()) {
      it->second = script.front();
      script.pop_front();
    }
    return it->second;
  }

  Result<nlohmann::json> List() override {
    std::lock_guard lock(mu_);
    calls_.push_back({"List", "", "", nullptr});
    if (auto st = TakeFailure()) return *st;
    nlohmann::json list = nlohmann::json::array();
    for (const auto& id : order_) list.push_back(migrations_[id]);
    return list;
  }

  Result<nlohmann::json> Events(const std::string& id) override {
    std::lock_guard lock(mu_);
    calls_.push_back({"Events", id, "", nullptr});
    if (auto st = TakeFailure()) return *st;
    if (!migrations_.count(id)) return NotFoundError(id);
    auto it = events_.find(id);
    return it == events_.end() ? nlohmann::json::array() : it->second;
  }

  Result<nlohmann::json> Act(const std::string& id, const std::string& action,
                             const nlohmann::json& body) override {
    std::lock_guard lock(mu_);
    calls_.push_back({"Act", id, action, body});
    if (auto st = TakeFailure()) return *st;
    auto it = migrations_.find(id);
    if (it == migrations_.end()) return NotFoundError(id);
    nlohmann::json& m = it->second;
    const std::string phase = m["phase"];
    const std::string state = m["state"];
    if (action == "cutover") {
      if (phase != PhaseName(Phase::kReady)) {
        return FailedPrecondition("migration " + id + " is in phase " + phase + " (" + state +
                                  "); cutover needs phase ready");
      }
      Move(m, Phase::kQuiesce);
    } else if (action == "rollback") {
      if (Past(phase, Phase::kSwitch) && !body.value("discard_target_writes", false)) {
        return FailedPrecondition("migration " + id +
                                  " has switched traffic to the target; "
                                  "rolling back discards writes made there: pass "
                                  "discard_target_writes to confirm");
      }
      Move(m, Phase::kRollingBack);
    } else if (action == "finalize") {
      if (phase != PhaseName(Phase::kVerify)) {
        return FailedPrecondition("migration " + id + " is in phase " + phase +
                                  "; finalize needs phase verify");
      }
      Move(m, Phase::kFinalize);
    } else if (action == "override") {
      std::string finding = body.value("finding", "");
      std::string reason = body.value("reason", "");
      if (reason.empty()) return InvalidArgument("override needs a reason");
      bool found = false;
      for (auto& f : m["findings"]) {
        if (f.value("id", "") == finding &&
            (!body.contains("subject") || f.value("subject", "") == body.value("subject", ""))) {
          f["overridden"] = true;
          f["override_reason"] = reason;
          found = true;
        }
      }
      if (!found) return NotFound("migration " + id + " has no finding '" + finding + "'");
    } else {
      return InvalidArgument("unknown action '" + action + "'");
    }
    return m;
  }

  // Test controls.
  AuditStore* link_store = nullptr;  // see CreateLinked
  // The migration CreateLinked made with `key`, "" when none.
  std::string MigrationWithKey(const std::string& key) const {
    std::lock_guard lock(mu_);
    for (const auto& [id, l] : links_) {
      if (!key.empty() && l.key == key) return id;
    }
    return "";
  }
  void Put(const nlohmann::json& migration) {
    std::lock_guard lock(mu_);
    std::string id = migration.at("id");
    if (!migrations_.count(id)) order_.push_back(id);
    migrations_[id] = migration;
  }
  void SetEvents(const std::string& id, const nlohmann::json& events) {
    std::lock_guard lock(mu_);
    events_[id] = events;
  }
  // Successive Get(id) calls return these, in order; the last one sticks.
  void ScriptGets(const std::string& id, std::vector<nlohmann::json> sequence) {
    std::lock_guard lock(mu_);
    scripted_[id].assign(sequence.begin(), sequence.end());
  }
  // The next call of any method fails with `st`.
  void FailNext(Status st) {
    std::lock_guard lock(mu_);
    fail_next_ = std::move(st);
  }
  std::vector<Call> calls() const {
    std::lock_guard lock(mu_);
    return calls_;
  }
  std::optional<Call> LastCall(const std::string& method) const {
    std::lock_guard lock(mu_);
    for (auto it = calls_.rbegin(); it != calls_.rend(); ++it) {
      if (it->method == method) return *it;
    }
    return std::nullopt;
  }
  int GetCount(const std::string& id) const {
    std::lock_guard lock(mu_);
    int n = 0;
    for (const auto& c : calls_) n += (c.method == "Get" && c.id == id);
    return n;
  }

 private:
  static Status NotFoundError(const std::string& id) {
    return NotFound("migration '" + id +
                    "' not found; list migrations with `pgshift migration list`");
  }
  // True when `phase` is on the main path at or after `than`.
  static bool Past(const std::string& phase, Phase than) {
    auto p = ParsePhase(phase);
    return p && InfoOf(*p).branch == PhaseBranch::kMain && PhaseOrder(*p) >= PhaseOrder(than);
  }
  static void Move(nlohmann::json& m, Phase phase) {
    m["phase"] = PhaseName(phase);
    m["state"] = StateName(MigrationState::kRunning);
    m["pending_action"] = "";
  }
  std::optional<Status> TakeFailure() {
    std::optional<Status> st;
    st.swap(fail_next_);
    return st;
  }

  mutable std::mutex mu_;
  int next_id_ = 0;
  std::map<std::string, nlohmann::json> migrations_;
  std::map<std::string, MigrationLink> links_;
  std::vector<std::string> order_;
  std::map<std::string, nlohmann::json> events_;
  std::map<std::string, std::deque<nlohmann::json>> scripted_;
  std::optional<Status> fail_next_;
  std::vector<Call> calls_;
};

}  // namespace pgshift::api
