// A migration's live page: status, the actions the server offers (each behind
// a confirmation), the phase timeline, replication (base backup, lag chart),
// validation findings with overrides, CDC slots and recent events. Polls the
// migration and its events every second.
import { get, post } from './api.js';
import { confirmDialog } from './confirm.js';
import { badge, fill, fmtBytes, fmtDateTime, fmtDuration, fmtTime, h, phaseBadges } from './dom.js';
import { LagChart } from './lagchart.js';
import { poller } from './poll.js';
import { FALLBACK_PHASES, renderTimeline, timelineRows } from './timeline.js';

const kPollMs = 1000;
const kEventsShown = 20;
const SEVERITY_RANK = { blocking: 0, warning: 1, ok: 2 };

let phasesCache = null;
async function loadPhases() {
  if (phasesCache) return phasesCache;
  try {
    const p = await get('/v1/phases');
    phasesCache = Array.isArray(p) ? p : p.phases;
  } catch (err) {
    if (err.status !== 404) throw err;
    phasesCache = FALLBACK_PHASES;
  }
  return phasesCache;
}

function orderOf(phases, name) {
  const p = phases.find((x) => x.name === name);
  return p ? p.order : -1;
}

// Traffic may be on the target: a rollback then discards the target's writes.
function afterSwitch(phases, m) {
  if (['rolling_back', 'rolled_back', 'finalized'].includes(m.phase)) return false;
  return orderOf(phases, m.phase) >= orderOf(phases, 'switch');
}

const ACTIONS = {
  cutover: {
    label: 'Approve cutover',
    title: 'Approve the cutover?',
    message: (m) =>
      `Traffic to ${m.database || m.name} is held at transaction boundaries, the source is fenced, the target promoted and the route switched to it. Until finalize, a rollback routes traffic back to the source.`,
  },
  finalize: {
    label: 'Finalize',
    title: 'Finalize the migration?',
    message: () => 'The source is retired: its replication slots are dropped and a rollback is no longer possible.',
    danger: true,
  },
  rollback: {
    label: 'Roll back',
    title: 'Roll back the migration?',
    message: () => 'Traffic is routed back to the source, which is unfenced; the target is abandoned.',
    danger: true,
  },
  retry: {
    label: 'Retry',
    title: 'Retry the step?',
    message: () => 'Runs the failed or blocked step again; do this after fixing its cause.',
  },
};

export function mountMigration(root, id, showError) {
  const head = h('div.mhead');
  const errorBox = h('div.merror', { hidden: true });
  const actionsBar = h('div.actions');
  const timeline = h('div');
  const repl = h('div.repl');
  const chart = new LagChart();
  const findings = h('div');
  const slots = h('div');
  const events = h('div');
  // Shown once the migration has loaded.
  const content = h(
    'div',
    { hidden: true },
    head,
    errorBox,
    actionsBar,
    h('section', h('h3', 'Phases'), timeline),
    h('section', h('h3', 'Replication'), repl, chart.el),
    h('section', h('h3', 'Validation findings'), findings),
    h('section', h('h3', 'CDC slots'), slots),
    h('section', h('h3', 'Recent events'), events),
  );
  fill(root, content);
  let phases = FALLBACK_PHASES;
  let current = null;
  let busy = false;

  async function act(action, body = {}) {
    busy = true;
    renderActions();
    try {
      await post(`/v1/migrations/${encodeURIComponent(id)}/${action}`, body);
      showError(null);
    } catch (err) {
      showError(err);
    } finally {
      busy = false;
      p.now();
    }
  }

  async function onAction(action) {
    const m = current;
    const spec = ACTIONS[action];
    const ok = await confirmDialog({
      title: spec.title, message: spec.message(m), confirm: spec.label, danger: spec.danger,
    });
    if (!ok) return;
    if (action === 'rollback' && afterSwitch(phases, m)) {
      const sure = await confirmDialog({
        title: 'Discard the writes made on the target?',
        message: `${m.database || m.name} has been served by the target since the switch. Rolling back now DISCARDS every write made on the target since then; the source resumes from its state at the cutover.`,
        confirm: 'Discard target writes and roll back',
        danger: true,
      });
      if (!sure) return;
      return act('rollback', { discard_target_writes: true });
    }
    return act(action);
  }

  async function onOverride(f) {
    const reason = await confirmDialog({
      title: `Override ${f.id}?`,
      message: `${f.subject ? `${f.subject}: ` : ''}${f.message} The cutover will no longer be blocked by it; the reason is kept in the audit log.`,
      confirm: 'Override',
      danger: true,
      input: 'reason (required)',
    });
    if (reason) act('override', { finding: f.id, subject: f.subject, reason });
  }

  function renderActions() {
    const m = current;
    const offered = (m.actions || []).filter((a) => ACTIONS[a]);
    fill(
      actionsBar,
      offered.map((a) =>
        h(`button.btn${ACTIONS[a].danger ? '.danger' : '.primary'}`,
          // Already requested: the engine takes it up at its next step.
          { type: 'button', disabled: busy || m.pending_action === a, dataset: { action: a }, onclick: () => onAction(a) },
          ACTIONS[a].label),
      ),
      m.pending_action ? h('span.muted', `requested: ${m.pending_action}`) : null,
    );
  }

  function render(m, evs) {
    current = m;
    content.hidden = false;
    fill(
      head,
      h('h2', 'Migration ', h('span.mname', m.name), ' ', h('code', m.id)),
      h(
        'div.mstatus',
        h('span#m-phase', { dataset: { phase: m.phase, state: m.state } }, phaseBadges(m.phase, m.state)),
        m.database ? h('span', 'database ', h('strong', m.database)) : null,
        h('span.muted', `created ${fmtDateTime(m.created_at)} · updated ${fmtTime(m.updated_at)}`),
      ),
    );
    errorBox.hidden = !m.error;
    fill(errorBox, m.error || '');
    renderActions();
    fill(timeline, renderTimeline(timelineRows(phases, m, evs), m));
    renderReplication(m.progress || {}, (m.result && m.result.health) || {});
    fill(findings, renderFindings(m.findings || [], (m.actions || []).includes('override'), onOverride));
    fill(slots, renderSlots((m.result && m.result.cdc_slots) || []));
    fill(events, renderEvents(evs));
  }

  // A traffic sample (progress.baseline, result.health.window) in a few words.
  const fmtTraffic = (t) => {
    if (!t) return '–';
    const lat = t.p99_ms != null ? `, p99 ${Number(t.p99_ms).toFixed(1)} ms`
      : t.avg_ms != null ? `, avg ${Number(t.avg_ms).toFixed(1)} ms` : '';
    const err = t.error_rate != null ? `, ${(t.error_rate * 100).toFixed(2)}% errors` : '';
    return `${Number(t.tps).toFixed(0)}/s${err}${lat}`;
  };
  const fmtHealth = (hr) => {
    if (hr.anomaly) return `${hr.action}: ${hr.anomaly}`;
    if (hr.matched_baseline != null) return hr.matched_baseline ? 'matched the baseline' : 'did not match';
    return hr.window ? 'watching' : '–';
  };

  function renderReplication(pr, health) {
    const pct = pr.basebackup_pct;
    chart.add(Date.now(), pr.lag_bytes, pr.lag_seconds);
    const stat = (label, value) => h('div.stat', h('span.stat-label', label), h('span.stat-value', value));
    fill(
      repl,
      h('div.bb', h('span.stat-label', 'base backup'),
        h('progress', { max: 100, value: pct ?? 0, 'aria-label': 'base backup progress' }),
        h('span#bb-pct', pct == null ? 'not started' : `${pct}%`)),
      h('div.stats',
        stat('lag', pr.lag_bytes == null ? '–' : fmtBytes(pr.lag_bytes)),
        stat('lag time', pr.lag_seconds == null ? '–' : `${Number(pr.lag_seconds).toFixed(2)} s`),
        stat('in sync for', pr.in_sync_ms == null ? '–' : fmtDuration(pr.in_sync_ms)),
        stat('source WAL', pr.source_wal_bps == null ? '–' : `${fmtBytes(pr.source_wal_bps)}/s`),
        stat('replay', pr.replay_bps == null ? '–' : `${fmtBytes(pr.replay_bps)}/s`),
        stat('baseline traffic', fmtTraffic(pr.baseline)),
        stat('after cutover', fmtTraffic(health.window)),
        stat('post-cutover health', fmtHealth(health))),
    );
  }

  const p = poller(kPollMs, async () => {
    phases = await loadPhases();
    const enc = encodeURIComponent(id);
    const [m, ev] = await Promise.all([get(`/v1/migrations/${enc}`), get(`/v1/migrations/${enc}/events`)]);
    render(m, (ev && ev.events) || []);
  }, (err) => {
    // Not there or not ours: asking again every second changes nothing.
    if (err.status === 403 || err.status === 404) p.stop();
    showError(err);
  });

  return () => {
    p.stop();
    chart.destroy();
  };
}

function renderFindings(list, canOverride, onOverride) {
  const sorted = [...list].sort((a, b) => (SEVERITY_RANK[a.severity] ?? 3) - (SEVERITY_RANK[b.severity] ?? 3));
  const notable = sorted.filter((f) => f.severity !== 'ok');
  const passed = sorted.filter((f) => f.severity === 'ok');
  const row = (f) =>
    h(
      `tr.sev-${f.severity}`,
      h('td', badge(f.severity)),
      h('td', h('code', f.id)),
      h('td', f.subject || ''),
      h('td', f.message || ''),
      h('td.remedy', f.remedy || ''),
      h('td', f.overridden
        ? h('span.override', badge('overridden'), ' ', f.override_reason || '')
        : f.severity === 'blocking' && canOverride
          ? h('button.btn.small', { type: 'button', onclick: () => onOverride(f) }, 'Override…')
          : ''),
    );
  const table = (rows) =>
    h('table.grid.findings',
      h('thead', h('tr', ['Severity', 'Check', 'Subject', 'Message', 'Remedy', 'Override'].map((c) => h('th', c)))),
      h('tbody', rows.map(row)));
  if (!list.length) return h('p.muted', 'No findings yet.');
  return [
    notable.length ? table(notable) : h('p', 'Every check passed.'),
    passed.length ? h('details', h('summary', `${passed.length} checks passed`), table(passed)) : null,
  ];
}

function renderSlots(list) {
  if (!list.length) return h('p.muted', 'No logical replication slots on the source.');
  return h(
    'table.grid.slots',
    h('thead', h('tr', ['Slot', 'Plugin', 'Consumer', 'State', 'Recorded', 'Drained', 'Recreated', 'Confirmed on target'].map((c) => h('th', c)))),
    h('tbody', list.map((s) => {
      const c = s.consumer || {};
      const who = c.pid ? `${c.application_name || 'pid'} ${c.client_addr || 'local'} (pid ${c.pid})` : 'no consumer';
      return h(
        'tr',
        h('td', h('strong', s.name)),
        h('td', s.plugin),
        h('td', who, c.pid ? (c.through_router ? badge('via router', 'ok') : badge('around router', 'blocking')) : null),
        h('td', badge(s.state, 'slot')),
        h('td', h('code', s.recorded_lsn || '')),
        h('td', h('code', s.drained_lsn || ''), s.drain_ms >= 0 ? ` (${s.drain_ms} ms)` : ''),
        h('td', h('code', s.recreated_lsn || '')),
        h('td', h('code', s.target_confirmed_lsn || '')),
      );
    })),
  );
}

function renderEvents(list) {
  if (!list.length) return h('p.muted', 'No events yet.');
  return h(
    'table.grid.events',
    h('tbody', list.slice(-kEventsShown).reverse().map((e) =>
      h('tr', h('td.nowrap', fmtTime(e.at)), h('td', e.phase), h('td', badge(e.kind)), h('td', e.message)))),
  );
}
