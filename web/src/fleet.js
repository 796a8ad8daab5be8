// The fleet pages (operators): #/fleet lists the fleet runs, #/fleet/<id>
// shows one run's report — per database its result, the time spent in each
// phase, findings, the cutover hold and whether it was rolled back.
import { get } from './api.js';
import { badge, fill, fmtDateTime, fmtDuration, h } from './dom.js';
import { poller } from './poll.js';

const kFleetPollMs = 3000;

function summaryText(s = {}) {
  return `${s.succeeded ?? 0} succeeded · ${s.failed ?? 0} failed · ${s.rolled_back ?? 0} rolled back · ${s.running ?? 0} running · ${s.pending ?? 0} pending`;
}

function phaseTimings(phases = []) {
  if (!phases.length) return h('span.muted', '—');
  return h('ul.phases', phases.map((p) => h('li', { dataset: { phase: p.phase } }, h('span', p.phase), ' ', h('span.ms', fmtDuration(p.ms)))));
}

function findings(list = []) {
  if (!list.length) return h('span.muted', 'none');
  return h('ul.findings', list.map((f) => h('li', badge(f.severity ?? 'info'), ' ', f.code ?? f.kind ?? '', f.subject ? ` ${f.subject}` : '')));
}

export function mountFleetList(root, onError) {
  const body = h('tbody');
  const empty = h('p.muted', 'No fleet run yet: start one with `pgshift fleet run`.');
  fill(
    root,
    h('h2', 'Fleet runs'),
    h('table.grid.fleet-runs', h('thead', h('tr', ['Run', 'Status', 'Waves', 'Databases', 'Driven by', 'Created'].map((c) => h('th', c)))), body),
    empty,
  );
  const p = poller(kFleetPollMs, async () => {
    const { runs = [] } = await get('/v1/fleet/runs');
    empty.hidden = runs.length > 0;
    fill(
      body,
      [...runs].reverse().map((r) =>
        h(
          'tr',
          { dataset: { run: r.id } },
          h('td', h('a', { href: `#/fleet/${encodeURIComponent(r.id)}` }, h('code', r.id))),
          h('td', badge(r.status), r.request ? h('span.muted', ` (${r.request} asked)`) : null),
          h('td', (r.plan?.waves || []).map((w) => h('span.tag', w.name))),
          h('td', String((r.databases || []).length)),
          h('td', h('code', r.driver || '—')),
          h('td', fmtDateTime(r.created_ms)),
        ),
      ),
    );
  }, onError);
  return () => p.stop();
}

export function mountFleetRun(root, id, onError) {
  const head = h('div.fleet-head');
  const body = h('tbody');
  fill(
    root,
    h('h2', 'Fleet run ', h('code', id)),
    head,
    h(
      'table.grid.fleet-report',
      h('thead', h('tr', ['Database', 'Wave', 'Result', 'Migration', 'Phases', 'Duration', 'Cutover hold', 'Rolled back', 'Findings', 'Error'].map((c) => h('th', c)))),
      body,
    ),
  );
  const p = poller(kFleetPollMs, async () => {
    const run = await get(`/v1/fleet/runs/${encodeURIComponent(id)}`);
    const report = run.report || {};
    fill(
      head,
      h('p', h('span#fleet-status', { dataset: { status: run.status } }, badge(run.status)), ' ', summaryText(report.summary)),
      run.reason ? h('p.merror', run.reason) : null,
      h('p.muted', `driven by ${run.driver || 'nobody yet'}${run.request ? ` · ${run.request} asked` : ''} · worst cutover hold ${fmtDuration(report.summary?.max_hold_ms ?? 0)}`),
    );
    fill(
      body,
      (report.databases || []).map((d) =>
        h(
          'tr',
          { dataset: { database: d.name, status: d.status } },
          h('td', h('strong', d.name)),
          h('td', d.wave),
          h('td.result', badge(d.status), d.cutover ? h('div.muted', d.cutover) : null),
          h('td', d.migration_id ? h('a', { href: `#/m/${encodeURIComponent(d.migration_id)}` }, h('code', d.migration_id)) : ''),
          h('td', phaseTimings(d.phases)),
          h('td', d.duration_ms ? fmtDuration(d.duration_ms) : ''),
          h('td.hold', d.hold_ms == null ? '—' : fmtDuration(d.hold_ms)),
          h('td.rolled-back', d.rolled_back ? badge('rolled back', 'rolled_back') : 'no'),
          h('td', findings(d.findings)),
          h('td.error', d.error || ''),
        ),
      ),
    );
  }, onError);
  return () => p.stop();
}
