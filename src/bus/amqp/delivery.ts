/**
 * From an AMQP message to a `Delivery`: its count, its body, and what ack, requeue and dead-letter do.
 *
 * Classic queues count no deliveries, so the bus counts offers' deliveries itself, in the message: a classic
 * offer handed back (`Delivery.requeue`) is not nacked but published again to the offers queue with header
 * `x-steward-delivery-count` = this delivery's count + 1 (confirmed), and only then is the original acked.
 * At the limit it is dead-lettered with reason `delivery-limit` instead, as the broker does for quorum
 * queues, so the server reports a poison job the same way on both. A delivery's count is the header's (1
 * when absent), plus 1 when the broker flags it `redelivered` (taken back from a consumer that went away
 * without settling it: its agent died or lost its connection); such a delivery past the limit is
 * dead-lettered on arrival. The flag is all the broker tells, so repeated broker redeliveries of one copy
 * count once; an offer that only ever kills its agents still ends at the server's load timeout. Two more
 * differences from quorum queues: a copy goes to the tail of the queue, where a nacked message would keep
 * its place; and a connection lost between the copy's confirm and the original's ack leaves both in the
 * queue (a duplicate offer, which agents and the server already tolerate: at-least-once). Events and
 * control messages on classic queues are nacked back as before, uncounted.
 */
import type { ConsumeMessage } from 'amqplib';
import type { Delivery, Handler } from '../types.js';
import type { Publisher } from './publisher.js';
import type { Settlement } from './subscription.js';
import type { QueueKind, QueueRole } from './topology.js';

/**
 * On classic offers, the delivery number of the copy that carries it (the bus's own count; see above). Also
 * on dead letters the bus publishes: the deliveries the message had.
 */
export const DELIVERY_COUNT_HEADER = 'x-steward-delivery-count';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** What deliveries need from the bus. */
export interface DeliveryContext {
  readonly deliveryLimit: number;
  readonly publisher: Publisher;
  /** Whether the bus counts this queue's deliveries itself (offers on classic queues). */
  countsOwnDeliveries(kind: QueueKind): boolean;
  deadLetter(kind: QueueKind, content: Buffer, reason: string, deliveryCount: number): Promise<void>;
  reportError(error: unknown, role: QueueRole): void;
}

/** A consumer of one of the bus's own queues. */
export interface QueueConsumer {
  readonly queue: string;
  readonly kind: QueueKind;
  readonly handler: Handler<unknown>;
}

/**
 * 1 for a first delivery. Quorum queues count returns in `x-delivery-count`. On classic queues the bus's
 * own header counts the deliveries before the copy, plus 1 if the broker flags a redelivery of it.
 */
export function deliveryCountOf(headers: Record<string, unknown>, redelivered: boolean): number {
  const returns = Number(headers['x-delivery-count']);
  if (headers['x-delivery-count'] !== undefined && Number.isFinite(returns)) return returns + 1;
  const own = Number(headers[DELIVERY_COUNT_HEADER]);
  const base = headers[DELIVERY_COUNT_HEADER] !== undefined && Number.isFinite(own) && own >= 1 ? own : 1;
  return base + (redelivered ? 1 : 0);
}

function parseJson(content: Buffer): unknown {
  try {
    return JSON.parse(content.toString('utf8')) as unknown;
  } catch {
    return undefined;
  }
}

/** Turns an AMQP message into a Delivery and runs the consumer's handler (or dead-letters the message). */
export function deliver(
  context: DeliveryContext,
  consumer: QueueConsumer,
  message: ConsumeMessage,
  settlement: Settlement,
): void {
  const headers = (message.properties.headers ?? {}) as Record<string, unknown>;
  const deliveryCount = deliveryCountOf(headers, message.fields.redelivered);
  const counted = context.countsOwnDeliveries(consumer.kind);
  const delivery = toDelivery(context, consumer, message, settlement, { headers, deliveryCount, counted });
  const report = (error: unknown): void => context.reportError(error, consumer.kind);
  if (counted && deliveryCount > context.deliveryLimit) {
    // Taken back from consumers that went away until past the limit (agents dying on it): a quorum queue
    // would not deliver it again either.
    void delivery.deadLetter('delivery-limit').catch(report);
    return;
  }
  if (delivery.body === undefined) {
    // Not JSON: nobody can act on it; record it as a dead letter.
    void delivery.deadLetter('malformed').catch(report);
    return;
  }
  void Promise.resolve()
    .then(() => consumer.handler(delivery))
    .catch(report);
}

function toDelivery(
  context: DeliveryContext,
  consumer: QueueConsumer,
  message: ConsumeMessage,
  settlement: Settlement,
  seen: { headers: Record<string, unknown>; deliveryCount: number; counted: boolean },
): Delivery<unknown> {
  const { headers, deliveryCount, counted } = seen;
  const ack = (): boolean => settlement.settle((channel) => channel.ack(message));
  return {
    body: parseJson(message.content),
    deliveryCount,
    ack: async () => {
      ack();
    },
    requeue: async (delayMs = 0) => {
      if (settlement.settled) return;
      if (delayMs > 0) await sleep(delayMs);
      if (!counted) {
        settlement.settle((channel) => channel.nack(message, false, true));
        return;
      }
      if (settlement.settled) return;
      if (deliveryCount >= context.deliveryLimit) {
        await context.deadLetter(consumer.kind, message.content, 'delivery-limit', deliveryCount);
      } else {
        // The copy must be in the queue (confirmed) before the original goes: an offer is never lost.
        await context.publisher.publish({ via: 'queue', queue: consumer.queue }, message.content, {
          ...headers,
          [DELIVERY_COUNT_HEADER]: deliveryCount + 1,
        });
      }
      ack();
    },
    deadLetter: async (reason) => {
      if (settlement.settled) return;
      await context.deadLetter(consumer.kind, message.content, reason, deliveryCount);
      ack();
    },
    onRevoked: (listener) => settlement.onRevoked(listener),
  };
}
