/**
 * The portal's Schedules page in Debian's Chromium against a real server (in-process, real HTTP, the built
 * portal): add a schedule with the form, see its next run times in its time zone, see a fired run with a
 * link to its job, pause, resume and delete; axe-core on the page.
 */
import path from 'node:path';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchBrowser, screenshot, seriousViolations, type Browser } from '../support/browser.js';
import { repoRoot } from '../support/steward.js';
import { until } from '../support/wait.js';
import { REPORT_WORKFLOW, startHarness, type Harness } from '../server/harness.js';

describe('the Schedules page of the portal', () => {
  let h: Harness;
  let browser: Browser;
  let url = '';

  beforeAll(async () => {
    h = await startHarness({ title: 'schedules portal', portalDir: path.join(repoRoot, 'dist', 'web') });
    url = (await h.server.listen()).url;
    const alice = await h.userToken('alice');
    await h.call('pushWorkflow', { token: alice, body: { source: REPORT_WORKFLOW } });
    // One schedule that fires at once (every second, overlap skip: one job, which stays offered).
    await h.call('createSchedule', {
      token: alice,
      body: { name: 'often', workflow: 'report', params: { region: 'south' }, cron: '* * * * * *' },
    });
    browser = await launchBrowser();
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await h?.dispose();
  }, 60_000);

  async function signIn(page: Page): Promise<void> {
    await page.goto(`${url}/`);
    await page.getByLabel('User name').fill('alice');
    await page.getByLabel('Password').fill('password-of-alice');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('button', { name: 'Sign out' }).waitFor();
  }

  it('adds a schedule, shows its next runs and last run, pauses, resumes and deletes it', async () => {
    const page = await browser.context.newPage();
    await signIn(page);
    await page.getByRole('link', { name: 'Schedules' }).click();
    await page.getByRole('heading', { name: 'Schedules' }).waitFor();

    // The schedule that fires every second shows its last run, linked to its job.
    const often = page.getByRole('row', { name: /often/ });
    await until(
      'the fired run to show',
      async () => {
        await page.reload();
        return (await often.getByRole('link').count()) > 0;
      },
      30_000,
      500,
    );

    await page.getByText('Add a schedule').click();
    await page.getByLabel('Name', { exact: true }).fill('nightly');
    await page.getByLabel(/^Workflow/).fill('report');
    await page.getByLabel('Cron expression').fill('30 2 * * *');
    await page.getByLabel('Time zone').fill('Europe/Berlin');
    await page.getByLabel(/^Params/).fill('region=north\nlimit=5');
    await page.getByLabel('While the previous run is still running').selectOption('queue');
    await page.getByRole('button', { name: 'Add schedule' }).click();
    await page.getByRole('status').filter({ hasText: 'Added schedule nightly' }).waitFor();

    const row = page.getByRole('row', { name: /nightly/ });
    await row.waitFor();
    expect(await row.getByRole('listitem').count()).toBe(3);
    expect(await row.textContent()).toContain('Europe/Berlin');
    expect(await row.textContent()).toContain('overlap queue');
    const stored = await h.call('showSchedule', {
      token: await h.userToken('alice'),
      params: { schedule: 'nightly' },
    });
    expect(stored).toMatchObject({ params: { region: 'north', limit: '5' }, overlap: 'queue' });
    const times = await Promise.all(
      (await row.locator('time').all()).map((node) => node.getAttribute('datetime')),
    );
    expect(times).toEqual(stored.nextRuns);

    expect(await seriousViolations(page), 'axe on the Schedules page').toEqual([]);
    await screenshot(page, 'portal-schedules');

    await row.getByRole('button', { name: 'Pause nightly' }).click();
    await row.getByRole('button', { name: 'Resume nightly' }).waitFor();
    expect(await row.textContent()).toContain('paused by alice');
    await row.getByRole('button', { name: 'Resume nightly' }).click();
    await row.getByRole('button', { name: 'Pause nightly' }).waitFor();
    await row.getByRole('button', { name: 'Delete nightly' }).click();
    await until(
      'the row to go',
      async () => (await page.getByRole('row', { name: /nightly/ }).count()) === 0,
    );
    await page.close();
  }, 120_000);
});
