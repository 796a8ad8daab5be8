// A stand-in for pgshiftd while developing the page: serves dist/ and the
// REST contract of src/api with canned data and a migration that walks
// through the phases on a timer. Not used by any test.
// Usage: node dev/mock-server.cjs [PORT]  (tokens: tok-pay, tok-search, tok-op)
const fs = require('fs');
const http = require('http');
const path = require('path');

const DIST = path.join(__dirname, '..', 'dist');
const TOKENS = {
  'tok-pay': { identity: 'alice', team: 'payments', operator: false },
  'tok-search': { identity: 'bob', team: 'search', operator: false },
  'tok-op': { identity: 'olga', team: null, operator: true },
};
const DBS = [
  { name: 'orders', team: 'payments', tags: ['tier-1', 'eu'], provider: 'local', window: null,
    source: { host: '127.0.0.1', port: 5432, dbname: 'orders' }, router: { type: 'proxy', route: 'orders' } },
  { name: 'catalog', team: 'search', tags: [], provider: 'local', window: { days: ['sat', 'sun'], start: '02:00', end: '05:00', timezone: 'UTC' },
    source: { host: '127.0.0.1', port: 5433, dbname: 'catalog' }, router: { type: 'pgbouncer', route: 'catalog' } },
];
// [phase, seconds] in order; null seconds waits for an action.
const SCRIPT = [['preflight', 1], ['provision', 4], ['sync', 4], ['validate', 1], ['ready', null],
  ['cdc_prepare', 0.4], ['quiesce', 0.4], ['drain', 0.4], ['promote', 0.4], ['snapshot', 0.4],
  ['cdc_recreate', 0.4], ['switch', 0.4], ['verify', 2], ['finalize', null], ['finalized', 0]];
const migrations = new Map();
const audit = [];

function phaseNow(m) {
  const now = Date.now();
  let t = m.t0;
  for (let i = 0; i < SCRIPT.length; i++) {
    const [name, secs] = SCRIPT[i];
    m.started[name] ??= t;
    if (secs === null) {
      if (!m.approved[name]) return { name, waiting: true };
      t = m.approved[name];
      continue;
    }
    if (name === 'finalized' || now < t + secs * 1000) return { name, frac: (now - t) / (secs * 1000 || 1) };
    t += secs * 1000;
  }
}

function view(m) {
  const p = phaseNow(m);
  const started = {};
  for (const [name] of SCRIPT) if (m.started[name] <= Date.now()) started[name] = m.started[name];
  const lag = p.name === 'sync' ? Math.round((1 - p.frac) * 48e6 + Math.random() * 1e6) : p.name === 'provision' ? null : Math.round(Math.random() * 9000);
  const actions = p.name === 'ready' ? ['cutover', 'rollback'] : p.name === 'finalize' ? ['finalize', 'rollback']
    : p.name === 'finalized' ? [] : ['rollback'];
  const real = p.name === 'finalize' ? 'verify' : p.name;
  return {
    id: m.id, name: m.db, database: m.db, phase: real,
    state: p.name === 'finalized' ? 'finalized' : p.waiting ? 'waiting' : 'running',
    created_at: new Date(m.t0).toISOString(), updated_at: new Date().toISOString(), spec: {},
    progress: { basebackup_pct: p.name === 'preflight' ? undefined : p.name === 'provision' ? Math.round(p.frac * 100) : 100,
      lag_bytes: lag ?? undefined, lag_seconds: lag === null ? undefined : lag / 8e6, in_sync_ms: 1200, source_wal_bps: 2.1e6, replay_bps: 2.4e6 },
    result: { phase_started_ms: started, cdc_slots: [{ name: 'orders_cdc', plugin: 'wal2json', database: 'orders',
      consumer: { pid: 4242, application_name: 'pg_recvlogical', client_addr: '127.0.0.1', through_router: true },
      state: 'planned', recorded_lsn: '', restart_lsn: '0/1A2B3C4', drained_lsn: '', drain_ms: -1, recreated_lsn: '', target_confirmed_lsn: '' }] },
    findings: [
      { id: 'unlogged_tables', severity: 'blocking', subject: 'public.cache', message: 'unlogged table public.cache is empty on a promoted replica', remedy: 'make it logged or accept losing it', overridden: true, override_reason: 'cache is rebuilt at start' },
      { id: 'tables_without_pk', severity: 'warning', subject: 'public.audit_log', message: 'table has no primary key', remedy: 'add a primary key before reverse replication', overridden: false, override_reason: '' },
      { id: 'wal_level', severity: 'ok', subject: '', message: 'wal_level is replica', remedy: '', overridden: false, override_reason: '' },
    ],
    error: '', pending_action: '', actions,
  };
}

function send(res, status, body) {
  res.writeHead(status, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify(body));
}

function serveStatic(req, res) {
  const rel = req.url === '/' ? 'index.html' : req.url.slice(1).split('?')[0];
  const file = path.join(DIST, path.normalize(rel));
  if (!file.startsWith(DIST) || !fs.existsSync(file)) return send(res, 404, { error: 'no such file', code: 'not_found' });
  const types = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.svg': 'image/svg+xml' };
  res.writeHead(200, { 'Content-Type': types[path.extname(file)] || 'application/octet-stream' });
  fs.createReadStream(file).pipe(res);
}

function handle(req, res, body) {
  if (!req.url.startsWith('/v1/')) return serveStatic(req, res);
  const who = TOKENS[(req.headers.authorization || '').replace(/^Bearer /, '')];
  if (!who) return send(res, 401, { error: 'a valid bearer token is required', code: 'unauthenticated' });
  const canAct = (db) => who.operator || db.team === who.team;
  const parts = req.url.split('?')[0].split('/').filter(Boolean).map(decodeURIComponent);
  const [, what, name, sub] = parts;
  if (what === 'whoami') return send(res, 200, who);
  if (what === 'audit') return send(res, 200, { entries: audit.filter((e) => who.operator || e.team === who.team) });
  if (what === 'databases' && !name) {
    return send(res, 200, { warnings: ['router edge-2 could not be read: connection refused'], databases: DBS.map((db) => ({ ...db, can_act: canAct(db),
      migrations: [...migrations.values()].filter((m) => m.db === db.name).map((m) => { const v = view(m); return { id: v.id, phase: v.phase, state: v.state }; }) })) });
  }
  if (what === 'databases' && sub === 'migrations' && req.method === 'POST') {
    const db = DBS.find((d) => d.name === name);
    if (!db) return send(res, 404, { error: `no database named ${name}`, code: 'not_found' });
    if (!canAct(db)) return send(res, 403, { error: `${who.identity} may not migrate ${name}`, code: 'forbidden' });
    const m = { id: `m-${Math.random().toString(16).slice(2, 10)}`, db: name, team: db.team, t0: Date.now(), started: {}, approved: {} };
    migrations.set(m.id, m);
    audit.push({ at: new Date().toISOString(), identity: who.identity, action: 'create', database: name, migration: m.id, detail: '', team: db.team });
    return send(res, 201, view(m));
  }
  if (what === 'migrations' && name) {
    const m = migrations.get(name);
    if (!m) return send(res, 404, { error: `no migration ${name}`, code: 'not_found' });
    if (!who.operator && m.team !== who.team) return send(res, 403, { error: 'not your team', code: 'forbidden' });
    if (!sub) return send(res, 200, view(m));
    if (sub === 'events') return send(res, 200, { events: Object.entries(m.started).map(([phase, at]) => ({ at: new Date(at).toISOString(), phase, kind: 'info', message: `entered ${phase}` })) });
    const v = view(m);
    if (!v.actions.includes(sub)) return send(res, 409, { error: `cannot ${sub} in phase ${v.phase}`, code: 'failed_precondition' });
    const wait = sub === 'cutover' ? 'ready' : 'finalize';
    m.approved[wait] = Date.now();
    audit.push({ at: new Date().toISOString(), identity: who.identity, action: sub, database: m.db, migration: m.id, detail: JSON.parse(body || '{}'), team: m.team });
    return send(res, 202, view(m));
  }
  send(res, 404, { error: `no such endpoint: ${req.url}`, code: 'not_found' });
}

const port = Number(process.argv[2] || 8089);
http.createServer((req, res) => {
  let body = '';
  req.on('data', (c) => (body += c));
  req.on('end', () => handle(req, res, body));
}).listen(port, '127.0.0.1', () => console.log(`mock pgshiftd on http://127.0.0.1:${port}`));
