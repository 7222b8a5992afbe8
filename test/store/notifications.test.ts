/**
 * The notification outbox on two Store instances sharing one PostgreSQL database, as two servers of an HA
 * setup do: a job's end queues its deliveries once however many servers race to end it, and concurrent
 * dispatchers claim each due delivery once.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openStore, type Store } from '../../src/store/index.js';
import { aliceJob, createPrivateDatabase, seedAliceWorkflow } from './backends.js';

let database: { url: string; dispose(): Promise<void> };
let a: Store;
let b: Store;

beforeEach(async (context) => {
  database = await createPrivateDatabase(context.task.name);
  a = await openStore({ kind: 'postgres', url: database.url });
  b = await openStore({ kind: 'postgres', url: database.url });
  await seedAliceWorkflow(a);
});

afterEach(async () => {
  await a?.close();
  await b?.close();
  await database?.dispose();
});

async function seedJobs(count: number): Promise<string[]> {
  const ids = Array.from({ length: count }, (_, n) => `20260101000000000-${String(n).padStart(8, '0')}`);
  for (const id of ids) {
    await a.insertJobOnce(aliceJob(id));
  }
  return ids;
}

const rule = (when: 'failure' | 'always', target: string) => ({
  user: 'alice',
  when,
  schedule: null,
  channel: 'webhook' as const,
  target,
  secret: 'secret-of-sixteen-chars',
  createdAt: 3,
});

describe('notification outbox on two stores sharing PostgreSQL', () => {
  it('queues one delivery per matching rule when two servers race to end each job', async () => {
    await a.notifications.createRule(rule('failure', 'https://one.example.org/'), 20);
    await a.notifications.createRule(rule('always', 'https://two.example.org/'), 20);
    const ids = await seedJobs(20);
    const error = { code: 'STEWARD_LOAD_TIMEOUT' as const, message: 'nobody loaded it' };
    const results = await Promise.all(
      ids.flatMap((id) => [
        a.transitionJob(id, 'expired', { error }),
        b.transitionJob(id, 'failed', { error }),
      ]),
    );
    expect(results.filter((result) => result.ok)).toHaveLength(20);
    const deliveries = await a.notifications.listDeliveries({ limit: 500 });
    expect(deliveries).toHaveLength(40);
    for (const id of ids) expect(deliveries.filter((d) => d.jobId === id)).toHaveLength(2);
  });

  it('lets concurrent dispatchers claim each due delivery exactly once', async () => {
    await a.notifications.createRule(rule('always', 'https://one.example.org/'), 20);
    const ids = await seedJobs(60);
    for (const id of ids) await a.transitionJob(id, 'canceled');
    const claimed: string[] = [];
    const drain = async (store: Store) => {
      for (;;) {
        const batch = await store.notifications.claimDue(Date.now(), 60_000, 4);
        if (batch.length === 0) return;
        claimed.push(...batch.map((delivery) => delivery.id));
      }
    };
    await Promise.all([drain(a), drain(b), drain(a), drain(b)]);
    expect(claimed).toHaveLength(60);
    expect(new Set(claimed).size).toBe(60);
    // Claimed ones are not due again until their lease runs out.
    expect(await a.notifications.claimDue(Date.now(), 60_000, 100)).toEqual([]);
    expect(await b.notifications.claimDue(Date.now() + 61_000, 60_000, 100)).toHaveLength(60);
  });

  it('settles a delivery only under the claim that holds it', async () => {
    await a.notifications.createRule(rule('always', 'https://one.example.org/'), 20);
    const [id] = await seedJobs(1);
    await a.transitionJob(id!, 'canceled');
    const [first] = await a.notifications.claimDue(Date.now(), 1000, 1);
    // Its lease ran out (the server died mid-send): another server claims it again.
    const [second] = await b.notifications.claimDue(Date.now() + 2000, 1000, 1);
    expect(second?.id).toBe(first!.id);
    expect(second?.attempts).toBe(2);
    expect(await a.notifications.settle(first!.id, first!.claimToken, { kind: 'delivered' })).toBe(false);
    expect(await b.notifications.settle(second!.id, second!.claimToken, { kind: 'delivered' })).toBe(true);
    expect((await a.notifications.getDelivery(first!.id))?.state).toBe('delivered');
  });
});
