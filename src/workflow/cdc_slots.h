// CDC coordination: carrying every logical slot (and so every CDC pipeline)
// from the source to the target across a cutover, exactly once.
//
// Why no change is lost or repeated:
//  1. At the fence the source stops taking client writes, and the final
//     marker's end LSN F follows every committed transaction (quiesce).
//  2. DrainCdc waits until each slot's confirmed_flush_lsn >= F on the
//     source: its consumer has received and flushed every change up to F.
//     Only then is the consumer paused (the router ends its session; its
//     reconnect waits like any login while the route is held).
//  3. CatchUpAfterPause lets the target replay whatever the source wrote
//     until the pause, so no consumer knows of a position the target lacks.
//     RecreateCdc creates the same slot on the promoted target before any
//     client write is released. A new slot's consistent point is the
//     target's insert position at creation: every change committed on the
//     target after that point is decoded, none before it. The changes before
//     it are exactly the source's (the target replayed up to F and nothing
//     else has been written: clients are held), which the consumer confirmed
//     in step 2. So it resumes on the target with nothing missing and nothing
//     repeated.
//  4. Until finalize the source slots stay as they were at F: a cutover
//     aborted before the switch sends consumers back to them, untouched.
// Functions here are stateless; they work on the caller's slot records.
// Not thread-safe (one runner at a time), like the MigrationEnv they use.
#pragma once

#include <string>
#include <vector>

#include "checks/finding.h"
#include "common/clock.h"
#include "common/lsn.h"
#include "common/status.h"
#include "model/cdc.h"
#include "provider/env.h"

namespace pgshift {

// Every logical slot on the source with its consumer, and whether the
// router carries that consumer's connection (it then moves with the route).
Result<std::vector<CdcSlot>> PlanCdc(MigrationEnv& env);

// The plan as findings: a slot whose consumer connects around the router is
// blocking (it would go on reading the retired source), a slot with no
// consumer connected is a warning (the cutover would wait for it and abort),
// every other slot is an ok finding saying it will be carried.
std::vector<checks::Finding> CdcFindings(const std::vector<CdcSlot>& slots,
                                         int64_t drain_timeout_ms);

// At cdc_prepare: records each slot's current position (slots that appeared
// since the plan are added, ones dropped since are removed).
Status RecordCdc(MigrationEnv& env, std::vector<CdcSlot>& slots);

// Inside the hold, after the final marker F: asks the router's consumers to
// report, waits until every slot has confirmed F (each within
// `timeout_ms`), then pauses the consumers. Timeout names every slot that
// did not confirm and how far it got; nothing is paused then.
Status DrainCdc(MigrationEnv& env, Clock& clock, std::vector<CdcSlot>& slots, Lsn final_lsn,
                int64_t timeout_ms);

// After DrainCdc paused the consumers, before promotion: waits until the
// target has replayed everything the source had written by then (P). The
// source's keepalives may have told a consumer of WAL past the final LSN (a
// checkpoint, a running-xacts record), and a consumer resumes from the last
// position it knows; the slot recreated on the target after promotion has
// its consistent point past the target's end of WAL >= P, so that start
// position can never skip a change made on the target.
Status CatchUpAfterPause(MigrationEnv& env, Clock& clock, const std::string& physical_slot,
                         int64_t timeout_ms);

// After promotion, before the switch: the same slots on the target.
// Idempotent: a slot already there is kept and its position recorded.
Status RecreateCdc(MigrationEnv& env, std::vector<CdcSlot>& slots);

// Rollback after the switch (phases/rollback.cc), traffic held: waits until
// every carried slot's consumer has confirmed `target_lsn` on the target,
// then pauses the consumers (their reconnect waits for the release).
Status DrainCdcOnTarget(MigrationEnv& env, Clock& clock, const std::vector<CdcSlot>& slots,
                        Lsn target_lsn, int64_t timeout_ms);

// Rollback after the switch, once the source holds everything it will get
// from the target: moves each carried slot on the source past every change
// in its WAL so far and past `past` (the target's end of WAL when the
// consumers were paused). Why no change is then lost or repeated:
//  1. Since the fence the source's WAL holds no client change of its own:
//     only what reverse replication applied (the target's writes) and
//     pgshift's own records (final marker, sequence values, padding).
//  2. The applied changes were decoded on the target from the same
//     consumer's slot, and DrainCdcOnTarget saw the consumer confirm all of
//     them before it was paused. Replayed from the source slot they would
//     reach it twice: so the slot skips them (filtering by origin would do
//     the same, but only for plugins that honour origins; test_decoding and
//     wal2json do not by default).
//  3. A consumer resumes from the last position it knows, a target LSN of
//     at most `past`. Once the source slot's confirmed position is past it,
//     the source starts every consumer from that position: none of the
//     changes clients make on the source after the release is skipped.
Status ReturnCdcToSource(MigrationEnv& env, const std::vector<CdcSlot>& slots, Lsn past);

// Reads the carried slots' confirmed positions on the target; a slot whose
// consumer confirmed past the recreated point becomes kAdvanced. Returns the
// names of those that have not advanced yet.
Result<std::vector<std::string>> ObserveCdcOnTarget(MigrationEnv& env, std::vector<CdcSlot>& slots);

}  // namespace pgshift
