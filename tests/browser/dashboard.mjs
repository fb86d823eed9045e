// Drives the lockstep dashboard in Debian's Chromium while tests/browser_dashboard.rs moves a
// ServiceTrace through its stages. Protocol on stdio: this script prints `STEP <name>` when the page
// is ready for the next change and waits for a line `DONE` on stdin; it prints `PASS` at the end.
// Environment: LOCKSTEP_URL, LOCKSTEP_TOKEN, SCREENSHOTS (directory), CHROMIUM (default /usr/bin/chromium).
import { chromium } from 'playwright-core';
import { createInterface } from 'node:readline';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const url = process.env.LOCKSTEP_URL;
const token = process.env.LOCKSTEP_TOKEN;
const shots = process.env.SCREENSHOTS;
const WAIT = 30_000;
if (!url || !token || !shots) {
  console.error('LOCKSTEP_URL, LOCKSTEP_TOKEN and SCREENSHOTS must be set');
  process.exit(2);
}
mkdirSync(shots, { recursive: true });

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function step(name) {
  console.log(`STEP ${name}`);
  const { value, done } = await lines.next();
  if (done || value.trim() !== 'DONE') throw new Error(`driver did not complete step ${name}: ${value}`);
}
const log = (...a) => console.error('[browser]', ...a);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
let failed = false;
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.on('pageerror', (e) => { log('page error:', e.message); failed = true; });
  page.on('console', (m) => { if (m.type() === 'error') log('console error:', m.text()); });
  await page.goto(url);

  // Sign in once; the token stays in this tab's sessionStorage.
  await page.getByLabel('Token').fill(token);
  await page.getByRole('button', { name: 'Use token' }).click();
  const traces = page.getByRole('table', { name: /One row per ServiceTrace/ });
  const orders = traces.locator('tbody tr[data-key="orders/orders"]');
  await orders.waitFor({ timeout: WAIT });
  // Header cells are real <th scope=col> cells a screen reader announces.
  for (const h of ['Service', 'Build', 'Commit', 'State']) {
    await traces.getByRole('columnheader', { name: h, exact: true }).waitFor({ timeout: WAIT });
  }
  await page.evaluate(() => { window.__sameDocument = 'still-here'; });
  await page.waitForFunction(() => document.querySelector('tr[data-key="orders/orders"]')?.dataset.state === 'InProgress',
    null, { timeout: WAIT });
  log('row shows the build in progress');
  await page.screenshot({ path: join(shots, 'dashboard-building.png'), fullPage: true });

  await step('build-succeeded');
  await page.waitForFunction(() => document.querySelector('tr[data-key="orders/orders"]')?.textContent.includes('1234567'),
    null, { timeout: WAIT });
  log('row shows the new commit');

  await step('deployed');
  await page.waitForFunction(() => document.querySelector('tr[data-key="orders/orders"]')?.dataset.state === 'Succeeded',
    null, { timeout: WAIT });
  const same = await page.evaluate(() => window.__sameDocument);
  if (same !== 'still-here') throw new Error('the page was reloaded; live updates must not reload');
  log('row turned Succeeded without a reload');
  const gates = page.getByRole('table', { name: /Every PipelineGate/ });
  await gates.locator('tbody tr[data-key="orders/base-image"]', { hasText: 'Open' }).waitFor({ timeout: WAIT });
  await page.screenshot({ path: join(shots, 'dashboard.png'), fullPage: true });

  // Stages and history: keyboard only, focus the toggle and press Enter.
  const toggle = orders.getByRole('button', { name: /Stages and history of orders/ });
  await toggle.focus();
  await page.keyboard.press('Enter');
  if (await toggle.getAttribute('aria-expanded') !== 'true') throw new Error('history toggle did not expand');
  const historyId = await toggle.getAttribute('aria-controls');
  const history = page.locator(`#${historyId}`);
  await history.waitFor({ state: 'visible', timeout: WAIT });
  const stageTable = history.getByRole('table', { name: /Stages of the newest build of orders\/orders/ });
  for (const stage of ['build', 'manifest', 'deployed']) {
    const row = stageTable.locator(`tbody tr[data-stage="${stage}"]`);
    await row.waitFor({ timeout: WAIT });
    if (!(await row.textContent()).includes('Succeeded')) throw new Error(`stage ${stage} is not Succeeded`);
  }
  if (process.env.EXPECT_HISTORY === '1') {
    // ServiceTrace's status.history (environments and history): one row per build, newest first.
    const historyTable = history.getByRole('table', { name: /Build history of orders\/orders/ });
    await historyTable.locator('tbody tr').first().waitFor({ timeout: WAIT });
    const rows = await historyTable.locator('tbody tr').count();
    if (rows < 2) throw new Error(`expected at least two builds in the history, saw ${rows}`);
    const first = await historyTable.locator('tbody tr').first().textContent();
    if (!first.includes('1234567')) throw new Error(`newest history row should be commit 1234567: ${first}`);
    log(`history shows ${rows} builds`);
  } else {
    await history.getByText('No build history recorded for orders/orders yet.').waitFor({ timeout: WAIT });
    log('stages shown; this CRD has no status.history');
  }
  // Enter again closes it.
  await page.keyboard.press('Enter');
  await history.waitFor({ state: 'hidden', timeout: WAIT });
  await page.keyboard.press('Enter');
  await history.waitFor({ state: 'visible', timeout: WAIT });
  await page.screenshot({ path: join(shots, 'dashboard-history.png'), fullPage: true });

  // Filter by commit: the page and its URL follow; other services disappear.
  const commit = page.getByLabel('Commit');
  await commit.fill('1234567');
  await orders.waitFor({ timeout: WAIT });
  await traces.locator('tbody tr[data-key="orders/payments"]').waitFor({ state: 'detached', timeout: WAIT });
  if (!page.url().includes('commit=1234567')) throw new Error(`filter not in the URL: ${page.url()}`);
  await page.screenshot({ path: join(shots, 'dashboard-filtered.png'), fullPage: true });
  await commit.fill('0000000');
  await page.getByText('No ServiceTrace matches.').waitFor({ timeout: WAIT });
  await commit.fill('');
  await traces.locator('tbody tr[data-key="orders/payments"]').waitFor({ timeout: WAIT });
  log('commit filter narrows and restores the table');
  if (failed) throw new Error('the page raised an error');
  console.log('PASS');
} catch (e) {
  console.error('[browser] FAILED:', e.stack || e.message);
  process.exitCode = 1;
} finally {
  await browser.close();
}
process.exit(process.exitCode || 0);
