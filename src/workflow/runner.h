// MigrationRunner: drives one migration through its phases (DESIGN.md §2).
//
// Every call to Step() reloads the migration from the StateStore, applies a
// pending operator action, runs one idempotent step of the current phase and
// records the outcome before returning, so the runner can be destroyed (or
// the process killed) between any two steps and a new runner resumes. All
// transitions go through Transition(). Inside the hold, promote and snapshot
// run on in the step that entered them and are committed together with the
// switch phase (see ChainsInto). Not thread-safe: one worker owns a runner.
#pragma once

#include <memory>
#include <string>

#include "common/clock.h"
#include "model/cdc.h"
#include "model/migration.h"
#include "provider/env.h"
#include "store/state_store.h"

namespace pgshift {

class MigrationRunner {
 public:
  enum class Tick {
    kProgress,  // moved on; step again at once
    kIdle,      // polling or waiting for an operator; step again after poll_ms
    kTerminal,  // finalized or rolled back
  };

  MigrationRunner(StateStore& store, Clock& clock, std::string id,
                  std::unique_ptr<MigrationEnv> env, MigrationSpec spec);

  Tick Step();
  // True when only an operator can move the migration on (waiting, blocked, failed).
  bool AwaitingOperator() const;
  const MigrationRecord& record() const { return m_; }
  int64_t poll_ms() const { return spec_.options.poll_ms; }

 private:
  using Fn = Status (MigrationRunner::*)();

  Status Preflight();
  Status Provision();
  Status Sync();
  Status Validate();
  Status Ready();
  Status CdcPrepare();
  Status Quiesce();
  Status Drain();
  Status Promote();
  Status Snapshot();
  Status CdcRecreate();
  Status Switch();
  Status Verify();
  Status Finalize();
  Status RollingBack();

  Phase phase() const;
  void Transition(Phase next, const std::string& message);
  // Phases entered without a commit of their own: the step runs them at once
  // and the next commit (entering switch, or a failure) records them. A
  // restart before that commit finds the migration in drain, whose final
  // LSN the target has replayed, and runs promote (a no-op on a promoted
  // target) and the snapshot export again; no client has written to the
  // target yet, because the switch happens only after the switch phase is
  // committed. Saves two commits while traffic waits.
  static bool ChainsInto(Phase next);
  void SetState(const std::string& state);
  // Logs and records an event. Inside the hold (quiesce to switch) an info
  // event is recorded with the next Save instead, in the same commit: each
  // commit is an fsync plus a wake-up on a busy machine, and traffic waits.
  void Event(const std::string& kind, const std::string& message);
  void Log(const std::string& kind, const std::string& message) const;
  // Records m_ and the events waiting for it in one commit.
  void Save();
  bool InHold() const;
  Tick StepPhase();
  void HandleAction();
  void HandleFailure(const Status& st);
  // Before switch: release held traffic onto the unfenced source, back to ready.
  void AbortCutover(const std::string& why);
  Status SampleLag();
  // Replaces findings with the same id and subject, keeps an operator's override.
  void MergeFindings(const std::vector<checks::Finding>& fresh);
  // Waits for the background parity check; false while it runs or blocks.
  bool ParitySettled();
  // The migration's CDC slot records (m_.result["cdc_slots"]) and back.
  std::vector<CdcSlot> CdcSlots() const;
  void SetCdcSlots(const std::vector<CdcSlot>& slots);
  // Before finalize: every carried slot has advanced on the target (its
  // consumer reads there), or an operator overrode the finding naming it.
  bool CdcSettled();
  // PrepareCutover and the router's Prewarm: once when the standby gets in
  // sync (so their cost lands inside the sustained-lag window, well before
  // the hold) and again in cdc_prepare, where they only top up.
  void PrepareAhead();

  StateStore& store_;
  Clock& clock_;
  std::string id_;
  std::unique_ptr<MigrationEnv> env_;
  MigrationSpec spec_;
  MigrationRecord m_;
  int consecutive_failures_ = 0;
  bool idle_ = false;                           // set by a phase step that is polling
  bool prepared_ahead_ = false;                 // PrepareAhead ran during this sync
  std::vector<MigrationEvent> unsaved_events_;  // Event() in the hold, until Save()
  bool unsaved_phase_ = false;                  // a ChainsInto phase, until Save()
};

}  // namespace pgshift
