// Unit tests of the page's pure logic (node --test): the phase timeline and
// the formatters.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { fmtBytes, fmtDuration, fmtWindow } from '../src/dom.js';
import { FALLBACK_PHASES, timelineRows } from '../src/timeline.js';

const byName = (rows) => Object.fromEntries(rows.map((r) => [r.name, r]));

test('a running migration: done phases end where the next began, the current one is open', () => {
  const m = {
    phase: 'sync', state: 'running',
    result: { phase_started_ms: { preflight: 1000, provision: 1500, sync: 9000 } },
  };
  const events = [
    { phase: 'provision', kind: 'info', message: 'base backup started' },
    { phase: 'provision', kind: 'info', message: 'base backup done' },
  ];
  const rows = byName(timelineRows(FALLBACK_PHASES, m, events));
  assert.deepEqual([rows.preflight.status, rows.preflight.start, rows.preflight.end], ['done', 1000, 1500]);
  assert.deepEqual([rows.provision.status, rows.provision.end, rows.provision.note], ['done', 9000, 'base backup done']);
  assert.deepEqual([rows.sync.status, rows.sync.end], ['current', null]);
  assert.equal(rows.validate.status, 'pending');
  assert.equal(rows.quiesce.in_hold, true);
  assert.equal(rows.rolling_back, undefined, 'rollback phases appear only once reached');
});

test('phases passed without a start time are skipped; rollback phases show once entered', () => {
  const m = {
    phase: 'rolled_back', state: 'rolled_back',
    result: { phase_started_ms: { preflight: 1, provision: 2, sync: 3, validate: 4, ready: 5, rolling_back: 6, rolled_back: 7 } },
  };
  const rows = timelineRows(FALLBACK_PHASES, m, []);
  const r = byName(rows);
  assert.equal(r.rolling_back.status, 'done');
  assert.equal(r.rolled_back.status, 'done', 'a terminal current phase is done');
  assert.equal(r.quiesce.status, 'pending', 'after a rollback the cutover phases were never reached');
  assert.deepEqual(rows.map((x) => x.name).slice(-2), ['rolling_back', 'rolled_back']);

  const later = { phase: 'verify', state: 'running', result: { phase_started_ms: { preflight: 1, verify: 9 } } };
  assert.equal(byName(timelineRows(FALLBACK_PHASES, later, [])).sync.status, 'skipped');
});

test('the server phase order wins over the built-in one', () => {
  const phases = [{ name: 'b', order: 0 }, { name: 'a', order: 1, in_hold: true, terminal: true }];
  const rows = timelineRows(phases, { phase: 'a', state: 'finalized', result: {} }, []);
  assert.deepEqual(rows.map((x) => [x.name, x.status]), [['b', 'skipped'], ['a', 'done']]);
});

test('formatters', () => {
  assert.equal(fmtBytes(512), '512 B');
  assert.equal(fmtBytes(16 * 1024 * 1024), '16.0 MB');
  assert.equal(fmtBytes(undefined), '–');
  assert.equal(fmtDuration(250), '250 ms');
  assert.equal(fmtDuration(1500), '1.5 s');
  assert.equal(fmtDuration(125000), '2 min 5 s');
  assert.equal(fmtWindow(null), '');
  assert.equal(fmtWindow({ days: ['sat', 'sun'], start: '02:00', end: '05:00', timezone: 'UTC' }), 'sat,sun 02:00–05:00 UTC');
  assert.equal(fmtWindow({ cron: '0 2 * * 6' }), 'cron=0 2 * * 6');
});
