/**
 * One behavioural suite for the Bus implementations: the embedded bus and RabbitMQ with quorum and with
 * classic queues (on the machine's broker, in a fresh vhost for this file, a fresh topology prefix for every
 * test). On classic queues the bus counts offers' deliveries itself, so the count and the delivery limit
 * hold there too.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AmqpBus, EmbeddedBus, type Bus, type DeadLetter, type Delivery } from '../../src/bus/index.js';
import type { AgentMessage, Heartbeat, SignedOffer } from '../../src/protocol/index.js';
import { brokerUrl, createVhost, deleteVhost } from '../support/rabbitmq.js';
import { untilDefined } from '../support/wait.js';

interface BusOptions {
  deliveryLimit?: number;
  onHandlerError?: (error: unknown, queue: string) => void;
}

let vhost = '';
let testNumber = 0;
const opened: Bus[] = [];

beforeAll(async () => {
  vhost = await createVhost('bus');
});
afterAll(async () => {
  for (const bus of opened) await bus.close().catch(() => {});
  if (vhost) await deleteVhost(vhost);
});

function amqpBus(queueType: 'quorum' | 'classic') {
  return async (options: BusOptions = {}): Promise<Bus> => {
    testNumber += 1;
    const bus = new AmqpBus({
      urls: [brokerUrl],
      vhost,
      prefix: `steward.t${testNumber}`,
      reconnectDelayMs: 50,
      reconnectMaxDelayMs: 500,
      queueType,
      ...options,
    });
    await bus.connect();
    opened.push(bus);
    return bus;
  };
}

const implementations: Array<{
  name: string;
  make: (options?: BusOptions) => Promise<Bus>;
}> = [
  { name: 'embedded', make: async (options = {}) => new EmbeddedBus(options) },
  { name: 'amqp (quorum queues)', make: amqpBus('quorum') },
  { name: 'amqp (classic queues)', make: amqpBus('classic') },
];

const offer = (n: number): SignedOffer => ({
  v: 1,
  payload: JSON.stringify({ n }),
  signature: 'x',
  keyId: 'k',
});
const event = (agentId: string): AgentMessage => ({
  v: 1,
  type: 'state',
  jobId: 'job-1',
  attempt: 1,
  seq: 1,
  time: 0,
  agentId,
  state: 'running',
});
const heartbeat = (agentId: string): Heartbeat => ({
  v: 1,
  type: 'heartbeat',
  agentId,
  time: 0,
  labels: [],
  capacity: { slots: 1, free: 1 },
  executors: [],
  isolation: 'single-user',
  draining: false,
});

function waitFor<T>(predicate: () => T | undefined, timeoutMs = 10_000): Promise<T> {
  return untilDefined('the bus', predicate, timeoutMs, 5);
}

describe.each(implementations)('$name bus', ({ make }) => {
  it('delivers a copy of each offer, not the published object', async () => {
    const bus = await make();
    const published = offer(1);
    const seen: Delivery<unknown>[] = [];
    await bus.consumeOffers((d) => void seen.push(d), { prefetch: 1 });
    await bus.publishOffer(published);
    const delivery = await waitFor(() => seen[0]);
    expect(delivery.body).toEqual(published);
    expect(delivery.body).not.toBe(published);
    expect(delivery.deliveryCount).toBe(1);
    await bus.close();
  });

  it('redelivers a requeued offer with an increased delivery count', async () => {
    const bus = await make();
    const counts: number[] = [];
    await bus.consumeOffers(
      async (d) => {
        counts.push(d.deliveryCount);
        if (d.deliveryCount < 3) await d.requeue(1);
        else await d.ack();
      },
      { prefetch: 1 },
    );
    await bus.publishOffer(offer(1));
    await waitFor(() => (counts.length === 3 ? true : undefined));
    expect(counts).toEqual([1, 2, 3]);
    await bus.close();
  });

  it('dead-letters an offer at the delivery limit with that reason', async () => {
    const bus = await make({ deliveryLimit: 4 });
    const letters: DeadLetter[] = [];
    await bus.consumeDeadLetters((letter) => void letters.push(letter));
    let deliveries = 0;
    await bus.consumeOffers(
      async (d) => {
        deliveries += 1;
        await d.requeue(0);
      },
      { prefetch: 1 },
    );
    await bus.publishOffer(offer(7));
    const letter = await waitFor(() => letters[0]);
    expect(letter.reason).toBe('delivery-limit');
    expect(letter.deliveryCount).toBe(4);
    expect(deliveries).toBe(4);
    expect(letter.body).toEqual(offer(7));
    await bus.close();
  });

  it('never gives a consumer more unacked deliveries than its prefetch, and prefetch 0 pauses it', async () => {
    const bus = await make();
    const held: Delivery<unknown>[] = [];
    const subscription = await bus.consumeOffers((d) => void held.push(d), { prefetch: 2 });
    for (let i = 0; i < 5; i++) await bus.publishOffer(offer(i));
    await waitFor(() => (held.length === 2 ? true : undefined));
    // The positive signal that a third delivery did not come: a second consumer gets every offer left.
    const taken: Delivery<unknown>[] = [];
    const other = await bus.consumeOffers((d) => void taken.push(d), { prefetch: 3 });
    await waitFor(() => (taken.length === 3 ? true : undefined));
    expect(held).toHaveLength(2);
    await subscription.setPrefetch(0);
    await held[0]!.ack();
    // The second consumer is full: an offer published now goes to the first one unless it is paused.
    await bus.publishOffer(offer(5));
    await other.setPrefetch(4);
    await waitFor(() => (taken.length === 4 ? true : undefined));
    expect(held).toHaveLength(2);
    await subscription.setPrefetch(3);
    // One of the two was acked: with prefetch 3 it may now hold two more, and the third goes elsewhere.
    for (let i = 6; i < 9; i++) await bus.publishOffer(offer(i));
    await waitFor(() => (held.length === 4 ? true : undefined));
    await other.setPrefetch(5);
    await waitFor(() => (taken.length === 5 ? true : undefined));
    expect(held).toHaveLength(4);
    await held[1]!.ack();
    await bus.publishOffer(offer(9));
    await waitFor(() => (held.length === 5 ? true : undefined));
    await bus.close();
  });

  it('flags a requeued offer as redelivered (delivery count above 1)', async () => {
    const bus = await make();
    const counts: number[] = [];
    await bus.consumeOffers(
      async (d) => {
        counts.push(d.deliveryCount);
        if (counts.length < 2) await d.requeue(1);
        else await d.ack();
      },
      { prefetch: 1 },
    );
    await bus.publishOffer(offer(1));
    await waitFor(() => (counts.length === 2 ? true : undefined));
    expect(counts[0]).toBe(1);
    expect(counts[1]).toBeGreaterThan(1);
    await bus.close();
  });

  it('hands unacked deliveries of a cancelled consumer to another consumer', async () => {
    const bus = await make();
    const first: Delivery<unknown>[] = [];
    const second: Delivery<unknown>[] = [];
    const a = await bus.consumeOffers((d) => void first.push(d), { prefetch: 1 });
    await bus.publishOffer(offer(1));
    await waitFor(() => first[0]);
    await bus.consumeOffers((d) => void second.push(d), { prefetch: 1 });
    await a.cancel();
    const redelivered = await waitFor(() => second[0]);
    expect(redelivered.deliveryCount).toBe(2);
    await bus.close();
  });

  it('tells the holder of an unsettled delivery when the bus takes it back, and then ignores its settle', async () => {
    const bus = await make();
    const first: Delivery<unknown>[] = [];
    const second: Delivery<unknown>[] = [];
    let revoked = 0;
    const a = await bus.consumeOffers(
      (d) => {
        d.onRevoked(() => (revoked += 1));
        first.push(d);
      },
      { prefetch: 1 },
    );
    await bus.publishOffer(offer(1));
    const taken = await waitFor(() => first[0]);
    await bus.consumeOffers((d) => void second.push(d), { prefetch: 1 });
    await a.cancel();
    expect(revoked).toBe(1);
    await taken.ack();
    const redelivered = await waitFor(() => second[0]);
    expect(redelivered.body).toEqual(offer(1));
    await redelivered.ack();
    expect(revoked).toBe(1);
    await bus.close();
  });

  it('requeues an event whose handler throws, and keeps delivering the others', async () => {
    const errors: unknown[] = [];
    const bus = await make({ onHandlerError: (e) => errors.push(e) });
    const seen: string[] = [];
    let failedOnce = false;
    await bus.consumeEvents(async (d) => {
      const agentId = (d.body as { agentId: string }).agentId;
      if (agentId === 'bad' && !failedOnce) {
        failedOnce = true;
        throw new Error('boom');
      }
      seen.push(`${agentId}#${d.deliveryCount}`);
    });
    await bus.publishEvent(event('bad'));
    await bus.publishEvent(event('good'));
    await waitFor(() => (seen.length === 2 ? true : undefined));
    expect(seen).toContain('good#1');
    expect(seen).toContain('bad#2');
    expect(errors).toHaveLength(1);
    await bus.close();
  });

  it('counts agent messages waiting for a server, and none once they are taken', async () => {
    const bus = await make();
    for (let i = 0; i < 3; i++) await bus.publishEvent(event(`a${i}`));
    expect(await bus.pendingEvents()).toBe(3);
    const seen: string[] = [];
    await bus.consumeEvents((d) => {
      seen.push((d.body as { agentId: string }).agentId);
    });
    await waitFor(() => (seen.length === 3 ? true : undefined));
    expect(await bus.pendingEvents()).toBe(0);
  });

  it('carries heartbeats in their own queue: not behind waiting events, not counted with them, requeued on failure', async () => {
    const errors: unknown[] = [];
    const bus = await make({ onHandlerError: (e) => errors.push(e) });
    for (let i = 0; i < 3; i++) await bus.publishEvent(event(`event-${i}`));
    const seen: string[] = [];
    let failedOnce = false;
    await bus.consumeHeartbeats(async (d) => {
      const agentId = (d.body as { agentId: string }).agentId;
      if (agentId === 'hb-bad' && !failedOnce) {
        failedOnce = true;
        throw new Error('boom');
      }
      seen.push(`${agentId}#${d.deliveryCount}`);
    });
    await bus.publishHeartbeat(heartbeat('hb-bad'));
    await bus.publishHeartbeat(heartbeat('hb-good'));
    await waitFor(() => (seen.length === 2 ? true : undefined));
    expect(seen).toContain('hb-good#1');
    expect(seen).toContain('hb-bad#2');
    expect(errors).toHaveLength(1);
    // The events published first are still there, untouched, for the events consumer.
    expect(await bus.pendingEvents()).toBe(3);
    await bus.close();
  });

  it('refuses a message larger than the size limit', async () => {
    const bus = await make();
    await expect(bus.publishOffer({ ...offer(1), payload: 'x'.repeat(300 * 1024) })).rejects.toThrow(
      /exceeds/,
    );
    await bus.close();
  });

  it('routes control messages only to the addressed agent', async () => {
    const bus = await make();
    const a: unknown[] = [];
    const b: unknown[] = [];
    await bus.consumeControl('a', async (d) => {
      a.push(d.body);
      await d.ack();
    });
    await bus.consumeControl('b', async (d) => {
      b.push(d.body);
      await d.ack();
    });
    await bus.publishControl('b', { v: 1, type: 'drain' });
    await waitFor(() => b[0]);
    expect(a).toHaveLength(0);
    await bus.close();
  });
});
