// pgshiftd's web page: sign-in with a bearer token, the team's databases and
// their migrations, a migration's live view, the audit log, and for
// operators the fleet runs. Hash routes: #/ (databases), #/m/<id> (a
// migration), #/audit, #/fleet, #/fleet/<id> (a run's report).
import { ApiError, get, post, setUnauthenticatedHandler, token } from './api.js';
import { confirmDialog } from './confirm.js';
import { badge, fill, fmtDateTime, fmtWindow, h, phaseBadges } from './dom.js';
import { mountFleetList, mountFleetRun } from './fleet.js';
import { mountMigration } from './migration.js';
import { poller } from './poll.js';
import './style.css';

const kListPollMs = 5000;

const app = { me: null, unmount: null, loginNotice: '' };
const userBox = h('div.user');
const fleetLink = h('a', { href: '#/fleet' }, 'Fleet');
const nav = h('nav', h('a', { href: '#/' }, 'Databases'), h('a', { href: '#/audit' }, 'Audit'), fleetLink);
const banner = h('div.banner', { role: 'alert', hidden: true });
const view = h('main');
document.body.append(
  h('header', h('a.brand', { href: '#/' }, 'pgshift'), nav, userBox),
  banner,
  view,
);

export function showError(err) {
  if (!err) {
    banner.hidden = true;
    return;
  }
  const head = err instanceof ApiError ? `HTTP ${err.status} · ${err.code}` : 'Error';
  fill(
    banner,
    h('strong', head),
    h('span.banner-msg', err.message),
    h('button.close', { type: 'button', 'aria-label': 'dismiss', onclick: () => showError(null) }, '×'),
  );
  banner.hidden = false;
}

// A 401 while signed in (token revoked or expired): back to the sign-in form.
// While signing in, the form reports the error itself.
setUnauthenticatedHandler((err) => {
  if (!app.me) return;
  token.clear();
  app.me = null;
  app.loginNotice = `Signed out: ${err.message} (HTTP 401 ${err.code}).`;
  route();
});

function renderUser() {
  nav.hidden = !app.me;
  fleetLink.hidden = !app.me?.operator;
  if (!app.me) return fill(userBox);
  const { identity, team, operator } = app.me;
  fill(
    userBox,
    h('span.identity', identity),
    h('span.team', team ? `team ${team}` : 'no team'),
    operator ? badge('operator') : null,
    h('button.btn.small', { type: 'button', onclick: signOut }, 'Sign out'),
  );
}

function signOut() {
  token.clear();
  app.me = null;
  app.loginNotice = '';
  location.hash = '#/';
  route();
}

function mountLogin(root) {
  const input = h('input#token', {
    type: 'password', autocomplete: 'off', spellcheck: 'false',
    placeholder: 'bearer token', 'aria-label': 'bearer token',
  });
  const notice = h('p.notice', app.loginNotice);
  notice.hidden = !app.loginNotice;
  const form = h(
    'form.login',
    h('h2', 'Sign in'),
    h('p', 'Paste the bearer token pgshiftd issued to you. It stays in this browser tab (sessionStorage) and is sent only to pgshiftd.'),
    notice,
    input,
    h('button.btn.primary', { type: 'submit' }, 'Sign in'),
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const t = input.value.trim();
    if (!t) return input.focus();
    token.set(t);
    try {
      app.me = await get('/v1/whoami');
      app.loginNotice = '';
      showError(null);
      route();
    } catch (err) {
      token.clear();
      showError(err);
    }
  });
  fill(root, form);
  input.focus();
}

function whereText(db) {
  const s = db.source || {};
  return `${s.host ?? '?'}:${s.port ?? '?'}/${s.dbname ?? '?'}`;
}

function migrationLinks(db) {
  if (!db.migrations || !db.migrations.length) return h('span.muted', 'none');
  return db.migrations.map((m) =>
    h('a.mig', { href: `#/m/${encodeURIComponent(m.id)}` }, h('code', m.id), ' ', phaseBadges(m.phase, m.state)),
  );
}

async function startMigration(db) {
  const ok = await confirmDialog({
    title: `Migrate ${db.name}?`,
    message: `pgshiftd builds a new cluster for ${db.name} (${whereText(db)}) as a replica of the source and stops at "ready" for your approval before any cutover.`,
    confirm: 'Start migration',
  });
  if (!ok) return;
  try {
    const m = await post(`/v1/databases/${encodeURIComponent(db.name)}/migrations`, {});
    showError(null);
    location.hash = `#/m/${encodeURIComponent(m.id)}`;
  } catch (err) {
    showError(err);
  }
}

function mountDatabases(root) {
  const body = h('tbody');
  const table = h(
    'table.grid.databases',
    h('thead', h('tr', ['Database', 'Team', 'Source', 'Router', 'Provider', 'Tags', 'Window', 'Migrations', ''].map((c) => h('th', c)))),
    body,
  );
  const empty = h('p.muted', 'No database is visible to you.');
  // Routers pgshiftd could not read, an inventory it does not have, ...
  const warnings = h('ul.warnings');
  fill(root, h('h2', 'Databases'), warnings, table, empty);
  const p = poller(kListPollMs, async () => {
    const { databases = [], warnings: notes = [] } = await get('/v1/databases');
    fill(warnings, notes.map((w) => h('li', w)));
    empty.hidden = databases.length > 0;
    fill(
      body,
      databases.map((db) =>
        h(
          'tr',
          { dataset: { database: db.name } },
          h('td', h('strong', db.name)),
          h('td', db.team ?? ''),
          h('td', h('code', whereText(db))),
          h('td', db.router ? routerText(db.router) : ''),
          h('td', db.provider ?? ''),
          h('td', (db.tags || []).map((t) => h('span.tag', t))),
          h('td', fmtWindow(db.window)),
          h('td', h('div.migs', migrationLinks(db))),
          h('td', db.can_act ? h('button.btn.primary', { type: 'button', onclick: () => startMigration(db) }, 'Migrate') : null),
        ),
      ),
    );
  }, showError);
  return () => p.stop();
}

// "proxy → app", and for a route on several proxy instances how many there
// are and how many could not be read.
function routerText(r) {
  const base = `${r.type}${r.route ? ` → ${r.route}` : ''}`;
  const instances = r.instances || [];
  if (instances.length < 2) return base;
  const down = instances.filter((i) => !i.reachable).length;
  return `${base} (${instances.length} instances${down ? `, ${down} unreachable` : ''})`;
}

function mountAudit(root) {
  const body = h('tbody');
  fill(
    root,
    h('h2', 'Audit log'),
    h('table.grid.audit', h('thead', h('tr', ['At', 'Identity', 'Action', 'Database', 'Migration', 'Detail'].map((c) => h('th', c)))), body),
  );
  const p = poller(kListPollMs, async () => {
    const { entries = [] } = await get('/v1/audit');
    fill(
      body,
      [...entries].reverse().map((e) =>
        h(
          'tr',
          h('td', fmtDateTime(e.at)),
          h('td', e.identity),
          h('td', badge(e.action, 'action')),
          h('td', e.database ?? ''),
          h('td', e.migration ? h('a', { href: `#/m/${encodeURIComponent(e.migration)}` }, e.migration) : ''),
          h('td.detail', typeof e.detail === 'string' ? e.detail : JSON.stringify(e.detail ?? '')),
        ),
      ),
    );
  }, showError);
  return () => p.stop();
}

async function route() {
  if (app.unmount) app.unmount();
  app.unmount = null;
  if (!app.me && token.get()) {
    try {
      app.me = await get('/v1/whoami');
    } catch (err) {
      if (err.status === 401) app.loginNotice = `Your token is no longer accepted: ${err.message}.`;
      else showError(err);
      token.clear();
    }
  }
  renderUser();
  if (!app.me) return mountLogin(view);
  const hash = location.hash || '#/';
  const m = /^#\/m\/(.+)$/.exec(hash);
  const run = /^#\/fleet\/(.+)$/.exec(hash);
  for (const a of nav.querySelectorAll('a')) a.classList.toggle('active', a.getAttribute('href') === hash);
  if (m) app.unmount = mountMigration(view, decodeURIComponent(m[1]), showError);
  else if (run) app.unmount = mountFleetRun(view, decodeURIComponent(run[1]), showError);
  else if (hash === '#/fleet') app.unmount = mountFleetList(view, showError);
  else if (hash === '#/audit') app.unmount = mountAudit(view);
  else app.unmount = mountDatabases(view);
}

window.addEventListener('hashchange', () => {
  showError(null);
  route();
});
route();
