/* eslint-disable @typescript-eslint/no-unsafe-argument, @typescript-eslint/no-unsafe-member-access -- HTTP response bodies are checked by assertions, not by static types. */
/**
 * Two agents and an offer that reaches both: agent A's broker connection is cut (a TCP proxy resets it)
 * while its jobs load, the broker takes those deliveries back and hands them to agent B, while A keeps
 * loading. Only one agent may load each attempt: the executor's workflow fetch claims it, and the agent
 * whose fetch is refused drops its copy quietly. Each job runs exactly once and succeeds.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Cluster } from '../support/distributed.js';
import { countFaults, formatCounts, stepRuns } from '../support/fault-counts.js';
import { OsUsers } from '../support/os-users.js';
import { brokerUrl, createVhost, deleteVhost, rabbitmqctl } from '../support/rabbitmq.js';
import { isRoot } from '../support/steward.js';
import { TcpProxy } from '../support/tcp-proxy.js';

const NOOP = `name: noop
description: one tiny query
steps:
  - id: one
    sql: SELECT 1 AS x
outputs: [one]
`;
const JOBS = 4;
const DROPPED = "another agent loads the job; dropping this agent's copy";

let vhost = '';
let cluster: Cluster | undefined;
let proxy: TcpProxy | undefined;
const osUsers = new OsUsers();

beforeAll(async () => {
  vhost = await createVhost('claims');
  // The lease outlasts the cut: agent A, only unreachable through the broker, keeps its jobs.
  cluster = await Cluster.start({ vhost, server: { loadTimeout: '5m', agentLease: '2m' } });
  proxy = await TcpProxy.start({ port: Number(new URL(brokerUrl).port || 5672) });
  const pushed = await cluster.request('POST', '/api/workflows', { source: NOOP });
  expect(pushed.status, JSON.stringify(pushed.json)).toBe(201);
}, 120_000);

afterAll(async () => {
  await cluster?.destroy();
  await proxy?.close();
  await osUsers.cleanup();
  if (vhost) await deleteVhost(vhost);
}, 60_000);

/** Ready and unacknowledged messages of the vhost's offers queue. */
async function offersQueue(): Promise<{ ready: number; unacked: number }> {
  const out = await rabbitmqctl(
    'list_queues',
    '-p',
    vhost,
    '--no-table-headers',
    '--quiet',
    'name',
    'messages_ready',
    'messages_unacknowledged',
  );
  for (const line of out.split('\n')) {
    const [name, ready, unacked] = line.trim().split(/\s+/);
    if (name?.endsWith('.offers')) return { ready: Number(ready), unacked: Number(unacked) };
  }
  return { ready: -1, unacked: -1 };
}

async function logOf(c: Cluster, name: string): Promise<string> {
  return readFile(path.join(c.agentDir(name), 'logs', 'steward.log'), 'utf8').catch(() => '');
}

async function until(check: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  for (const deadline = Date.now() + timeoutMs; ; await new Promise((resolve) => setTimeout(resolve, 100))) {
    if (await check()) return true;
    if (Date.now() > deadline) return false;
  }
}

describe('an offer redelivered to another agent while the first still loads it', () => {
  it('runs each job once: the agent whose workflow fetch is refused drops its copy', async () => {
    const c = cluster!;
    const userMap = isRoot ? { admin: (await osUsers.user('ck')).name } : {};
    const agent = { slots: JOBS, capacity: { maxJobsPerUser: JOBS }, userMap, warmExecutors: 1 };
    await c.startAgent('a', { ...agent, bus: { kind: 'amqp', urls: [proxy!.rewrite(brokerUrl)], vhost } });
    const ids = await Promise.all(Array.from({ length: JOBS }, () => c.submit('noop')));
    // Hold the loads: the executors' workflow fetches wait on the paused server, so A's offers are still
    // unacked (loading) when its broker connection is cut and the broker hands them to B.
    c.server.child.kill('SIGSTOP');
    let redelivered = false;
    try {
      expect(await until(async () => (await offersQueue()).unacked === JOBS, 20_000)).toBe(true);
      await proxy!.cutOff();
      await c.startAgent('b', agent);
      // B took every offer back from the broker, and its executors are fetching too.
      redelivered = await until(async () => {
        const queue = await offersQueue();
        return queue.ready === 0 && queue.unacked === JOBS;
      }, 20_000);
      await new Promise((resolve) => setTimeout(resolve, 1000));
    } finally {
      c.server.child.kill('SIGCONT');
    }
    expect(redelivered).toBe(true);
    // Both agents' executors fetch now; one per job wins. Wait until every job ran once and the other copy
    // was dropped (or, without claims, ran a second time), then give A its broker back for its events.
    await until(async () => {
      const runs = [...(await stepRuns(c)).values()].reduce((sum, n) => sum + n, 0);
      const dropped = `${await logOf(c, 'a')}${await logOf(c, 'b')}`.split(DROPPED).length - 1;
      return runs + dropped >= 2 * JOBS;
    }, 60_000);
    await proxy!.restore();
    const counts = await countFaults(c, ids, 120_000);
    const logA = await logOf(c, 'a');
    const logB = await logOf(c, 'b');
    const droppedA = logA.split(DROPPED).length - 1;
    const droppedB = logB.split(DROPPED).length - 1;
    const runs = await stepRuns(c);
    console.log(
      `${formatCounts('one offer, two agents', counts)}; copies dropped: ${droppedA} on A, ${droppedB} on B; ` +
        `runs ${JSON.stringify(Object.fromEntries(runs))}`,
    );
    expect(counts.duplicated).toBe(0);
    expect(counts.states).toEqual({ succeeded: JOBS });
    expect(counts.reattempted).toBe(0);
    for (const id of ids) expect(runs.get(`${id}:1`), id).toBe(1);
    expect(droppedA + droppedB).toBe(JOBS);
    // The dropped copies told the server nothing that could disturb the job.
    expect(`${logA}${logB}`).not.toContain('STEWARD_OFFER_REPLAYED');
    const jobs = await Promise.all(ids.map((id) => c.job(id)));
    for (const job of jobs) expect(job.error, job.id).toBeNull();
  }, 300_000);
});
