// MigrationService: what pgshiftd's REST API exposes, as JSON in and out.
//
// The API layer maps Status codes to HTTP: InvalidArgument → 400,
// NotFound → 404, FailedPrecondition / AlreadyExists → 409,
// Unavailable → 503, anything else → 500. Implementations are thread-safe.
//
// Migration JSON (Get/List/Create):
//   {"id":"m-1a2b3c","name":"app","phase":"sync","state":"running",
//    "created_at":"...","updated_at":"...","spec":{...},
//    "progress":{"basebackup_pct":42,"lag_bytes":0,"lag_seconds":0.0,
//                "in_sync_ms":1200,"source_wal_bps":0,"replay_bps":0},
//    "result":{"final_lsn":"0/3000060","timeline":2,"hold_ms":35,...},
//    "findings":[{finding}], "error":"", "pending_action":"",
//    "pending_actions":[]}
// pending_actions: the operator's requests not applied yet, oldest first (a
//        request is queued behind the others, never replacing one);
//        pending_action: the first of them, or "".
// phase: a name from the phase table (model/phase.h; GET /v1/phases)
// state: running | waiting (for approval) | blocked (findings) | failed |
//        finalized | rolled_back (model/state.h)
// progress, result: MigrationProgress, MigrationResult (model/progress.h)
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "common/status.h"
#include "model/phase.h"
#include "store/state_store.h"

namespace pgshift {

class MigrationService {
 public:
  virtual ~MigrationService() = default;
  // Validates the spec completely before anything is stored or created.
  virtual Result<nlohmann::json> Create(const nlohmann::json& spec) = 0;
  // Create, with `link` (store/state_store.h) checked and recorded in the
  // commit that stores the migration: AlreadyExists when its key was used
  // or its database has a live migration.
  virtual Result<nlohmann::json> CreateLinked(const nlohmann::json& spec,
                                              const MigrationLink& link) = 0;
  virtual Result<nlohmann::json> Get(const std::string& id) = 0;
  virtual Result<nlohmann::json> List() = 0;
  // Only the migrations not in a terminal phase (a fleet's starter asks it
  // for every database it starts). Default: List(), filtered.
  virtual Result<nlohmann::json> ListLive() {
    PGSHIFT_ASSIGN_OR_RETURN(nlohmann::json all, List());
    if (all.is_object()) all = all.value("migrations", nlohmann::json::array());
    nlohmann::json live = nlohmann::json::array();
    for (auto& m : all) {
      bool terminal = false;
      for (const auto& p : kPhaseTable)
        terminal = terminal || (p.terminal && m.value("phase", "") == p.name);
      if (!terminal) live.push_back(std::move(m));
    }
    return live;
  }
  // [{"at":"...","phase":"...","kind":"info|warning|error","message":"..."}]
  virtual Result<nlohmann::json> Events(const std::string& id) = 0;
  // action: cutover | rollback | finalize | override | drop_slot | retry
  //   rollback body:  {"discard_target_writes":bool}   (needed after switch)
  //   override body:  {"finding":"id","subject":"...","reason":"..."}
  //   drop_slot body: {"slot":"name","reason":"..."}   (an inactive slot on the source)
  virtual Result<nlohmann::json> Act(const std::string& id, const std::string& action,
                                     const nlohmann::json& body) = 0;
};

}  // namespace pgshift
