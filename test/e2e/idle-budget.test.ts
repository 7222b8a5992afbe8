/**
 * Many users on one agent, through a real `steward up` as root with real OS users: idle executors stay
 * resident until the idle budget needs their memory, then go least recently used first; every new user
 * gets a ready spare, and the spare taken is replaced before the next user arrives.
 */
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiUser } from '../support/api.js';
import { agentEvents, matching, readLogRecords, type LogRecord } from '../support/logs.js';
import { OsUsers, type TestUser } from '../support/os-users.js';
import { StewardInstance, isRoot, tempDir } from '../support/steward.js';
import { until } from '../support/wait.js';

const noop = { name: 'noop', steps: [{ id: 'hi', shell: 'true' }] };

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe.runIf(isRoot)('idle budget and spares', () => {
  const osUsers = new OsUsers();
  let steward: StewardInstance;
  let scratch: string;
  const users: { os: TestUser; api: ApiUser }[] = [];

  beforeAll(async () => {
    scratch = await tempDir('idle');
    const config = path.join(scratch, 'steward.yaml');
    await writeFile(
      config,
      stringify({
        agent: {
          id: 'exec-idle',
          // An idle executor measures 75–120 MiB: 220 MiB holds the spare and one idle executor, never three.
          warmExecutors: 1,
          capacity: { idleMemory: '220MiB' },
          slots: 2,
        },
      }),
    );
    steward = await StewardInstance.start({ extraArgs: ['--config', config] });
    const admin = await ApiUser.login(steward.url, 'admin', steward.adminPassword);
    for (const base of ['ia', 'ib', 'ic']) {
      const os = await osUsers.user(base, { createHome: false });
      await admin.createUser(os.name, 'idle-budget-password-1');
      const api = await ApiUser.login(steward.url, os.name, 'idle-budget-password-1');
      await api.push(stringify(noop));
      users.push({ os, api });
    }
  }, 60_000);

  afterAll(async () => {
    await steward?.destroy();
    await osUsers.cleanup();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  }, 30_000);

  const records = async (matcher: (record: LogRecord) => boolean) =>
    matching(await readLogRecords(steward.dataDir), matcher);

  it('gives each new user a ready spare, replaces it at once, and evicts the least recently used idle executor', async () => {
    await until(
      'the first spare ready',
      async () => (await records(agentEvents.spareReady)).length >= 1,
      30_000,
    );
    const pids: number[] = [];
    for (const user of users) {
      const spares = (await records(agentEvents.spareReady)).length;
      const job = await user.api.run('noop');
      expect(job.state, JSON.stringify(job.error)).toBe('succeeded');
      pids.push(job.executor!.pid);
      const [start] = (await records(agentEvents.firstStepStarted)).filter(
        (record) => record.user === user.os.name,
      );
      // A cold start, served by the spare that was ready, not by an executor started for the user.
      expect(start).toMatchObject({ coldStart: true, executorOrigin: 'spare' });
      // Replenished: the next user finds a spare ready again.
      await until(
        'the spare replaced',
        async () => (await records(agentEvents.spareReady)).length > spares,
        30_000,
      );
    }
    const [first, second, last] = users.map((user) => user.os.name);
    // The first user's executor went for the second's and the third's: least recently used first.
    await until('an idle executor evicted', async () =>
      (await records(agentEvents.executorExited)).some((record) => record.user === first),
    );
    const exits = (await records(agentEvents.executorExited)).filter((record) =>
      /^evicted: idle memory needed/.test(String(record.cause)),
    );
    expect(exits[0]).toMatchObject({ user: first, jobs: [] });
    if (exits.length > 1) expect(exits[1]).toMatchObject({ user: second });
    expect(exits.some((record) => record.user === last)).toBe(false);
    expect(alive(pids[2]!)).toBe(true);
    // The evicted user's next job gets an executor again (a spare), and succeeds.
    const again = await users[0]!.api.run('noop');
    expect(again.state).toBe('succeeded');
    expect(again.executor!.pid).not.toBe(pids[0]);
  }, 120_000);
});
