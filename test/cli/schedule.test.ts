import { promises as fs } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ScheduleInfo } from '../../src/protocol/index.js';
import { REPORT_WORKFLOW, startHarness, type Harness } from '../server/harness.js';
import { cliBin, runCli, tempDirFor, type CliRun } from './harness.js';

/** `steward schedule …` (the built CLI) against a real in-process server over HTTP. */
describe('steward schedule', () => {
  let h: Harness;
  let dir: string;
  let env: Record<string, string>;

  beforeAll(async () => {
    dir = await tempDirFor('steward schedule');
    h = await startHarness({ title: 'cli schedules', scheduler: { enabled: false } });
    const { url } = await h.server.listen();
    const token = await h.userToken('alice');
    await h.call('pushWorkflow', { token, body: { source: REPORT_WORKFLOW } });
    env = { STEWARD_SERVER: url, STEWARD_TOKEN: token };
  }, 60_000);

  afterAll(async () => {
    await h?.dispose();
    await fs.rm(dir, { recursive: true, force: true });
  });

  const cli = (...args: string[]): Promise<CliRun> => runCli(cliBin, args, { configHome: dir, env });

  it('adds, lists, shows, pauses, resumes and deletes a schedule', async () => {
    const added = await cli(
      'schedule',
      'add',
      'nightly',
      'report',
      '--cron',
      '30 2 * * *',
      '--tz',
      'Europe/Berlin',
      '-p',
      'region=north',
      '--overlap',
      'queue',
    );
    expect(added.stderr).toBe('');
    expect(added.code).toBe(0);
    expect(added.stdout).toMatch(/^nightly {2}\(sch_[0-9a-f]{16}\) {2}active\n/);
    expect(added.stdout).toContain('cron:      30 2 * * *  (Europe/Berlin)');
    expect(added.stdout).toContain('policies:  misfire catch-up, overlap queue');
    expect(added.stdout).toContain('params:    region=north');

    const listed = await cli('schedule', 'list');
    expect(listed.code).toBe(0);
    expect(listed.stdout).toMatch(
      /nightly\s+sch_\w+\s+alice\s+alice\/report\s+30 2 \* \* \*\s+Europe\/Berlin\s+active/,
    );

    const shown = await cli('--json', 'schedule', 'show', 'nightly', '--runs', '5');
    expect(shown.code).toBe(0);
    const info = ScheduleInfo.parse(JSON.parse(shown.stdout));
    expect(info.nextRuns).toHaveLength(5);
    // 02:30 in Berlin is 00:30 or 01:30 UTC depending on daylight saving.
    for (const run of info.nextRuns) expect(run).toMatch(/T0[01]:30:00\.000Z$/);

    const paused = await cli('schedule', 'pause', 'nightly');
    expect(paused.stdout).toBe('paused schedule nightly\n');
    expect((await cli('schedule', 'show', info.id)).stdout).toContain('paused:    paused by alice');
    const resumed = await cli('schedule', 'resume', 'nightly');
    expect(resumed.stdout).toMatch(/^resumed schedule nightly; next run /);
    const deleted = await cli('schedule', 'delete', 'nightly');
    expect(deleted.stdout).toBe('deleted schedule nightly\n');
    const gone = await cli('schedule', 'show', 'nightly');
    expect(gone.code).not.toBe(0);
    expect(gone.stderr).toContain('no schedule nightly');
  });

  it('names the field the server refused: a cron expression it does not understand', async () => {
    const refused = await cli('schedule', 'add', 'bad', 'report', '--cron', 'every night', '-p', 'region=n');
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain('cron: "every night" is not understood');
    expect(refused.stderr).toContain('STEWARD_SCHEDULE_INVALID');
  });
});
