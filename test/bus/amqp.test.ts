/**
 * What only the RabbitMQ bus has: the declared topology, failover over several URLs, recovery from a dropped
 * connection (unconfirmed publishes sent again, consumers back), the bus's own delivery count on classic
 * queues, and raw non-JSON messages dead-lettered.
 */
import amqp from 'amqplib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AmqpBus, supportsQuorumQueues, type DeadLetter } from '../../src/bus/index.js';
import type { SignedOffer } from '../../src/protocol/index.js';
import { freePort } from '../support/steward.js';
import { untilDefined } from '../support/wait.js';
import {
  brokerUrl,
  closeVhostConnections,
  createVhost,
  deleteVhost,
  rabbitmqctl,
} from '../support/rabbitmq.js';

const offer = (n: number): SignedOffer => ({
  v: 1,
  payload: JSON.stringify({ n }),
  signature: 'x',
  keyId: 'k',
});

function waitFor<T>(predicate: () => T | undefined, timeoutMs = 20_000): Promise<T> {
  return untilDefined('the bus', predicate, timeoutMs, 10);
}

let vhost = '';
const buses: AmqpBus[] = [];
function bus(prefix: string, extra: Partial<ConstructorParameters<typeof AmqpBus>[0]> = {}): AmqpBus {
  const b = new AmqpBus({
    urls: [brokerUrl],
    vhost,
    prefix,
    reconnectDelayMs: 50,
    reconnectMaxDelayMs: 500,
    ...extra,
  });
  buses.push(b);
  return b;
}

beforeAll(async () => {
  vhost = await createVhost('amqp');
});
afterAll(async () => {
  for (const b of buses) await b.close().catch(() => {});
  if (vhost) await deleteVhost(vhost);
});

describe('amqp bus', () => {
  it('declares versioned durable quorum queues with a delivery limit and dead-lettering', async () => {
    const b = bus('steward.v1', { deliveryLimit: 7 });
    await b.connect();
    await b.consumeControl('agent-1', async (d) => d.ack());
    const listing = await rabbitmqctl(
      'list_queues',
      '-p',
      vhost,
      'name',
      'type',
      'durable',
      'arguments',
      '--formatter',
      'json',
    );
    const queues = JSON.parse(listing) as Array<{
      name: string;
      type: string;
      durable: boolean;
      arguments: Array<[string, string, unknown]>;
    }>;
    const byName = new Map(queues.map((q) => [q.name, q]));
    for (const name of ['offers', 'events', 'dead-letters', 'control.agent-1']) {
      const queue = byName.get(`steward.v1.${name}`);
      expect(queue, name).toBeDefined();
      expect(queue!.type).toBe('quorum');
      expect(queue!.durable).toBe(true);
    }
    const offers = Object.fromEntries(byName.get('steward.v1.offers')!.arguments.map(([k, , v]) => [k, v]));
    expect(offers['x-delivery-limit']).toBe(6);
    expect(offers['x-dead-letter-exchange']).toBe('steward.v1.dlx');
    // Heartbeats: a bounded quorum queue of their own, keeping the newest, never dead-lettered.
    const heartbeats = byName.get('steward.v1.heartbeats');
    expect(heartbeats?.type).toBe('quorum');
    expect(heartbeats?.durable).toBe(true);
    const heartbeatArgs = Object.fromEntries(heartbeats!.arguments.map(([k, , v]) => [k, v]));
    expect(heartbeatArgs['x-max-length']).toBe(10000);
    expect(heartbeatArgs['x-overflow']).toBe('drop-head');
    expect(heartbeatArgs['x-dead-letter-exchange']).toBeUndefined();
    // Dask worker offers: a quorum queue of their own, handed back often until their deadline, dropped
    // (not dead-lettered to the server: nothing binds their key on the dlx) past a high limit.
    const daskWorkers = byName.get('steward.v1.dask-workers');
    expect(daskWorkers?.type).toBe('quorum');
    const daskArgs = Object.fromEntries(daskWorkers!.arguments.map(([k, , v]) => [k, v]));
    expect(daskArgs['x-delivery-limit']).toBe(10000);
    // A second client with the same settings redeclares without a clash.
    const again = bus('steward.v1', { deliveryLimit: 7 });
    await again.connect();
    expect(again.connected).toBe(true);
  });

  it('declares classic queues under their own versioned names when queueType is classic', async () => {
    // The quorum topology of the same prefix already exists: classic names must not clash with it.
    const quorum = bus('steward.both', { queueType: 'quorum' });
    await quorum.connect();
    const classic = bus('steward.both', { queueType: 'classic' });
    await classic.connect();
    expect(classic.queueType).toBe('classic');
    expect(classic.name('offers')).toBe('steward.both.classic.offers');
    await classic.consumeControl('agent-1', async (d) => d.ack());
    const listing = await rabbitmqctl(
      'list_queues',
      '-p',
      vhost,
      'name',
      'type',
      'durable',
      'arguments',
      '--formatter',
      'json',
    );
    const queues = JSON.parse(listing) as Array<{
      name: string;
      type: string;
      durable: boolean;
      arguments: Array<[string, string, unknown]>;
    }>;
    const byName = new Map(queues.map((q) => [q.name, q]));
    for (const name of ['offers', 'events', 'dead-letters', 'control.agent-1']) {
      const queue = byName.get(`steward.both.classic.${name}`);
      expect(queue, name).toBeDefined();
      expect(queue!.type).toBe('classic');
      expect(queue!.durable).toBe(true);
    }
    expect(byName.get('steward.both.offers')!.type).toBe('quorum');
    const offers = Object.fromEntries(
      byName.get('steward.both.classic.offers')!.arguments.map(([k, , v]) => [k, v]),
    );
    expect(offers['x-delivery-limit']).toBeUndefined();
    expect(offers['x-dead-letter-exchange']).toBe('steward.both.classic.dlx');
  });

  it('picks quorum queues in auto mode on a broker that has them (RabbitMQ 3.8 and later)', async () => {
    const b = bus('steward.auto');
    expect(b.queueType).toBeUndefined();
    await b.connect();
    expect(b.queueType).toBe('quorum');
    expect(b.name('offers')).toBe('steward.auto.offers');
    expect(supportsQuorumQueues('3.10.8')).toBe(true);
    expect(supportsQuorumQueues('3.8.0')).toBe(true);
    expect(supportsQuorumQueues('4.0.1')).toBe(true);
    expect(supportsQuorumQueues('3.7.28')).toBe(false);
    expect(supportsQuorumQueues(undefined)).toBe(false);
  });

  it('fails over to the next URL when the first broker is unreachable', async () => {
    const dead = `amqp://guest:guest@127.0.0.1:${await freePort()}`;
    const events: string[] = [];
    const b = bus('steward.failover', {
      urls: [dead, brokerUrl],
      onConnectionEvent: (event) => events.push(`${event.type} ${event.url ?? ''}`),
    });
    await b.connect();
    expect(events).toEqual([`failed ${dead}`, `connected ${brokerUrl}`]);
    const seen: unknown[] = [];
    await b.consumeOffers(
      async (d) => {
        seen.push(d.body);
        await d.ack();
      },
      { prefetch: 4 },
    );
    await b.publishOffer(offer(1));
    await waitFor(() => seen[0]);
  });

  it('recovers from dropped connections: every publish confirmed and delivered, consumers resume', async () => {
    const drops: string[] = [];
    const publisher = bus('steward.drop', { onConnectionEvent: (e) => drops.push(e.type) });
    const consumer = bus('steward.drop');
    await publisher.connect();
    await consumer.connect();
    const seen = new Map<number, number>();
    await consumer.consumeOffers(
      async (d) => {
        const n = (JSON.parse((d.body as SignedOffer).payload) as { n: number }).n;
        seen.set(n, (seen.get(n) ?? 0) + 1);
        await d.ack();
      },
      { prefetch: 50 },
    );
    const total = 2000;
    const publishes: Array<Promise<void>> = [];
    for (let i = 0; i < total; i++) {
      publishes.push(publisher.publishOffer(offer(i)));
      if (i === 300) await closeVhostConnections(vhost);
    }
    await Promise.all(publishes);
    expect(drops).toContain('dropped');
    await waitFor(() => (seen.size === total ? true : undefined), 30_000);
    // At least once: nothing lost; duplicates (re-sent after the drop) are allowed and bounded.
    const duplicates = [...seen.values()].reduce((sum, count) => sum + count - 1, 0);
    expect(duplicates).toBeLessThan(total);
  });

  it('revokes unsettled deliveries when the connection drops, and delivers them again after reconnecting', async () => {
    const b = bus('steward.revoke');
    await b.connect();
    const seen: Array<{ count: number; revoked: boolean }> = [];
    await b.consumeOffers(
      (d) => {
        const entry = { count: d.deliveryCount, revoked: false };
        d.onRevoked(() => (entry.revoked = true));
        seen.push(entry);
      },
      { prefetch: 2 },
    );
    await b.publishOffer(offer(1));
    await b.publishOffer(offer(2));
    await waitFor(() => (seen.length === 2 ? true : undefined));
    await closeVhostConnections(vhost);
    await waitFor(() => (seen.length === 4 ? true : undefined));
    expect(seen.map((entry) => entry.revoked)).toEqual([true, true, false, false]);
    expect(seen.slice(2).every((entry) => entry.count === 2)).toBe(true);
  });

  it('counts the deliveries of a classic offer itself and dead-letters it at the delivery limit', async () => {
    const b = bus('steward.classic-limit', { queueType: 'classic', deliveryLimit: 3 });
    await b.connect();
    const letters: DeadLetter[] = [];
    await b.consumeDeadLetters((letter) => void letters.push(letter));
    const counts: number[] = [];
    let marker: number | undefined;
    await b.consumeOffers(
      async (d) => {
        if ((JSON.parse((d.body as SignedOffer).payload) as { n: number }).n === 4) {
          marker = d.deliveryCount;
          await d.ack();
          return;
        }
        counts.push(d.deliveryCount);
        await d.requeue(0);
      },
      { prefetch: 1 },
    );
    await b.publishOffer(offer(3));
    const letter = await waitFor(() => letters[0]);
    expect(letter).toMatchObject({ reason: 'delivery-limit', queue: 'offers', deliveryCount: 3 });
    expect(letter.body).toEqual(offer(3));
    expect(counts).toEqual([1, 2, 3]);
    // Nothing left behind: each hand-back replaced the offer by one copy, and the last one went to the DLX.
    // A marker published now comes after any stray copy in this first-in-first-out queue (prefetch 1).
    await b.publishOffer(offer(4));
    expect(await waitFor(() => marker)).toBe(1);
    expect(counts).toEqual([1, 2, 3]);
    expect(letters).toHaveLength(1);
    const listing = await rabbitmqctl('list_queues', '-p', vhost, 'name', 'messages', '--formatter', 'json');
    const queues = JSON.parse(listing) as Array<{ name: string; messages: number }>;
    expect(queues.find((q) => q.name === 'steward.classic-limit.classic.offers')?.messages).toBe(0);
  });

  it('counts a broker redelivery of a classic offer one above its header, and past the limit dead-letters it unseen', async () => {
    const b = bus('steward.classic-redelivery', { queueType: 'classic', deliveryLimit: 3 });
    await b.connect();
    const letters: DeadLetter[] = [];
    await b.consumeDeadLetters((letter) => void letters.push(letter));
    const seen: Array<{ n: number; count: number; revoked: boolean; requeue: () => Promise<void> }> = [];
    await b.consumeOffers(
      (d) => {
        const n = (JSON.parse((d.body as SignedOffer).payload) as { n: number }).n;
        const entry = { n, count: d.deliveryCount, revoked: false, requeue: () => d.requeue(0) };
        d.onRevoked(() => (entry.revoked = true));
        seen.push(entry);
      },
      { prefetch: 2 },
    );
    // Copies as the bus makes them on a hand-back: the second and the third delivery of their offers.
    const connection = await amqp.connect(`${brokerUrl}/${encodeURIComponent(vhost)}`);
    const channel = await connection.createConfirmChannel();
    for (const [n, count] of [
      [1, 2],
      [2, 3],
    ] as const) {
      channel.sendToQueue(
        'steward.classic-redelivery.classic.offers',
        Buffer.from(JSON.stringify(offer(n))),
        {
          persistent: true,
          headers: { 'x-steward-delivery-count': count },
        },
      );
    }
    await channel.waitForConfirms();
    await connection.close();
    await waitFor(() => (seen.length === 2 ? true : undefined));
    expect(seen.map((e) => [e.n, e.count])).toEqual([
      [1, 2],
      [2, 3],
    ]);
    // The consumer goes away holding both: the broker hands them out again, flagged redelivered.
    await closeVhostConnections(vhost);
    const letter = await waitFor(() => letters[0]);
    // Offer 2 would be its 4th delivery, past the limit of 3: dead-lettered without reaching the handler.
    expect(letter).toMatchObject({ reason: 'delivery-limit', body: offer(2), deliveryCount: 4 });
    const again = await waitFor(() => seen[2]);
    expect([again.n, again.count]).toEqual([1, 3]);
    expect(seen.slice(0, 2).every((e) => e.revoked)).toBe(true);
    // Its next hand-back reaches the limit.
    await again.requeue();
    const last = await waitFor(() => letters[1]);
    expect(last).toMatchObject({ reason: 'delivery-limit', body: offer(1), deliveryCount: 3 });
    expect(seen).toHaveLength(3);
  });

  it('dead-letters a raw message that is not JSON, with reason "malformed"', async () => {
    const b = bus('steward.raw');
    await b.connect();
    const letters: DeadLetter[] = [];
    await b.consumeDeadLetters((letter) => void letters.push(letter));
    let handled = 0;
    await b.consumeOffers(
      async (d) => {
        handled += 1;
        await d.ack();
      },
      { prefetch: 1 },
    );
    const connection = await amqp.connect(`${brokerUrl}/${encodeURIComponent(vhost)}`);
    const channel = await connection.createConfirmChannel();
    channel.sendToQueue('steward.raw.offers', Buffer.from('not json {'), { persistent: true });
    await channel.waitForConfirms();
    await connection.close();
    const letter = await waitFor(() => letters[0]);
    expect(letter).toMatchObject({
      reason: 'malformed',
      queue: 'offers',
      body: 'not json {',
      deliveryCount: 1,
    });
    expect(handled).toBe(0);
  });
});
