/**
 * A hand-back that must not wait for the events queue. Agent A's executor claims a job's attempt (its
 * workflow fetch) and dies while loading; A hands the offer back. Its `offered` event, which would free the
 * claim, is stuck behind a backlog in the events queue (here: a flood of events of an unknown job), and the
 * offer goes to agent B. B's fetch must be granted at once, because A released its claim over HTTP;
 * otherwise B is refused, drops its copy, and the job sits `offered` until the load timeout. Real server,
 * agents, RabbitMQ
 * and OS users; A's user has every process killed the moment it appears.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import amqp from 'amqplib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentEvents, matching, readLogRecords } from '../support/logs.js';
import { Cluster } from '../support/distributed.js';
import { OsUsers, type TestUser } from '../support/os-users.js';
import { brokerUrl, createVhost, deleteVhost } from '../support/rabbitmq.js';
import { isRoot } from '../support/steward.js';
import { until } from '../support/wait.js';

/** The asset makes loading take a moment after the fetch, so the executor can be caught in between. */
const WORKFLOW =
  'name: slowload\nassets: [big.bin]\nsteps:\n  - id: one\n    shell: cat big.bin > /dev/null\n';
/** Heartbeats queued ahead of A's hand-back event: seconds of work for the server. */
const FLOOD = 20_000;

let vhost = '';
let cluster: Cluster | undefined;
const osUsers = new OsUsers();
let doomed: TestUser;
let runner: TestUser;

function pgrep(uid: number): Promise<number[]> {
  return new Promise((resolve) => {
    execFile('pgrep', ['-u', String(uid)], (_error, stdout) =>
      resolve(String(stdout).split('\n').filter(Boolean).map(Number)),
    );
  });
}

function signalAll(pids: number[], signal: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
    } catch {
      // already gone
    }
  }
}

/** Whether a file of this name exists anywhere under `dir`. */
async function findFile(dir: string, name: string): Promise<boolean> {
  const entries = await readdir(dir, { recursive: true }).catch(() => [] as string[]);
  return entries.some((entry) => path.basename(entry) === name);
}

beforeAll(async () => {
  vhost = await createVhost('claim-release');
  // A long lease: the flood keeps the server busy; a live agent must not look silent.
  cluster = await Cluster.start({
    vhost,
    server: {
      bus: { kind: 'amqp', urls: [brokerUrl], vhost, deliveryLimit: 20 },
      loadTimeout: '2m',
      agentLease: '60s',
    },
  });
  doomed = await osUsers.user('cd');
  runner = await osUsers.user('cr');
  const pushed = await cluster.request('POST', '/api/workflows', {
    source: WORKFLOW,
    assets: { 'big.bin': randomBytes(24 * 1024 * 1024).toString('base64') },
  });
  expect(pushed.status, JSON.stringify(pushed.json)).toBe(201);
}, 120_000);

afterAll(async () => {
  await cluster?.destroy();
  await osUsers.cleanup();
  if (vhost) await deleteVhost(vhost);
}, 60_000);

describe.runIf(isRoot)('claim release on a hand-back', () => {
  it('lets another agent load a job at once when the agent that claimed it lost its executor, however late the hand-back event', async () => {
    const c = cluster!;
    const bus = { ...c.bus, deliveryLimit: 20 };
    await c.startAgent('a', { slots: 1, userMap: { admin: doomed.name }, bus });
    const id = await c.submit('slowload');
    // A's executor fetched the workflow (the claim) and is writing the asset: freeze it there.
    await until(
      'A to load the job',
      () => findFile(path.join(c.agentDir('a'), 'workspaces'), 'big.bin'),
      30_000,
      5,
    );
    signalAll(await pgrep(doomed.uid), 'SIGSTOP');
    expect((await c.job(id)).state).not.toBe('running');
    await c.startAgent('b', { slots: 1, userMap: { admin: runner.name }, bus });

    // The backlog: the server works through these before it sees A's hand-back event.
    const connection = await amqp.connect(`${brokerUrl}/${encodeURIComponent(vhost)}`);
    const channel = await connection.createConfirmChannel();
    // Events of a job no server knows: each is read and dropped, as harmless as the server can make them.
    const flood = Buffer.from(
      JSON.stringify({
        v: 1,
        type: 'state',
        jobId: `no-such-job-${c.runTag}`,
        attempt: 1,
        seq: 1,
        time: Date.now(),
        agentId: `flood-${c.runTag}`,
        state: 'running',
      }),
    );
    for (let i = 0; i < FLOOD; i++) channel.sendToQueue('steward.v1.events', flood, { persistent: false });
    await channel.waitForConfirms();
    const backlog = (await channel.checkQueue('steward.v1.events')).messageCount;

    // A's executor dies; so does every later one of A's user, so the offer ends up on B.
    let killing = true;
    const killer = (async () => {
      while (killing) signalAll(await pgrep(doomed.uid), 'SIGKILL');
    })();
    try {
      const job = await c.settleOne(id, 60_000);
      expect(job.state, JSON.stringify(job)).toBe('succeeded');
      // The same attempt, loaded by B: no retry, no expiry.
      expect(job.attempt).toBe(1);
      expect(job.agentId).toBe(c.agentId('b'));
      expect(job.attempts).toHaveLength(1);
      // The backlog was there when the offer changed hands, and B was never refused.
      expect(backlog).toBeGreaterThan(FLOOD / 2);
      const bLog = await readLogRecords(c.agentDir('b'));
      expect(matching(bLog, agentEvents.firstStepStarted)).toMatchObject([{ jobId: id }]);
      expect(matching(bLog, agentEvents.copyDropped)).toEqual([]);
      const aLog = await readLogRecords(c.agentDir('a'));
      expect(matching(aLog, agentEvents.executorExited).length).toBeGreaterThan(0);
      expect(matching(aLog, agentEvents.claimReleaseFailed)).toEqual([]);
    } finally {
      killing = false;
      await killer;
      await connection.close();
    }
  }, 150_000);
});
