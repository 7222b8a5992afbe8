/**
 * The web portal in Debian's Chromium against a real `steward up`, as root, with real OS users: sign in,
 * run a workflow with params and an uploaded file, watch it live (DAG and log lines of a running step),
 * check the result table against figures computed here from the input, download the CSV, cancel, run again;
 * then isolation between users, admin pages, CSRF, a hostile result name, axe-core on every page, and the
 * responsiveness of a 50-step job with a 100k-line live log. Screenshots go to docs/images/.
 */
import { randomBytes } from 'node:crypto';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import type { Page } from 'playwright-core';
import { stringify } from 'yaml';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ApiUser } from '../support/api.js';
import { launchBrowser, screenshot, seriousViolations, type Browser } from '../support/browser.js';
import { OsUsers, type TestUser } from '../support/os-users.js';
import { freePort, isRoot, StewardInstance } from '../support/steward.js';
import { until } from '../support/wait.js';

const HOSTILE = '<img src=x onerror=alert(1)>';
const PNG =
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==';
const gate = path.join(os.tmpdir(), `steward-web-gate-${randomBytes(4).toString('hex')}`);
const wideGate = `${gate}-wide`;

/** Input rows the test generates, so the expected figures are computed here, independently of DuckDB. */
function salesCsv(): { text: string; rows: { product: string; units: number }[] } {
  const products = ['anvil', 'bolt', 'crank', 'dowel'];
  const rows = Array.from({ length: 60 }, (_, i) => ({
    product: products[(i * 7 + 3) % products.length]!,
    units: ((i * 13) % 17) + 1,
  }));
  return { text: `product,units\n${rows.map((r) => `${r.product},${r.units}`).join('\n')}\n`, rows };
}

function expectedFigures(rows: { product: string; units: number }[], minUnits: number) {
  const byProduct = new Map<string, { orders: number; units: number }>();
  for (const row of rows) {
    if (row.units < minUnits) continue;
    const entry = byProduct.get(row.product) ?? { orders: 0, units: 0 };
    entry.orders += 1;
    entry.units += row.units;
    byProduct.set(row.product, entry);
  }
  return [...byProduct.entries()].sort(([a], [b]) => a.localeCompare(b));
}

const reportWorkflow = {
  name: 'portal-report',
  description: 'Units per product from an uploaded CSV',
  params: {
    data: { type: 'file', required: true, description: 'Sales CSV with product and units columns' },
    min_units: { type: 'integer', default: 1, description: 'Smallest order counted' },
    since: { type: 'date', required: true, description: 'First day of the report' },
    region: { type: 'enum', values: ['EU', 'US'], default: 'EU' },
    ratio: { type: 'number', default: 0.5 },
    verbose: { type: 'boolean', default: false },
    gate: { type: 'string', required: true, description: 'A file whose existence lets the talk step end' },
  },
  steps: [
    { id: 'sales', read: { path: '${data}', format: 'csv' } },
    {
      id: 'by_product',
      sql: 'SELECT product, count(*) AS orders, sum(units) AS units FROM sales WHERE units >= $min_units GROUP BY product ORDER BY product',
    },
    {
      id: 'talk',
      shell:
        'for i in 1 2 3 4 5; do echo "tick $i for $region"; done; n=0; while [ ! -e "$gate" ] && [ $n -lt 1200 ]; do sleep 0.1; n=$((n+1)); done; echo released',
      needs: ['by_product'],
    },
  ],
  outputs: ['by_product'],
};

const longWorkflow = { name: 'portal-long', steps: [{ id: 'wait', shell: 'sleep 600' }] };

const failingWorkflow = {
  name: 'portal-failing',
  steps: [
    { id: 'fine', shell: 'echo fine' },
    { id: 'breaks', shell: 'echo "about to fail" >&2; exit 3', needs: ['fine'] },
  ],
};

const hostileWorkflow = {
  name: 'portal-hostile',
  steps: [
    {
      id: 'make',
      python: [
        'import os',
        `open(os.path.join(os.environ["STEWARD_OUTPUT_DIR"], ${JSON.stringify(HOSTILE)}), "w").write("<b>not bold</b>\\n")`,
        // A 1x1 PNG, shown inline from a blob: URL (the CSP allows img-src blob:).
        'import base64',
        `open(os.path.join(os.environ["STEWARD_OUTPUT_DIR"], "dot.png"), "wb").write(base64.b64decode("${PNG}"))`,
      ].join('\n'),
    },
  ],
};

/** 50 steps: one writes 100k lines and waits; 49 small ones in 7 chains. */
function wideWorkflow() {
  const steps: Record<string, unknown>[] = [
    {
      id: 'loud',
      shell:
        'awk \'BEGIN { for (i = 1; i <= 100000; i++) print "line " i " of the loud step" }\'; n=0; while [ ! -e "$gate" ] && [ $n -lt 3000 ]; do sleep 0.1; n=$((n+1)); done',
    },
  ];
  for (let i = 1; i < 50; i++) {
    const id = `s${String(i).padStart(2, '0')}`;
    steps.push({
      id,
      shell: `echo ${id}`,
      ...(i > 7 ? { needs: [`s${String(i - 7).padStart(2, '0')}`] } : {}),
    });
  }
  return { name: 'portal-wide', params: { gate: { type: 'string', required: true } }, steps };
}

describe.runIf(isRoot)('the web portal in Chromium', () => {
  const osUsers = new OsUsers();
  let steward: StewardInstance;
  let browser: Browser;
  let alice: TestUser;
  let bob: TestUser;
  let aliceApi: ApiUser;
  let bobApi: ApiUser;
  let adminApi: ApiUser;
  let firstJob = '';
  const password = 'portal-web-password-1';
  const csv = salesCsv();
  const dialogs: string[] = [];
  /** Jobs that would sleep for minutes: canceled after each test, so they never hold the agent's slots. */
  const longJobs: string[] = [];
  let wideJob = '';

  /** Signs in with the keyboard alone: Tab to each field, type, Enter. */
  async function signIn(page: Page, name: string, secret: string): Promise<void> {
    await page.goto(`${steward.url}/`);
    await page.getByLabel('User name').waitFor();
    await page.keyboard.press('Tab');
    expect(await page.evaluate('document.activeElement.id')).toBe('signin-name');
    await page.keyboard.type(name);
    await page.keyboard.press('Tab');
    expect(await page.evaluate('document.activeElement.id')).toBe('signin-password');
    await page.keyboard.type(secret);
    await page.keyboard.press('Enter');
    await page.getByRole('button', { name: 'Sign out' }).waitFor();
  }

  async function checkA11y(page: Page, what: string): Promise<void> {
    const violations = await seriousViolations(page);
    expect(violations, `${what}: ${JSON.stringify(violations, null, 1)}`).toEqual([]);
  }

  async function newPage(): Promise<Page> {
    const page = await browser.context.newPage();
    page.on('dialog', (dialog) => {
      dialogs.push(dialog.message());
      void dialog.dismiss();
    });
    return page;
  }

  beforeAll(async () => {
    alice = await osUsers.user('weba');
    bob = await osUsers.user('webb');
    steward = await StewardInstance.start();
    adminApi = await ApiUser.login(steward.url, 'admin', steward.adminPassword);
    await adminApi.createUser(alice.name, password);
    await adminApi.createUser(bob.name, password);
    aliceApi = await ApiUser.login(steward.url, alice.name, password);
    bobApi = await ApiUser.login(steward.url, bob.name, password);
    for (const workflow of [reportWorkflow, longWorkflow, hostileWorkflow, failingWorkflow, wideWorkflow()]) {
      await aliceApi.push(stringify(workflow));
    }
    browser = await launchBrowser();
  }, 180_000);

  afterEach(async () => {
    for (const id of longJobs.splice(0)) await aliceApi.request('POST', `/api/jobs/${id}/cancel`);
    // The wide job's loud step waits for its gate: open it if that test ended early.
    if (wideJob) await writeFile(wideGate, 'go');
  });

  afterAll(async () => {
    await browser?.close();
    await steward?.destroy();
    await osUsers.cleanup();
    await rm(gate, { force: true });
    await rm(wideGate, { force: true });
  }, 120_000);

  it('signs in, runs a workflow with params and an uploaded file, and shows it live', async () => {
    const page = await newPage();
    await page.goto(`${steward.url}/`);
    await page.getByLabel('User name').waitFor();
    await checkA11y(page, 'sign-in page');
    await screenshot(page, 'portal-sign-in');
    // A wrong password is refused in words, with its code.
    await page.getByLabel('User name').fill(alice.name);
    await page.getByLabel('Password').fill('not-the-password');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await expect.poll(() => page.locator('.error-code').textContent()).toMatch(/^STEWARD_/);
    await signIn(page, alice.name, password);

    await page.getByRole('link', { name: 'Workflows' }).click();
    await page.getByRole('link', { name: 'portal-report' }).click();
    await page.locator('.source .tok-key').first().waitFor();
    await page.locator('svg.dag .dag-node[data-step="by_product"]').waitFor();
    await checkA11y(page, 'workflow page');
    await screenshot(page, 'portal-workflow', true);
    await page.getByRole('link', { name: /^Run version/ }).click();
    await page.getByLabel(/^gate/).waitFor();
    await checkA11y(page, 'run form');

    // Leave the required date out: the server's error shows at that field.
    await page.getByLabel(/^gate/).fill(gate);
    await page
      .getByLabel(/^data/)
      .setInputFiles({ name: 'sales.csv', mimeType: 'text/csv', buffer: Buffer.from(csv.text) });
    await page.getByLabel(/^min_units/).fill('4');
    await page.getByLabel(/^region/).selectOption('US');
    await page.getByLabel(/^verbose/).check();
    await page.getByRole('button', { name: 'Run' }).click();
    const sinceError = page.locator('[data-param="since"] .field-error');
    await sinceError.waitFor();
    expect(await sinceError.textContent()).toMatch(/STEWARD_[A-Z_]+/);
    await screenshot(page, 'portal-run-form', true);

    await page.getByLabel(/^since/).fill('2026-01-31');
    await page.getByRole('button', { name: 'Run' }).click();
    await page.waitForURL(/\/jobs\/[^/]+$/);
    firstJob = decodeURIComponent(new URL(page.url()).pathname.split('/').pop()!);
    // A marker that a reload would lose: everything below must arrive live.
    await page.evaluate('window.marker = 42');

    await page.locator('.dag-node[data-step="by_product"].state-succeeded').waitFor({ timeout: 60_000 });
    await page.getByRole('button', { name: 'Logs of talk' }).click();
    await page.locator('.log').getByText('tick 3 for US').waitFor({ timeout: 60_000 });
    // The step is still running: it waits for the gate file, which only this test creates.
    expect(await page.locator('[data-step-row="talk"] .badge').textContent()).toBe('running');
    await page.locator('.dag-node[data-step="talk"].state-running').waitFor();
    await checkA11y(page, 'running job page');
    await screenshot(page, 'portal-job-running', true);
    await writeFile(gate, 'go');
    await page.locator('.dag-node[data-step="talk"].state-succeeded').waitFor({ timeout: 60_000 });
    await page.locator('h1 .badge.state-succeeded').waitFor({ timeout: 60_000 });
    expect(await page.evaluate('window.marker')).toBe(42);

    // The result table, against figures computed here from the uploaded input.
    const table = page.locator('table[data-result="by_product"]');
    await table.waitFor();
    const headers = await table.locator('thead th').allTextContents();
    expect(headers.map((h) => h.split(' ')[0])).toEqual(['product', 'orders', 'units']);
    expect(await table.locator('thead th').nth(1).getAttribute('data-type')).toMatch(/INT/);
    const cells: string[][] = [];
    for (const row of await table.locator('tbody tr').all())
      cells.push(await row.locator('td').allTextContents());
    const expected = expectedFigures(csv.rows, 4);
    expect(cells).toEqual(expected.map(([product, f]) => [product, String(f.orders), String(f.units)]));
    await checkA11y(page, 'finished job page');
    await screenshot(page, 'portal-job-results', true);

    // The CSV download holds the same figures.
    const [download] = await Promise.all([
      page.waitForEvent('download'),
      page.locator('[data-result-name="by_product"]').getByRole('link', { name: 'Download CSV' }).click(),
    ]);
    const downloaded = (await readFile(await download.path(), 'utf8')).trim().split('\n');
    expect(downloaded[0]).toBe('product,orders,units');
    expect(downloaded.slice(1)).toEqual(expected.map(([product, f]) => `${product},${f.orders},${f.units}`));

    // The job is listed on the jobs page.
    await page.getByRole('link', { name: 'Jobs', exact: true }).click();
    await page.locator(`tr[data-job="${firstJob}"]`).waitFor();
    await checkA11y(page, 'jobs page');
    await screenshot(page, 'portal-jobs');
    await page.close();
  }, 240_000);

  it('runs a job again with the same params and input file, and cancels a long job', async () => {
    const page = await newPage();
    await page.goto(`${steward.url}/jobs/${encodeURIComponent(firstJob)}`);
    await page.getByRole('button', { name: 'Run again' }).click();
    const refused = page.locator('.actions .error');
    const firstPath = `/jobs/${encodeURIComponent(firstJob)}`;
    await until(
      'the new job to open, or an error',
      async () => (await refused.count()) > 0 || new URL(page.url()).pathname !== firstPath,
      30_000,
    );
    expect(await refused.count(), (await refused.allTextContents()).join('\n')).toBe(0);
    await page.waitForURL((url) => !url.pathname.endsWith(`/${encodeURIComponent(firstJob)}`));
    const rerun = decodeURIComponent(new URL(page.url()).pathname.split('/').pop()!);
    expect(rerun).not.toBe(firstJob);
    await page.locator('h1 .badge.state-succeeded').waitFor({ timeout: 90_000 });
    const [before, after] = [await aliceApi.job(firstJob), await aliceApi.job(rerun)];
    expect(after.params).toEqual(before.params);
    const table = page.locator('table[data-result="by_product"] tbody tr');
    await table.first().waitFor();
    expect(await table.count()).toBe(expectedFigures(csv.rows, 4).length);

    // Cancel: a job that would sleep ten minutes. The open jobs list shows it, and its state, live.
    await page.getByRole('link', { name: 'Jobs', exact: true }).click();
    await page.locator(`tr[data-job="${rerun}"]`).waitFor();
    await page.evaluate('window.marker = 7');
    const long = await aliceApi.submit('portal-long');
    longJobs.push(long);
    await page.locator(`tr[data-job="${long}"] .badge.state-running`).waitFor({ timeout: 60_000 });
    expect(await page.evaluate('window.marker')).toBe(7);
    await page.goto(`${steward.url}/jobs/${encodeURIComponent(long)}`);
    await page.locator('.dag-node[data-step="wait"].state-running').waitFor({ timeout: 60_000 });
    await page.getByRole('button', { name: 'Cancel job' }).click();
    await page.locator('h1 .badge.state-canceled').waitFor({ timeout: 60_000 });
    expect((await aliceApi.job(long)).state).toBe('canceled');

    // The state filter: only the canceled job is listed.
    await page.getByRole('link', { name: 'Jobs', exact: true }).click();
    await page.locator(`tr[data-job="${rerun}"]`).waitFor();
    await page.getByLabel('State').selectOption('canceled');
    await page.getByRole('button', { name: 'Apply filters' }).click();
    await page.locator(`tr[data-job="${rerun}"]`).waitFor({ state: 'detached' });
    expect(await page.locator('tr[data-job]').evaluateAll((rows) => rows.length)).toBe(1);
    expect(await page.locator(`tr[data-job="${long}"]`).count()).toBe(1);
    await page.close();
  }, 240_000);

  /** Presses Tab until the focused element's accessible text is `name`; fails after `limit` presses. */
  async function tabTo(page: Page, name: string, limit = 120): Promise<void> {
    for (let i = 0; i < limit; i++) {
      await page.keyboard.press('Tab');
      const focused = String(
        await page.evaluate(
          "(() => { const el = document.activeElement; return el ? String(el.getAttribute('aria-label') || el.innerText || '').trim() : ''; })()",
        ),
      );
      if (focused === name) return;
    }
    throw new Error(`no element named ${JSON.stringify(name)} took the focus within ${limit} Tab presses`);
  }

  it('runs, cancels and reruns a workflow with the keyboard alone', async () => {
    // A browser of its own: the shared one is signed in already, and this starts at the sign-in form.
    const own = await launchBrowser();
    const page = await own.context.newPage();
    await signIn(page, alice.name, password);
    await tabTo(page, 'Workflows');
    await page.keyboard.press('Enter');
    await page.waitForURL((url) => url.pathname === '/workflows');
    await tabTo(page, 'portal-long');
    await page.keyboard.press('Enter');
    await page.waitForURL((url) => url.pathname.endsWith('/portal-long'));
    await tabTo(page, 'Run version 1');
    await page.keyboard.press('Enter');
    await page.getByRole('button', { name: 'Run', exact: true }).waitFor();
    await tabTo(page, 'Run');
    await page.keyboard.press('Enter');
    await page.waitForURL((url) => url.pathname.startsWith('/jobs/'));
    const job = decodeURIComponent(new URL(page.url()).pathname.split('/').pop()!);
    longJobs.push(job);
    await page.locator('.dag-node[data-step="wait"].state-running').waitFor({ timeout: 60_000 });
    await tabTo(page, 'Cancel job');
    await page.keyboard.press('Enter');
    await page.locator('h1 .badge.state-canceled').waitFor({ timeout: 60_000 });
    expect((await aliceApi.job(job)).state).toBe('canceled');
    await tabTo(page, 'Run again');
    await page.keyboard.press('Enter');
    await page.waitForURL((url) => !url.pathname.endsWith(`/${encodeURIComponent(job)}`));
    const again = decodeURIComponent(new URL(page.url()).pathname.split('/').pop()!);
    longJobs.push(again);
    expect((await aliceApi.job(again)).workflow).toMatchObject({ name: 'portal-long', version: 1 });
    await tabTo(page, 'Jobs');
    await page.keyboard.press('Enter');
    await page.locator(`tr[data-job="${again}"]`).waitFor();
    await own.close();
  }, 180_000);

  it('shows another user none of the first user’s jobs, and the same not-found as the API', async () => {
    const other = await launchBrowser();
    try {
      const page = await other.context.newPage();
      await signIn(page, bob.name, password);
      await page.locator('table.jobs').waitFor();
      await page.locator('p.muted', { hasText: 'No jobs match.' }).waitFor();
      expect(await page.locator('tr[data-job]').count()).toBe(0);
      const api = await bobApi.request('GET', `/api/jobs/${firstJob}`);
      const apiError = (api.body as { error: { code: string; message: string } }).error;
      await page.goto(`${steward.url}/jobs/${encodeURIComponent(firstJob)}`);
      const shown = page.locator('.error');
      await shown.waitFor();
      expect(await shown.locator('.error-code').textContent()).toBe(apiError.code);
      expect(await shown.locator('.error-message').textContent()).toBe(apiError.message);
      expect(api.status).toBe(404);

      // No admin page for a non-admin: no link, no page, and the API refuses.
      expect(await page.getByRole('link', { name: 'Users' }).count()).toBe(0);
      expect(await page.getByRole('link', { name: 'Audit log' }).count()).toBe(0);
      await page.goto(`${steward.url}/admin/users`);
      await page.getByRole('heading', { name: 'Page not found' }).waitFor();
      const status = await page.evaluate(async () => (await fetch('/api/users')).status);
      expect(status).toBe(403);
      expect((await bobApi.request('GET', '/api/audit')).status).toBe(403);
    } finally {
      await other.close();
    }
  }, 120_000);

  it('refuses a forged cross-site POST and a cookie-only POST without the CSRF token', async () => {
    const long = await aliceApi.submit('portal-long');
    longJobs.push(long);
    const page = await newPage();
    await page.goto(`${steward.url}/jobs`);
    await page.getByRole('button', { name: 'Sign out' }).waitFor();
    // Same origin, the cookie, but no X-CSRF-Token header.
    const noToken = await page.evaluate(async (id) => {
      const response = await fetch(`/api/jobs/${id}/cancel`, { method: 'POST' });
      return { status: response.status, body: await response.text() };
    }, long);
    expect(noToken.status).toBe(403);
    expect(noToken.body).toContain('STEWARD_CSRF_REJECTED');

    // A page on another local origin posts a form to the server in the signed-in browser.
    const evilPort = await freePort();
    const evil: Server = createServer((_request, response) => {
      response.setHeader('content-type', 'text/html');
      response.end(
        `<form id="f" method="post" action="${steward.url}/api/jobs/${long}/cancel"><input name="x" value="1"></form>` +
          `<script>document.getElementById('f').submit()</script>`,
      );
    });
    await new Promise<void>((resolve) => evil.listen(evilPort, '127.0.0.2', resolve));
    try {
      const attacked = await newPage();
      const answered = attacked.waitForResponse((r) => r.url().includes(`/api/jobs/${long}/cancel`));
      await attacked.goto(`http://127.0.0.2:${evilPort}/`);
      const response = await answered;
      expect(response.status()).toBeGreaterThanOrEqual(400);
      expect(response.status()).toBeLessThan(500);
      await attacked.close();
    } finally {
      evil.close();
    }
    expect((await aliceApi.job(long)).state).not.toBe('canceled');
    await page.close();
  }, 120_000);

  it('renders a result named like HTML as text, and fires no script', async () => {
    const id = await aliceApi.submit('portal-hostile');
    expect((await aliceApi.waitFor(id)).state).toBe('succeeded');
    const page = await newPage();
    await page.goto(`${steward.url}/jobs/${encodeURIComponent(id)}`);
    const name = page.locator('.result-name').filter({ hasText: 'onerror' });
    await name.waitFor();
    expect(await name.textContent()).toBe(HOSTILE);
    await page.getByRole('button', { name: `View ${HOSTILE}` }).click();
    await page.locator('.file-text').waitFor();
    expect(await page.locator('.file-text').textContent()).toBe('<b>not bold</b>\n');
    expect(await page.locator('img[src="x"], .file-text b').count()).toBe(0);
    await page.getByRole('button', { name: 'View dot.png' }).click();
    const image = page.getByRole('img', { name: 'Result dot.png' });
    await image.waitFor();
    expect(await image.getAttribute('src')).toMatch(/^blob:/);
    // Decoded: a blocked or broken image has no natural width.
    await expect.poll(() => page.evaluate("document.querySelector('img.file-image').naturalWidth")).toBe(1);
    expect(dialogs).toEqual([]);

    // A failed job: its error in words with its code, naming the failing step, whose stderr is shown.
    const failed = await aliceApi.submit('portal-failing');
    expect((await aliceApi.waitFor(failed)).state).toBe('failed');
    await page.goto(`${steward.url}/jobs/${encodeURIComponent(failed)}`);
    const error = page.locator('.job-error');
    await error.waitFor();
    expect(await error.textContent()).toContain('at step breaks');
    expect(await error.locator('.error-code').textContent()).toMatch(/^STEWARD_/);
    await page.getByRole('button', { name: 'stderr' }).click();
    await page.locator('.log').getByText('about to fail').waitFor();
    await checkA11y(page, 'failed job page');
    await screenshot(page, 'portal-job-failed', true);
    await page.close();
  }, 120_000);

  it('shows admins every admin page, each passing axe-core', async () => {
    const admin = await launchBrowser();
    try {
      const page = await admin.context.newPage();
      await signIn(page, 'admin', steward.adminPassword);
      await page.locator('tr[data-job]').first().waitFor();
      for (const [section, heading] of [
        ['users', 'Users'],
        ['groups', 'Groups'],
        ['spaces', 'Spaces and members'],
        ['tokens', 'Tokens'],
        ['agents', 'Agents'],
        ['audit', 'Audit log'],
      ] as const) {
        await page
          .getByRole('link', { name: heading === 'Spaces and members' ? 'Spaces' : heading, exact: true })
          .click();
        await page.getByRole('heading', { level: 1, name: heading }).waitFor();
        await page.locator('table, .agent, .space').first().waitFor();
        await checkA11y(page, `admin ${section}`);
        await screenshot(page, `portal-admin-${section}`);
      }
      await page.getByRole('link', { name: 'Users', exact: true }).click();
      await page.getByRole('cell', { name: alice.name, exact: true }).waitFor();
      await page.getByRole('link', { name: 'Workflows' }).click();
      await page.getByRole('heading', { level: 1, name: 'Workflows' }).waitFor();
      await page.getByRole('link', { name: 'portal-report' }).first().waitFor();
      await checkA11y(page, 'workflows page');
      await screenshot(page, 'portal-workflows');
    } finally {
      await admin.close();
    }
  }, 180_000);

  it('keeps a 50-step job page with a 100k-line live log responsive (figures printed)', async () => {
    const id = await aliceApi.submit('portal-wide', { gate: wideGate });
    wideJob = id;
    const page = await newPage();
    const started = Date.now();
    await page.goto(`${steward.url}/jobs/${encodeURIComponent(id)}`);
    await page.locator('.dag-node').nth(49).waitFor();
    await page.getByRole('button', { name: 'Logs of loud' }).click();
    const log = page.locator('.log');
    await until(
      'the 100k lines in the log view',
      async () => Number(await log.getAttribute('data-lines')) >= 100_000,
      180_000,
    );
    const renderMs = Date.now() - started;
    const running = await page.locator('[data-step-row="loud"] .badge').textContent();
    await log.scrollIntoViewIfNeeded();
    await screenshot(page, 'portal-job-wide');
    // Measured in the page: from a change (scroll to another place in the log, a click on a button) to the
    // next painted frame. A string, not a function: the test program has no DOM types.
    const figures = await page.evaluate<{
      scrollMedian: number;
      scrollMax: number;
      clickMedian: number;
      clickMax: number;
      domNodes: number;
    }>(`(async () => {
      const frame = () => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
      const scroller = document.querySelector('.log');
      const scrolls = [];
      for (let i = 0; i < 30; i++) {
        const t0 = performance.now();
        scroller.scrollTop = ((i * 7919) % 100) * (scroller.scrollHeight / 100);
        await frame();
        scrolls.push(performance.now() - t0);
      }
      const clicks = [];
      const buttons = [...document.querySelectorAll('.tabs button')];
      for (let i = 0; i < 10; i++) {
        const t0 = performance.now();
        buttons[i % 2].click();
        await frame();
        clicks.push(performance.now() - t0);
      }
      const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
      return {
        scrollMedian: median(scrolls),
        scrollMax: Math.max(...scrolls),
        clickMedian: median(clicks),
        clickMax: Math.max(...clicks),
        domNodes: document.getElementsByTagName('*').length,
      };
    })()`);
    await writeFile(wideGate, 'go');
    console.log(
      `portal responsiveness (50 steps, 100k-line log, Chromium headless): loud step ${running} while measured; ` +
        `page open to 100k lines shown ${renderMs} ms; scroll-to-paint median ${figures.scrollMedian.toFixed(1)} ms, ` +
        `max ${figures.scrollMax.toFixed(1)} ms; click-to-paint median ${figures.clickMedian.toFixed(1)} ms, ` +
        `max ${figures.clickMax.toFixed(1)} ms; ${figures.domNodes} DOM elements`,
    );
    // A generous sanity bound only: the figures above are the measurement.
    expect(figures.scrollMax).toBeLessThan(5000);
    expect(figures.clickMax).toBeLessThan(5000);
    expect((await aliceApi.waitFor(id, 120_000)).state).toBe('succeeded');
    await page.close();
  }, 300_000);

  it('shows a banner while the server is down, and reconnects by itself when it is back', async () => {
    const page = await newPage();
    await page.goto(`${steward.url}/jobs`);
    await page.locator(`tr[data-job="${firstJob}"]`).waitFor();
    await steward.stop();
    const banner = page.getByRole('alert').filter({ hasText: 'The server cannot be reached' });
    await banner.waitFor({ timeout: 30_000 });
    await screenshot(page, 'portal-offline');
    await steward.up();
    await banner.waitFor({ state: 'detached', timeout: 60_000 });
    // Back without a reload, still signed in, with data loaded again.
    await page.locator(`tr[data-job="${firstJob}"]`).waitFor();
    await page.getByRole('button', { name: 'Sign out' }).waitFor();
    await page.close();
  }, 180_000);
});
