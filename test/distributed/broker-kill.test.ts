/**
 * kill -9 of the broker node in the middle of a burst of jobs, then a restart on the same data: the quorum
 * queues keep the persistent offers and events, server and agents reconnect and re-send what was not
 * confirmed, every job ends once. The broker is a private node this test starts and kills.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Cluster } from '../support/distributed.js';
import { countFaults, formatCounts } from '../support/fault-counts.js';
import { OsUsers } from '../support/os-users.js';
import { PrivateBroker } from '../support/private-broker.js';
import { isRoot } from '../support/steward.js';

const NOOP = `name: noop
description: one tiny query
steps:
  - id: one
    sql: SELECT 1 AS x
outputs: [one]
`;
const BURST = Number(process.env.STEWARD_TEST_BROKER_BURST ?? 500);

let broker: PrivateBroker | undefined;
let cluster: Cluster | undefined;
const osUsers = new OsUsers();

beforeAll(async () => {
  broker = await PrivateBroker.create();
  await broker.start();
  cluster = await Cluster.start({ vhost: '/', url: broker.url, server: { loadTimeout: '5m' } });
  const userMap = isRoot ? { admin: (await osUsers.user('bk')).name } : {};
  await Promise.all([
    cluster.startAgent('agent-1', { slots: 6, userMap, warmExecutors: 2 }),
    cluster.startAgent('agent-2', { slots: 6, userMap, warmExecutors: 2 }),
  ]);
  const pushed = await cluster.request('POST', '/api/workflows', { source: NOOP });
  expect(pushed.status, JSON.stringify(pushed.json)).toBe(201);
}, 120_000);

afterAll(async () => {
  await cluster?.destroy();
  await broker?.destroy();
  await osUsers.cleanup();
}, 60_000);

describe('broker node killed and restarted', () => {
  it(`loses no job of a burst of ${BURST} and leaves none stuck`, async () => {
    const c = cluster!;
    const ids = await Promise.all(Array.from({ length: BURST }, () => c.submit('noop')));
    // Kill once some jobs are done and many are still waiting.
    await c.waitForAnyJob(
      ids.slice(0, 30),
      'a job to finish before the kill',
      (job) => job.state === 'succeeded',
      60_000,
    );
    await broker!.kill();
    const killedAt = await Promise.all(ids.map((id) => c.job(id)));
    const pendingAtKill = killedAt.filter((job) => job.state !== 'succeeded').length;
    expect(pendingAtKill).toBeGreaterThan(0);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    await broker!.start();
    const counts = await countFaults(c, ids, 300_000);
    console.log(
      `${formatCounts(`kill -9 broker, burst ${BURST}`, counts)}; ${pendingAtKill} not done at the kill`,
    );
    expect(counts.stuck).toBe(0);
    expect(counts.lost).toBe(0);
    expect(counts.duplicated).toBe(0);
    expect(counts.states).toEqual({ succeeded: BURST });
    // Both agents and the server are still serving after the restart.
    const after = await c.settle([await c.submit('noop')], 60_000);
    expect(after[0]?.state).toBe('succeeded');
  }, 480_000);
});
