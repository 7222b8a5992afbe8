/**
 * `steward jobs` and `steward audit` against a real server and store: filters go through, and a long list
 * is read page by page with the cursor the previous page printed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPORT_WORKFLOW, startHarness, type Harness } from '../server/harness.js';
import { cliBin, runCli, tempDirFor } from './harness.js';

describe('steward jobs and steward audit on a real server', () => {
  let h: Harness;
  let configHome: string;
  let userEnv: Record<string, string>;
  let adminEnv: Record<string, string>;
  const jobIds: string[] = [];

  beforeAll(async () => {
    h = await startHarness({ title: 'papi cli lists' });
    configHome = await tempDirFor('papi cli lists');
    const { url } = await h.server.listen();
    const user = await h.userToken('papi-cli');
    userEnv = { STEWARD_SERVER: url, STEWARD_TOKEN: user };
    adminEnv = { STEWARD_SERVER: url, STEWARD_TOKEN: await h.adminToken() };
    await h.raw({
      method: 'POST',
      url: '/api/workflows',
      token: user,
      body: { source: REPORT_WORKFLOW },
    });
    for (let i = 0; i < 3; i++) {
      const job = await h.raw({
        method: 'POST',
        url: '/api/jobs',
        token: user,
        body: { workflow: 'report', params: { region: `r${i}` } },
      });
      jobIds.push((job.json as { id: string }).id);
    }
  });
  afterAll(async () => {
    await h.dispose();
  });

  it('pages `steward jobs` with the printed cursor', async () => {
    const first = await runCli(cliBin, ['jobs', '--limit', '2'], { configHome, env: userEnv });
    expect(first.code).toBe(0);
    expect(first.stdout).toContain(jobIds[2]);
    expect(first.stdout).toContain(jobIds[1]);
    expect(first.stdout).not.toContain(jobIds[0]);
    const cursor = /more: steward jobs --before (\S+)/.exec(first.stderr)?.[1];
    expect(cursor).toBeDefined();
    const second = await runCli(cliBin, ['jobs', '--limit', '2', '--before', cursor!, '--json'], {
      configHome,
      env: userEnv,
    });
    expect(second.code).toBe(0);
    const page = JSON.parse(second.stdout) as { jobs: { id: string }[]; next: string | null };
    expect(page.jobs.map((job) => job.id)).toEqual([jobIds[0]]);
    expect(page.next).toBeNull();

    const none = await runCli(cliBin, ['jobs', '--since', '2099-01-01', '--space', 'papi-cli'], {
      configHome,
      env: userEnv,
    });
    expect(none.code).toBe(0);
    expect(none.stdout).not.toContain(jobIds[0]!.slice(0, 10));
    const bad = await runCli(cliBin, ['jobs', '--until', 'last week'], { configHome, env: userEnv });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('query.until');
  });

  it('reruns a job with `steward rerun`, printing the new job', async () => {
    const run = await runCli(cliBin, ['rerun', jobIds[1]!, '--json'], { configHome, env: userEnv });
    expect(run.code).toBe(0);
    const job = JSON.parse(run.stdout) as { id: string; params: Record<string, unknown> };
    expect(job.id).not.toBe(jobIds[1]);
    expect(job.params).toMatchObject({ region: 'r1' });
    const other = await runCli(cliBin, ['rerun', jobIds[1]!], {
      configHome,
      env: { ...userEnv, STEWARD_TOKEN: await h.userToken('papi-cli-other') },
    });
    expect(other.code).toBe(1);
    expect(other.stderr).toContain('STEWARD_NOT_FOUND');
  });

  it('shows the audit log to admins with filters and paging', async () => {
    const forJob = await runCli(cliBin, ['audit', '--target', jobIds[0]!, '--json'], {
      configHome,
      env: adminEnv,
    });
    expect(forJob.code).toBe(0);
    const entries = (JSON.parse(forJob.stdout) as { entries: { action: string; actor: string }[] }).entries;
    expect(entries).toEqual([expect.objectContaining({ action: 'job.submit', actor: 'papi-cli' })]);

    const first = await runCli(cliBin, ['audit', '--action', 'job.submit', '--limit', '2'], {
      configHome,
      env: adminEnv,
    });
    expect(first.code).toBe(0);
    expect(first.stdout).toMatch(/^TIME\s+ACTOR\s+ACTION\s+TARGET\s+SOURCE\n/);
    expect(first.stdout).toContain(jobIds[2]);
    const cursor = /more: steward audit --before (\d+)/.exec(first.stderr)?.[1];
    const rest = await runCli(cliBin, ['audit', '--action', 'job.submit', '--before', cursor!], {
      configHome,
      env: adminEnv,
    });
    expect(rest.stdout).toContain(jobIds[0]);
    expect(rest.stdout).not.toContain(jobIds[2]);

    const refused = await runCli(cliBin, ['audit'], { configHome, env: userEnv });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('STEWARD_FORBIDDEN');
  });
});
