/**
 * Dead letters, both ways. The bus dead-letters a message by publishing it (confirmed) to `<prefix>.dlx`
 * with `x-steward-reason`, `x-steward-queue` and its delivery count, then acking the original; the broker
 * dead-letters offers past `x-delivery-limit` itself, with `x-death`. Both end in `<prefix>.dead-letters`,
 * which the server consumes through one subscription shared by its dead-letter handlers.
 */
import type { ConsumeMessage } from 'amqplib';
import type { DeadLetter, Subscription } from '../types.js';
import { DELIVERY_COUNT_HEADER } from './delivery.js';
import type { Publisher } from './publisher.js';
import type { AmqpSubscription, MessageSink } from './subscription.js';
import type { QueueKind } from './topology.js';

export type DeadLetterHandler = (letter: DeadLetter) => void | Promise<void>;

/** Maps a broker's x-death reason to the bus's reason vocabulary. */
function brokerReason(reason: unknown): string {
  if (reason === 'delivery_limit') return 'delivery-limit';
  return typeof reason === 'string' ? reason : 'unknown';
}

function isDeadLetterQueue(queue: string): queue is DeadLetter['queue'] {
  return queue === 'offers' || queue === 'events' || queue === 'control';
}

/** A dead-lettered message as the server sees it, whoever dead-lettered it (the bus or the broker). */
export function readDeadLetter(message: ConsumeMessage, deliveryLimit: number): DeadLetter {
  const headers = (message.properties.headers ?? {}) as Record<string, unknown>;
  const deaths = headers['x-death'] as Array<Record<string, unknown>> | undefined;
  const death = Array.isArray(deaths) ? deaths[0] : undefined;
  const ownReason = headers['x-steward-reason'];
  const reason = typeof ownReason === 'string' ? ownReason : brokerReason(death?.reason);
  const queueHeader = headers['x-steward-queue'];
  const queue = typeof queueHeader === 'string' ? queueHeader : message.fields.routingKey.split('.')[0]!;
  let deliveryCount = Number(headers[DELIVERY_COUNT_HEADER]);
  if (!Number.isFinite(deliveryCount)) {
    deliveryCount = reason === 'delivery-limit' ? deliveryLimit : Number(death?.count ?? 1);
  }
  const text = message.content.toString('utf8');
  let body: unknown;
  try {
    body = JSON.parse(text) as unknown;
  } catch {
    body = text;
  }
  return { body, reason, queue: isDeadLetterQueue(queue) ? queue : 'offers', deliveryCount };
}

/** Publishes (confirmed) a message of queue `kind` to the dead-letter exchange, with why and how often. */
export function publishDeadLetter(
  publisher: Publisher,
  exchange: string,
  letter: { kind: QueueKind; content: Buffer; reason: string; deliveryCount: number },
): Promise<void> {
  return publisher.publish({ via: 'exchange', exchange, routingKey: letter.kind }, letter.content, {
    'x-steward-reason': letter.reason,
    'x-steward-queue': letter.kind,
    [DELIVERY_COUNT_HEADER]: letter.deliveryCount,
  });
}

/**
 * The server's dead-letter handlers share one subscription to the dead-letters queue, open while any
 * handler is registered. Each letter goes to every handler, then is acked (a throwing handler is reported,
 * not retried: a dead letter is a record, not work).
 */
export class DeadLetterConsumer {
  private readonly handlers = new Set<DeadLetterHandler>();
  private subscription: AmqpSubscription | undefined;

  constructor(
    /** Opens the subscription to the dead-letters queue, delivering to the given sink. */
    private readonly subscribe: (sink: MessageSink) => Promise<AmqpSubscription>,
    private readonly deliveryLimit: number,
    private readonly reportError: (error: unknown) => void,
  ) {}

  async add(handler: DeadLetterHandler): Promise<Subscription> {
    this.handlers.add(handler);
    this.subscription ??= await this.subscribe((message, settlement) => {
      void this.dispatch(message).finally(() => settlement.settle((channel) => channel.ack(message)));
    });
    return {
      setPrefetch: async () => {},
      cancel: () => this.remove(handler),
    };
  }

  private async remove(handler: DeadLetterHandler): Promise<void> {
    this.handlers.delete(handler);
    if (this.handlers.size === 0 && this.subscription) {
      const subscription = this.subscription;
      this.subscription = undefined;
      await subscription.cancel();
    }
  }

  private async dispatch(message: ConsumeMessage): Promise<void> {
    const letter = readDeadLetter(message, this.deliveryLimit);
    for (const handler of this.handlers) {
      try {
        await handler(letter);
      } catch (error) {
        this.reportError(error);
      }
    }
  }
}
