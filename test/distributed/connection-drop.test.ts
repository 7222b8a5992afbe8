/**
 * The agent's broker connection cut for 30 s in the middle of a burst (a TCP proxy between agent and broker
 * resets its connections and refuses new ones), then restored: the broker takes back the offers that were
 * loading, the agent keeps those jobs, settles their redelivery instead of running them again, and re-sends
 * the events it could not publish during the cut. Nothing is lost, stuck or run twice.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Cluster } from '../support/distributed.js';
import { countFaults, formatCounts, stepRuns } from '../support/fault-counts.js';
import { OsUsers } from '../support/os-users.js';
import { agentEvents, matching, readLogRecords, type LogRecord } from '../support/logs.js';
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
const BURST = Number(process.env.STEWARD_TEST_BURST ?? 500);
const CUT_MS = Number(process.env.STEWARD_TEST_CUT_MS ?? 30_000);

let vhost = '';
let cluster: Cluster | undefined;
let proxy: TcpProxy | undefined;
const osUsers = new OsUsers();

beforeAll(async () => {
  vhost = await createVhost('drop');
  // The lease outlasts the cut: an agent that is only unreachable through the broker keeps its jobs.
  // Workflows are fetched, not carried in offers: the second test holds loads by pausing the server.
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

describe('broker connection of an agent cut for 30 s', () => {
  it(`loses, strands and duplicates no job of a burst of ${BURST}`, async () => {
    const c = cluster!;
    const userMap = isRoot ? { admin: (await osUsers.user('cd')).name } : {};
    await c.startAgent('cut', {
      slots: 6,
      userMap,
      warmExecutors: 2,
      bus: { kind: 'amqp', urls: [proxy!.rewrite(brokerUrl)], vhost },
    });
    const ids = await Promise.all(Array.from({ length: BURST }, () => c.submit('noop')));
    // Cut once the agent is busy: some jobs done, some loading or running on it.
    await until(
      'the agent to get busy',
      async () => {
        const sample = await Promise.all(ids.slice(0, 60).map((id) => c.job(id)));
        return (
          sample.filter((job) => job.state === 'succeeded').length >= 20 &&
          sample.some((job) => job.state === 'loading' || job.state === 'running')
        );
      },
      120_000,
      20,
    );
    const acceptedBefore = proxy!.accepted;
    await proxy!.cutOff();
    const atCut = await Promise.all(ids.map((id) => c.job(id)));
    const pendingAtCut = atCut.filter((job) => job.state !== 'succeeded').length;
    await new Promise((resolve) => setTimeout(resolve, CUT_MS));
    await proxy!.restore();
    const counts = await countFaults(c, ids, 300_000);
    const records = await readLogRecords(c.agentDir('cut'));
    const takenBack = matching(records, agentEvents.offerTakenBack).length;
    const settledRedeliveries = matching(records, agentEvents.redeliverySettled).length;
    console.log(
      `${formatCounts(`connection cut ${CUT_MS / 1000}s, burst ${BURST}`, counts)}; ` +
        `${pendingAtCut} not done at the cut, ${takenBack} loading offers taken back by the broker, ` +
        `${settledRedeliveries} redeliveries settled without a second run`,
    );
    expect(proxy!.accepted).toBeGreaterThan(acceptedBefore);
    expect(counts.stuck).toBe(0);
    expect(counts.lost).toBe(0);
    expect(counts.duplicated).toBe(0);
    expect(counts.states).toEqual({ succeeded: BURST });
  }, 600_000);

  it('keeps jobs that were loading when the connection dropped and settles their redelivery without a second run', async () => {
    const c = cluster!;
    for (const agent of c.agents.values()) await agent.stop();
    const userMap = isRoot ? { admin: (await osUsers.user('cl')).name } : {};
    const name = 'loader';
    await c.startAgent(name, {
      slots: 4,
      capacity: { maxJobsPerUser: 4 },
      userMap,
      warmExecutors: 1,
      bus: { kind: 'amqp', urls: [proxy!.rewrite(brokerUrl)], vhost },
    });
    const ids = await Promise.all(Array.from({ length: 4 }, () => c.submit('noop')));
    // Hold the loads: executors fetch their workflow from the server, which is paused for a moment, so the
    // offers are still unacked (loading) when the agent's broker connection is cut.
    c.server.child.kill('SIGSTOP');
    try {
      await until(
        'the agent to hold every offer unacked',
        async () => (await offersQueueOf(vhost)).unacked === 4,
      );
      await proxy!.cutOff();
      // Until the broker saw the connection go and took the offers back.
      await until('the broker to take the offers back', async () => (await offersQueueOf(vhost)).ready === 4);
    } finally {
      c.server.child.kill('SIGCONT');
    }
    // The jobs load and run while the agent cannot reach the broker; then the connection comes back.
    await until(
      'every job to run its step while cut off',
      async () => {
        const runs = await stepRuns(c);
        return ids.every((id) => runs.has(`${id}:1`));
      },
      30_000,
      200,
    );
    await proxy!.restore();
    const counts = await countFaults(c, ids, 120_000);
    // The jobs' final events may reach the server before the broker redelivers the offers (the agent sends
    // its unconfirmed publishes as soon as it reconnects): give the redeliveries a moment to arrive and be
    // logged.
    let records: LogRecord[] = [];
    let takenBack = 0;
    let settled = 0;
    await until(
      'four offers taken back and four redeliveries settled',
      async () => {
        records = await readLogRecords(c.agentDir(name));
        takenBack = matching(records, agentEvents.offerTakenBack).length;
        settled = matching(records, agentEvents.redeliverySettled).length;
        return takenBack === 4 && settled === 4;
      },
      20_000,
      200,
    ).catch(() => undefined); // the counts below say what is missing
    console.log(
      `${formatCounts('loading offers across a drop', counts)}; ${takenBack} taken back, ${settled} redeliveries settled`,
    );
    expect(takenBack).toBe(4);
    expect(settled).toBe(4);
    expect(counts.duplicated).toBe(0);
    expect(counts.states).toEqual({ succeeded: 4 });
    expect(JSON.stringify(records)).not.toContain('STEWARD_OFFER_REPLAYED');
  }, 180_000);
});
