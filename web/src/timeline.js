// The phase timeline: which phases a migration went through, when each
// started and ended, and how it ended, from the phase order (GET /v1/phases)
// and the migration's result.phase_started_ms and events.
import { badge, fmtDuration, fmtTime, h } from './dom.js';

// Used when the server has no /v1/phases (mirrors model/migration.h).
const FALLBACK_NAMES = [
  'preflight', 'provision', 'sync', 'validate', 'ready', 'cdc_prepare', 'quiesce', 'drain',
  'promote', 'snapshot', 'cdc_recreate', 'switch', 'verify', 'finalize', 'finalized',
  'rolling_back', 'rolled_back',
];
const HOLD = new Set(['quiesce', 'drain', 'promote', 'snapshot', 'cdc_recreate', 'switch']);
const ROLLBACK = new Set(['rolling_back', 'rolled_back']);
export const FALLBACK_PHASES = FALLBACK_NAMES.map((name, order) => ({
  name,
  order,
  branch: ROLLBACK.has(name) ? 'rollback' : 'main',
  in_hold: HOLD.has(name),
  terminal: name === 'finalized' || name === 'rolled_back',
}));

// One row per phase: {name, in_hold, status, start, end, note}. status is
// done | current | pending | skipped; rollback phases appear only once reached.
export function timelineRows(phases, m, events) {
  const started = (m.result && m.result.phase_started_ms) || {};
  const ordered = [...phases].sort((a, b) => a.order - b.order);
  const starts = Object.values(started).filter((v) => typeof v === 'number');
  const lastEvent = {};
  for (const e of events || []) lastEvent[e.phase] = e;
  const isRollback = (p) => (p.branch ? p.branch === 'rollback' : ROLLBACK.has(p.name));
  const current = ordered.find((p) => p.name === m.phase);
  const rows = [];
  for (const p of ordered) {
    const start = started[p.name];
    const isCurrent = p === current;
    if (isRollback(p) && start === undefined && !isCurrent) continue;
    let end = null;
    if (start !== undefined && !isCurrent) {
      const later = starts.filter((s) => s > start);
      end = later.length ? Math.min(...later) : null;
    }
    let status = 'pending';
    if (isCurrent) status = p.terminal ? 'done' : 'current';
    else if (start !== undefined) status = 'done';
    else if (current && !isRollback(current) && p.order < current.order) status = 'skipped';
    const ev = lastEvent[p.name];
    rows.push({
      name: p.name,
      in_hold: !!p.in_hold,
      status,
      start: start ?? null,
      end,
      note: ev ? ev.message : '',
      noteKind: ev ? ev.kind : '',
    });
  }
  return rows;
}

export function renderTimeline(rows, m) {
  return h(
    'ol.timeline',
    rows.map((r) => {
      const label = r.status === 'current' ? m.state : r.status;
      const dur =
        r.start === null ? '' : fmtDuration((r.end ?? (r.status === 'current' ? Date.now() : r.start)) - r.start);
      return h(
        `li.tl-row.tl-${r.status}`,
        { dataset: { phase: r.name } },
        h('span.tl-dot'),
        h('span.tl-name', r.name, r.in_hold ? h('span.tl-hold', { title: 'traffic is held' }, 'hold') : null),
        h('span.tl-status', badge(label, r.status === 'current' ? m.state : r.status)),
        h('span.tl-time', r.start === null ? '' : fmtTime(r.start)),
        h('span.tl-time', r.end === null ? '' : fmtTime(r.end)),
        h('span.tl-dur', dur),
        h(`span.tl-note.k-${r.noteKind || 'none'}`, { title: r.note }, r.note),
      );
    }),
  );
}
