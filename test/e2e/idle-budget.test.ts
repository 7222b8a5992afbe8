/**
 * Many users on one agent, through a real `steward up` as root with real OS users: idle executors stay
 * resident until the idle budget needs their memory, then go least recently used first; every new user
 * gets a ready spare (started at the least CPU weight, the default once a user's), and the spare taken is
 * replaced before the next user arrives.
 */
import { existsSync, readFileSync } from 'node:fs';
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

/** The CPU weight of the cgroup a process is in (v2 `cpu.weight`, v1 `cpu.shares`), if it has one of its own. */
function cpuWeight(pid: number): { value: number; least: number; default: number } | undefined {
  const lines = readFileSync(`/proc/${pid}/cgroup`, 'utf8').trim().split('\n');
  if (existsSync('/sys/fs/cgroup/cgroup.controllers')) {
    const where = lines.find((line) => line.startsWith('0::'))?.slice(3);
    const file = `/sys/fs/cgroup${where}/cpu.weight`;
    return where && where !== '/' && existsSync(file)
      ? { value: Number(readFileSync(file, 'utf8')), least: 1, default: 100 }
      : undefined;
  }
  const line = lines.find((entry) => entry.split(':')[1]?.split(',').includes('cpu'));
  if (!line) return undefined;
  const [, controllers, where] = line.split(':');
  const file = `/sys/fs/cgroup/${controllers}${where}/cpu.shares`;
  return where !== '/' && existsSync(file)
    ? { value: Number(readFileSync(file, 'utf8')), least: 2, default: 1024 }
    : undefined;
}

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
    // A ready spare starts on the CPU time nobody else wants (the least weight), when cgroups are in force.
    const [spare] = await records(agentEvents.spareReady);
    const spareWeight = cpuWeight(Number(spare!.pid));
    if (spareWeight) expect(spareWeight.value).toBe(spareWeight.least);
    const pids: number[] = [];
    for (const user of users) {
      const spares = (await records(agentEvents.spareReady)).length;
      const job = await user.api.run('noop');
      expect(job.state, JSON.stringify(job.error)).toBe('succeeded');
      pids.push(job.executor!.pid);
      // The spare became the user's executor, at the default weight.
      if (spareWeight) expect(cpuWeight(job.executor!.pid)!.value).toBe(spareWeight.default);
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
    expect(exits.find((record) => record.user === first)).toMatchObject({ jobs: [] });
    expect(exits.some((record) => record.user === last)).toBe(false);
    // Chosen least recently used first (two chosen at once may exit in either order).
    const evicted = await records(agentEvents.executorEvicted);
    expect(evicted[0]).toMatchObject({ user: first, pid: pids[0] });
    if (evicted.length > 1) expect(evicted[1]).toMatchObject({ user: second });
    expect(evicted.some((record) => record.user === last)).toBe(false);
    expect(alive(pids[2]!)).toBe(true);
    // The evicted user's next job gets an executor again (a spare), and succeeds.
    const again = await users[0]!.api.run('noop');
    expect(again.state).toBe('succeeded');
    expect(again.executor!.pid).not.toBe(pids[0]);
  }, 120_000);
});
