/**
 * Capacity, idle executors and agent death, through a real `steward up` as root with real OS users:
 * offers that do not fit are handed back (and run later), never started and failed; idle executors exit;
 * `kill -9` of the agent takes its executors and their steps with it.
 */
import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { JobDetail } from '../../src/protocol/index.js';
import { ApiUser } from '../support/api.js';
import { agentEvents, matching, readLogRecords } from '../support/logs.js';
import { OsUsers, type TestUser } from '../support/os-users.js';
import { StewardInstance, isRoot, tempDir } from '../support/steward.js';
import { until } from '../support/wait.js';

const nap = {
  name: 'nap',
  params: { secs: { type: 'number', default: 1 } },
  steps: [{ id: 'sleep', shell: 'echo $$ > "$TMPDIR/nap-$secs.pid"\nsleep "$secs"' }],
};

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

const ms = (time: string | null) => (time ? Date.parse(time) : Number.NaN);

describe.runIf(isRoot)('capacity, idle timeout and agent death', () => {
  const osUsers = new OsUsers();
  let steward: StewardInstance;
  let scratch: string;
  let alice: TestUser;
  let bob: TestUser;
  let aliceApi: ApiUser;
  let bobApi: ApiUser;

  beforeAll(async () => {
    scratch = await tempDir('cap');
    alice = await osUsers.user('ca', { createHome: false });
    bob = await osUsers.user('cb', { createHome: false });
    const config = path.join(scratch, 'steward.yaml');
    await writeFile(
      config,
      stringify({
        agent: {
          id: 'exec-cap',
          idleTimeout: '2s',
          stopTimeout: '2s',
          limits: { memory: '512MiB', cpus: 1 },
          duckdb: { threads: 2 },
          // One executor's worth of core tokens (threads/2 = 1), one job per user.
          capacity: { tokens: 1, maxJobsPerUser: 1 },
        },
      }),
    );
    // --debug: the agent's records (an offer held for want of room) on stderr, for the test to wait on.
    steward = await StewardInstance.start({ extraArgs: ['--config', config, '--debug'] });
    const admin = await ApiUser.login(steward.url, 'admin', steward.adminPassword);
    for (const user of [alice, bob]) await admin.createUser(user.name, 'capacity-password-1');
    aliceApi = await ApiUser.login(steward.url, alice.name, 'capacity-password-1');
    bobApi = await ApiUser.login(steward.url, bob.name, 'capacity-password-1');
    // Each user runs the workflow of their own personal space.
    for (const user of [aliceApi, bobApi]) await user.push(stringify(nap));
  }, 60_000);

  afterAll(async () => {
    await steward?.destroy();
    await osUsers.cleanup();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  }, 30_000);

  it("hands back a new user's offer while the machine's core tokens are taken, and runs it once they free", async () => {
    const first = await aliceApi.submit('nap', { secs: 2 });
    await until('alice running', async () => (await aliceApi.job(first)).state === 'running');
    const second = await bobApi.submit('nap', { secs: 0 });
    // The agent holds bob's offer for want of room (it does not start it); the job stays offered.
    const held = await steward.waitForLog(
      "bob's offer held",
      (record) => record.jobId === second && 'handBackMs' in record,
    );
    expect(held).toMatchObject({ user: bob.name });
    expect(typeof held.reason).toBe('string');
    expect((await bobApi.job(second)).state).toBe('offered');
    const [a, b] = await Promise.all([aliceApi.waitFor(first), bobApi.waitFor(second)]);
    expect(a.state).toBe('succeeded');
    expect(b.state, JSON.stringify(b.error)).toBe('succeeded');
    expect(ms(b.startedAt)).toBeGreaterThanOrEqual(ms(a.finishedAt) - 100);
    expect(b.executor?.uid).toBe(bob.uid);
  }, 30_000);

  it("holds a user's second job back until the first ends (per-user cap)", async () => {
    const ids = [await aliceApi.submit('nap', { secs: 1 }), await aliceApi.submit('nap', { secs: 1.5 })];
    const jobs: JobDetail[] = await Promise.all(ids.map((id) => aliceApi.waitFor(id)));
    for (const job of jobs) expect(job.state, JSON.stringify(job.error)).toBe('succeeded');
    const [early, late] = [...jobs].sort((x, y) => ms(x.startedAt) - ms(y.startedAt));
    expect(ms(late!.startedAt)).toBeGreaterThanOrEqual(ms(early!.finishedAt) - 100);
  }, 30_000);

  it('stops an executor after the idle timeout and records why', async () => {
    const job = await bobApi.run('nap', { secs: 0 });
    expect(job.state).toBe('succeeded');
    const pid = job.executor!.pid;
    expect(alive(pid)).toBe(true);
    await until('idle executor to exit', () => !alive(pid), 10_000);
    await until('exit recorded', async () =>
      matching(await readLogRecords(steward.dataDir), agentEvents.executorExited).some(
        (record) => record.pid === pid && record.cause === 'idle',
      ),
    );
  }, 30_000);

  it('takes executors and their steps down when the agent is killed with SIGKILL', async () => {
    const id = await aliceApi.submit('nap', { secs: 60 });
    await until('job running', async () => (await aliceApi.job(id)).state === 'running');
    const job = await aliceApi.job(id);
    const executorPid = job.executor!.pid;
    // The job's own TMPDIR: tmp/<job>-<attempt>.
    const pidFile = path.join(steward.dataDir, 'workspaces', alice.name, 'tmp', `${id}-1`, 'nap-60.pid');
    await until('step started', async () => (await readFile(pidFile, 'utf8').catch(() => '')).trim() !== '');
    const stepPid = Number((await readFile(pidFile, 'utf8')).trim());
    expect(alive(executorPid) && alive(stepPid)).toBe(true);
    const exited = new Promise((resolve) => steward.child!.once('exit', resolve));
    steward.child!.kill('SIGKILL');
    await exited;
    await until('executor and step gone', () => !alive(executorPid) && !alive(stepPid), 10_000);
  }, 30_000);
});
