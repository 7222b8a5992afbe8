/**
 * An agent with more slots than one user may fill (`maxJobsPerUser` below `slots`) receives offers of that
 * user it cannot start yet. It must hold them until one of the user's jobs ends, not hand them back again and
 * again: every return counts towards the quorum queue's delivery limit, and returned offers come straight
 * back, so a reject loop used to fail jobs of a plain burst with STEWARD_DELIVERY_LIMIT.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Cluster } from '../support/distributed.js';
import { countFaults, formatCounts } from '../support/fault-counts.js';
import { OsUsers } from '../support/os-users.js';
import { createVhost, deleteVhost } from '../support/rabbitmq.js';
import { isRoot } from '../support/steward.js';

const NAP = 'name: nap\nsteps:\n  - id: nap\n    shell: sleep 0.3\n';
const BURST = Number(process.env.STEWARD_TEST_PARKING_BURST ?? 120);

let vhost = '';
let cluster: Cluster | undefined;
const osUsers = new OsUsers();

beforeAll(async () => {
  vhost = await createVhost('parking');
  // A small delivery limit makes a reject loop show at once.
  cluster = await Cluster.start({ vhost, bus: { deliveryLimit: 4 }, server: { loadTimeout: '5m' } });
  const pushed = await cluster.request('POST', '/api/workflows', { source: NAP });
  expect(pushed.status, JSON.stringify(pushed.json)).toBe(201);
}, 120_000);

afterAll(async () => {
  await cluster?.destroy();
  await osUsers.cleanup();
  if (vhost) await deleteVhost(vhost);
}, 60_000);

describe('offers an agent has no room for yet', () => {
  it(`are held until the user's cap allows them, so a burst of ${BURST} never hits the delivery limit`, async () => {
    const c = cluster!;
    const userMap = isRoot ? { admin: (await osUsers.user('pk')).name } : {};
    await c.startAgent('capped', { slots: 8, capacity: { maxJobsPerUser: 2 }, userMap, warmExecutors: 1 });
    const ids = await Promise.all(Array.from({ length: BURST }, () => c.submit('nap')));
    const counts = await countFaults(c, ids, 300_000);
    console.log(formatCounts(`per-user cap 2 of 8 slots, delivery limit 4, burst ${BURST}`, counts));
    expect(counts.errors).toEqual({});
    expect(counts.stuck).toBe(0);
    expect(counts.duplicated).toBe(0);
    expect(counts.states).toEqual({ succeeded: BURST });
  }, 420_000);
});
