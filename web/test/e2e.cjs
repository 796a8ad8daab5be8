// The web page's browser test: headless Chromium (Debian's, driven by
// playwright-core) signs in as a team, migrates a database by name from the
// page, watches it reach `ready`, approves the cutover (and the finalize),
// and sees `finalized`; a second team's identity gets no Migrate or action
// button and is refused by the API. Screenshots go to E2E_OUT.
//
// E2E_MODE=fleet instead: an operator (E2E_TOKEN) opens the fleet pages and
// checks the report of the fleet run E2E_FLEET_RUN (completed, E2E_DATABASE
// succeeded, with its phase timings, cutover hold and no rollback).
//
// Environment: E2E_URL (pgshiftd), E2E_TOKEN (the owning team's token),
// E2E_OTHER_TOKEN (another team's), E2E_DATABASE, E2E_OUT (screenshot dir),
// E2E_SECRETS (JSON array of strings that must never reach the browser),
// E2E_TIMEOUT_MS (default 300000), CHROMIUM (default /usr/bin/chromium).
// Last line on stdout: E2E web {"finalized":...,"screenshots":N,...}; exit 0
// only when every check held.
const fs = require('fs');
const path = require('path');
const { chromium } = require('playwright-core');

const env = (name, dflt) => {
  const v = process.env[name] ?? dflt;
  if (v === undefined) throw new Error(`${name} is not set`);
  return v;
};
const URL_ = env('E2E_URL').replace(/\/$/, '');
const TOKEN = env('E2E_TOKEN');
const MODE = env('E2E_MODE', 'team');
const OTHER_TOKEN = env('E2E_OTHER_TOKEN', '');
const FLEET_RUN = env('E2E_FLEET_RUN', '');
const DATABASE = env('E2E_DATABASE');
const OUT = path.resolve(env('E2E_OUT'), env('E2E_MODE', 'team') === 'fleet' ? 'fleet' : '.');
const SECRETS = JSON.parse(env('E2E_SECRETS', '[]')).filter((s) => s && s.length >= 4);
const DEADLINE = Date.now() + Number(env('E2E_TIMEOUT_MS', '300000'));
const CHROMIUM = env('CHROMIUM', '/usr/bin/chromium');
// Chromium reports every non-2xx fetch as a console error: the 401/403 the
// test provokes on purpose, and a 404 for /v1/phases (the page then uses its
// built-in order), are not failures of the page.
function expectedConsoleError(msg) {
  const m = /the server responded with a status of (\d+)/.exec(msg.text());
  if (!m) return false;
  return m[1] === '401' || m[1] === '403' || (m[1] === '404' && /\/v1\/phases$/.test(msg.location().url || ''));
}

const summary = {
  finalized: false, screenshots: 0, unauthenticated_status: null, wrong_team_status: null, secrets_leaked: 0,
};
const problems = [];
const bodies = []; // every text response the browser received
let shot = 0;

function check(cond, what) {
  if (!cond) problems.push(what);
  return cond;
}

function log(msg) {
  console.log(`[e2e-web ${new Date().toISOString().slice(11, 23)}] ${msg}`);
}

async function screenshot(page, name) {
  shot += 1;
  const file = path.join(OUT, `${String(shot).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  summary.screenshots += 1;
  log(`screenshot ${path.basename(file)}`);
}

function remaining() {
  return Math.max(1000, DEADLINE - Date.now());
}

async function newPage(browser, label) {
  const context = await browser.newContext({ viewport: { width: 1360, height: 900 } });
  const page = await context.newPage();
  page.on('pageerror', (e) => problems.push(`${label}: page error: ${e.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error' && !expectedConsoleError(msg)) {
      problems.push(`${label}: console error: ${msg.text()}`);
    }
  });
  page.on('response', async (res) => {
    const type = res.headers()['content-type'] || '';
    if (!/json|text|javascript|svg/.test(type)) return;
    try {
      bodies.push(await res.text());
    } catch {
      // Redirects and aborted requests have no body.
    }
  });
  return page;
}

async function signIn(page, tok) {
  await page.fill('#token', tok);
  const [res] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith('/v1/whoami')),
    page.click('form.login button[type=submit]'),
  ]);
  return res;
}

// Answers the confirmation dialog that `trigger` opens, after a screenshot.
async function confirm(page, trigger, name) {
  await trigger();
  const dlg = page.locator('dialog.confirm[open]');
  await dlg.waitFor({ timeout: 5000 });
  if (name) await screenshot(page, name);
  await dlg.locator('button[type=submit]').click();
  await dlg.waitFor({ state: 'detached', timeout: 5000 });
}

async function phaseOf(page) {
  const el = page.locator('#m-phase');
  return { phase: await el.getAttribute('data-phase'), state: await el.getAttribute('data-state') };
}

// Follows the migration page until `done(phase,state)`, screenshotting each
// new phase/state (across calls); clicks an offered action from `approve`
// when the migration waits for it.
let lastSeen = '';
async function follow(page, done, approve = []) {
  for (;;) {
    if (Date.now() > DEADLINE) throw new Error(`timed out; last phase ${lastSeen}`);
    const { phase, state } = await phaseOf(page);
    if (phase && `${phase}/${state}` !== lastSeen) {
      lastSeen = `${phase}/${state}`;
      log(`phase ${lastSeen}`);
      await screenshot(page, `phase-${phase}-${state}`);
    }
    if (done(phase, state)) return { phase, state };
    if (state === 'failed' || state === 'blocked' || phase === 'rolled_back') {
      throw new Error(`migration stopped in ${phase}/${state}: ${await page.locator('.merror').textContent()}`);
    }
    for (const action of approve) {
      const btn = page.locator(`.actions button[data-action=${action}]`);
      if (state === 'waiting' && (await btn.count()) > 0 && (await btn.isEnabled())) {
        log(`approving ${action}`);
        await confirm(page, () => btn.click(), `confirm-${action}`);
      }
    }
    await page.waitForTimeout(500);
  }
}

async function ownerFlow(browser) {
  const page = await newPage(browser, 'owner');
  await page.goto(`${URL_}/`);
  await page.locator('form.login').waitFor({ timeout: remaining() });
  await screenshot(page, 'sign-in');

  const rejected = await signIn(page, 'not-a-valid-token');
  summary.unauthenticated_status = rejected.status();
  await page.locator('.banner:not([hidden])').waitFor({ timeout: 5000 });
  check(/401/.test(await page.locator('.banner').textContent()), 'a rejected token shows no 401 banner');
  await screenshot(page, 'token-rejected');

  const ok = await signIn(page, TOKEN);
  check(ok.status() === 200, `whoami with the team token answered ${ok.status()}`);
  const me = await ok.json();
  await page.locator('.user .identity').waitFor({ timeout: 5000 });
  check((await page.locator('.user .identity').textContent()) === me.identity, 'identity not shown');

  const row = page.locator(`tr[data-database="${DATABASE}"]`);
  await row.waitFor({ timeout: 10000 });
  await screenshot(page, 'databases');
  const migrate = row.locator('button', { hasText: 'Migrate' });
  check((await migrate.count()) === 1, `no Migrate button for ${DATABASE}`);
  const created = page.waitForResponse((r) => r.request().method() === 'POST' && /\/v1\/databases\/.*\/migrations$/.test(r.url()));
  await confirm(page, () => migrate.click(), 'confirm-migrate');
  const res = await created;
  check(res.status() === 201, `creating the migration answered ${res.status()}: ${await res.text()}`);
  const id = (await res.json()).id;
  await page.waitForURL(`**/#/m/${id}`, { timeout: 5000 });
  log(`migration ${id}`);

  await follow(page, (phase, state) => phase === 'ready' && state === 'waiting');
  check((await page.locator('.lagchart canvas').count()) > 0, 'no lag chart');
  check((await page.locator('#bb-pct').textContent()) === '100%', 'base backup not shown at 100%');
  await follow(page, (phase) => phase === 'finalized', ['cutover', 'finalize']);
  summary.finalized = true;
  check((await page.locator('.actions button').count()) === 0, 'actions still offered after finalize');
  check((await page.locator('li.tl-row.tl-done').count()) >= 10, 'the timeline does not show the phases done');

  await page.goto(`${URL_}/#/audit`);
  await page.locator('table.audit tbody tr').first().waitFor({ timeout: 10000 });
  check((await page.locator(`table.audit a[href="#/m/${id}"]`).count()) > 0, 'the audit log does not name the migration');
  await screenshot(page, 'audit');
  await page.context().close();
  return id;
}

async function otherTeamFlow(browser, id) {
  const page = await newPage(browser, 'other team');
  await page.goto(`${URL_}/`);
  const ok = await signIn(page, OTHER_TOKEN);
  check(ok.status() === 200, `whoami with the other team's token answered ${ok.status()}`);
  await page.locator('table.databases').waitFor({ timeout: 10000 });
  await page.waitForTimeout(500);
  const row = page.locator(`tr[data-database="${DATABASE}"]`);
  check((await row.locator('button').count()) === 0, `the other team sees a button for ${DATABASE}`);
  await screenshot(page, 'other-team-databases');

  await page.goto(`${URL_}/#/m/${id}`);
  await page.waitForTimeout(2000);
  check((await page.locator('.actions button').count()) === 0, "the other team sees actions on the owner's migration");
  await screenshot(page, 'other-team-migration');

  // What a hand-made request gets, past the page's buttons.
  const statuses = await page.evaluate(async ({ db, mid, tok }) => {
    const call = (p) => fetch(p, { method: 'POST', headers: { Authorization: `Bearer ${tok}`, 'Content-Type': 'application/json' }, body: '{}' });
    return [(await call(`/v1/databases/${encodeURIComponent(db)}/migrations`)).status,
      (await call(`/v1/migrations/${encodeURIComponent(mid)}/rollback`)).status];
  }, { db: DATABASE, mid: id, tok: OTHER_TOKEN });
  summary.wrong_team_status = statuses[0];
  check(statuses[1] === 403, `the other team's rollback answered ${statuses[1]}, not 403`);
  bodies.push(await page.content());
  await page.context().close();
}

async function fleetFlow(browser) {
  const page = await newPage(browser, 'operator');
  await page.goto(`${URL_}/`);
  const ok = await signIn(page, TOKEN);
  check(ok.status() === 200, `whoami with the operator token answered ${ok.status()}`);
  const link = page.locator('nav a[href="#/fleet"]');
  await link.waitFor({ timeout: 10000 });
  await link.click();
  const row = page.locator(`tr[data-run="${FLEET_RUN}"]`);
  await row.waitFor({ timeout: 10000 });
  await screenshot(page, 'fleet-runs');
  await row.locator('a').click();
  await page.waitForURL(`**/#/fleet/${FLEET_RUN}`, { timeout: 5000 });
  await page.locator('#fleet-status[data-status="completed"]').waitFor({ timeout: 15000 });
  const db = page.locator(`table.fleet-report tr[data-database="${DATABASE}"]`);
  await db.waitFor({ timeout: 10000 });
  summary.fleet_status = await db.getAttribute('data-status');
  summary.fleet_phases = await db.locator('ul.phases li').count();
  summary.fleet_hold = (await db.locator('td.hold').textContent()).trim();
  summary.fleet_rolled_back = (await db.locator('td.rolled-back').textContent()).trim();
  check(summary.fleet_status === 'succeeded', `${DATABASE} is ${summary.fleet_status} in the report`);
  check(summary.fleet_phases >= 8, `only ${summary.fleet_phases} phase timings shown`);
  check(/\d/.test(summary.fleet_hold), `no cutover hold shown (${summary.fleet_hold})`);
  check(summary.fleet_rolled_back === 'no', `rolled back shown as ${summary.fleet_rolled_back}`);
  check((await db.locator(`a[href^="#/m/"]`).count()) === 1, 'no link to the migration');
  await screenshot(page, 'fleet-report');
  bodies.push(await page.content());
  await page.context().close();
}

async function main() {
  fs.rmSync(OUT, { recursive: true, force: true });
  fs.mkdirSync(OUT, { recursive: true });
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'],
  });
  try {
    if (MODE === 'fleet') {
      await fleetFlow(browser);
    } else {
      const id = await ownerFlow(browser);
      await otherTeamFlow(browser, id);
    }
  } catch (e) {
    problems.push(e.stack || String(e));
  } finally {
    await browser.close();
  }
  for (const s of SECRETS) for (const b of bodies) summary.secrets_leaked += b.split(s).length - 1;
  if (MODE !== 'fleet') {
    check(summary.unauthenticated_status === 401, 'a bad token was not answered 401');
    check(summary.wrong_team_status === 403, "the other team's Migrate was not answered 403");
  }
  check(summary.secrets_leaked === 0, 'a secret reached the browser');
  for (const p of problems) console.log(`PROBLEM: ${p}`);
  console.log(`E2E web ${JSON.stringify(summary)}`);
  process.exit(problems.length ? 1 : 0);
}

main();
