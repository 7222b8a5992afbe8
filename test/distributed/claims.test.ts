/**
 * Two agents and an offer that reaches both: agent A's broker connection is cut (a TCP proxy resets it)
 * while its jobs load, the broker takes those deliveries back and hands them to agent B, while A keeps
 * loading. Only one agent may load each attempt: the executor's workflow fetch claims it, and the agent
 * whose fetch is refused drops its copy quietly. Each job runs exactly once and succeeds. And the claim must
 * not strand a job whose agent dies after claiming it: killed with SIGKILL while its executor still
 * downloads the workflow's assets, its attempt is refused to the other agent until the lease sweep retries
 * the job as a new attempt, which the other agent runs.
 */
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Cluster } from '../support/distributed.js';
import { countFaults, formatCounts, stepRuns } from '../support/fault-counts.js';
import { OsUsers } from '../support/os-users.js';
import { agentEvents, matching, readLogRecords } from '../support/logs.js';
import { brokerUrl, createVhost, deleteVhost, offersQueueOf } from '../support/rabbitmq.js';
import { isRoot } from '../support/steward.js';
import { TcpProxy } from '../support/tcp-proxy.js';
import { until } from '../support/wait.js';

const NOOP = `name: noop
description: one tiny query
steps:
  - id: one
    sql: SELECT 1 AS x
outputs: [one]
`;
const JOBS = 4;

let vhost = '';
let cluster: Cluster | undefined;
let proxy: TcpProxy | undefined;
const osUsers = new OsUsers();

beforeAll(async () => {
  vhost = await createVhost('claims');
  // The lease outlasts the cut: agent A, only unreachable through the broker, keeps its jobs. Workflows are
  // fetched, not carried in the offers: the paused server must hold A's loads.
  cluster = await Cluster.start({
    vhost,
    server: { loadTimeout: '5m', agentLease: '2m', offerWorkflowMaxBytes: 0 },
  });
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

/** Ready and unacknowledged messages of this file's (or another) vhost's offers queue. */
const offersQueue = (of = vhost) => offersQueueOf(of);

/** How many times the agent started as `name` dropped its copy of a job another agent loads. */
async function copiesDropped(c: Cluster, name: string): Promise<number> {
  return matching(await readLogRecords(c.agentDir(name)), agentEvents.copyDropped).length;
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
    try {
      await until(
        'A to hold every offer unacked',
        async () => (await offersQueue()).unacked === JOBS,
        20_000,
        100,
      );
      await proxy!.cutOff();
      await c.startAgent('b', agent);
      // B took every offer back from the broker, and its executors are fetching too.
      await until(
        'B to take every offer back',
        async () => {
          const queue = await offersQueue();
          return queue.ready === 0 && queue.unacked === JOBS;
        },
        20_000,
        100,
      );
      // A moment for B's executors to send their fetches to the paused server, so both copies race.
      await new Promise((resolve) => setTimeout(resolve, 1000));
    } finally {
      c.server.child.kill('SIGCONT');
    }
    // Both agents' executors fetch now; one per job wins. Wait until every job ran once and the other copy
    // was dropped (or, without claims, ran a second time), then give A its broker back for its events.
    await until(
      'every job to run once and its other copy to be dropped',
      async () => {
        const runs = [...(await stepRuns(c)).values()].reduce((sum, n) => sum + n, 0);
        const dropped = (await copiesDropped(c, 'a')) + (await copiesDropped(c, 'b'));
        return runs + dropped >= 2 * JOBS;
      },
      60_000,
      100,
    ).catch(() => undefined); // the counts below say what went wrong
    await proxy!.restore();
    const counts = await countFaults(c, ids, 120_000);
    const droppedA = await copiesDropped(c, 'a');
    const droppedB = await copiesDropped(c, 'b');
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
    const records = [...(await readLogRecords(c.agentDir('a'))), ...(await readLogRecords(c.agentDir('b')))];
    expect(JSON.stringify(records)).not.toContain('STEWARD_OFFER_REPLAYED');
    const jobs = await Promise.all(ids.map((id) => c.job(id)));
    for (const job of jobs) expect(job.error, job.id).toBeNull();
  }, 300_000);

  it('retries a job whose agent was killed after claiming it, before it loaded, as a new attempt on another agent', async () => {
    // A cluster of its own: the agents' lease must be short here.
    const killVhost = await createVhost('claims-kill');
    const c = await Cluster.start({ vhost: killVhost, server: { loadTimeout: '5m', agentLease: '3s' } });
    try {
      // A large asset keeps the executor busy between its workflow fetch (the claim) and `loaded`.
      const pushed = await c.request('POST', '/api/workflows', {
        source: `name: heavy\nassets: [blob.bin]\nsteps:\n  - id: one\n    sql: SELECT 1 AS x\noutputs: [one]\n`,
        assets: { 'blob.bin': randomBytes(32 * 1024 * 1024).toString('base64') },
      });
      expect(pushed.status, JSON.stringify(pushed.json)).toBe(201);
      const userMap = isRoot ? { admin: (await osUsers.user('cv')).name } : {};
      const agent = { slots: 2, userMap, warmExecutors: 1 };
      const victim = await c.startAgent('victim', agent);
      const id = await c.submit('heavy');
      const db = new Database(path.join(c.dataDir, 'steward.db'), { readonly: true, fileMustExist: true });
      let claimedBy: string | null = null;
      try {
        const read = db.prepare<[string], { claimed_by: string | null }>(
          'SELECT claimed_by FROM jobs WHERE id = ?',
        );
        // Read often: the claim is taken between the workflow fetch and `loaded`.
        claimedBy = await until('the job to be claimed', () => read.get(id)?.claimed_by, 60_000, 2);
      } finally {
        db.close();
      }
      // Hold the victim's load where it is (its asset download waits on the paused server), bring up the
      // heir, and kill the victim: the broker hands the unacked offer to the heir.
      c.server.child.kill('SIGSTOP');
      try {
        expect(claimedBy).toBe(victim.id);
        await c.startAgent('heir', agent);
        await victim.stop('SIGKILL');
        await until(
          'the broker to hand the offer to the heir',
          async () => {
            const queue = await offersQueue(killVhost);
            return queue.ready === 0 && queue.unacked === 1;
          },
          20_000,
          100,
        );
      } finally {
        c.server.child.kill('SIGCONT');
      }
      const job = await c.settleOne(id, 120_000);
      const runs = await stepRuns(c);
      console.log(
        `killed after its claim: state ${job.state}, attempts ${JSON.stringify(job.attempts)}, ` +
          `runs ${JSON.stringify(Object.fromEntries(runs))}`,
      );
      expect(job).toMatchObject({ state: 'succeeded', attempt: 2, agentId: c.agentId('heir') });
      expect(job.attempts[0]).toMatchObject({
        attempt: 1,
        state: 'lost',
        error: { code: 'STEWARD_AGENT_LOST' },
      });
      expect(job.attempts[0]?.error?.message).toMatch(/while loading the job; it had not started/);
      // The heir was refused attempt 1 (the victim's claim) and ran attempt 2, once.
      expect(await copiesDropped(c, 'heir')).toBe(1);
      expect(runs.get(`${id}:1`)).toBeUndefined();
      expect(runs.get(`${id}:2`)).toBe(1);
    } finally {
      await c.destroy();
      await deleteVhost(killVhost);
    }
  }, 300_000);
});
