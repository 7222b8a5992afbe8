/**
 * Confirmed publishing. Every publish goes through the connection's confirm channel with persistent delivery
 * and resolves on the broker's confirm; publishes not confirmed when the connection drops are sent again
 * after reconnecting (the consumers are idempotent).
 */
import type { Options } from 'amqplib';
import { MAX_MESSAGE_BYTES } from '../../protocol/index.js';
import type { BrokerConnection } from './connection.js';

/**
 * Where a message goes: straight to a queue (through the default exchange, which routes by queue name), or
 * to a named exchange with a routing key.
 */
export type Destination =
  | { readonly via: 'queue'; readonly queue: string }
  | { readonly via: 'exchange'; readonly exchange: string; readonly routingKey: string };

/** A publish the broker has not confirmed yet. */
interface PendingPublish {
  readonly destination: Destination;
  readonly content: Buffer;
  /** AMQP headers, for messages the bus itself annotates (counted copies, dead letters). */
  readonly headers: Record<string, unknown> | undefined;
  readonly resolve: () => void;
  readonly reject: (error: Error) => void;
  /** Connection generation it was last sent on; -1 when waiting for a connection. */
  sentOn: number;
}

/** The exchange and routing key amqplib takes for a destination. */
function address(destination: Destination): [exchange: string, routingKey: string] {
  return destination.via === 'queue'
    ? ['', destination.queue]
    : [destination.exchange, destination.routingKey];
}

export class Publisher {
  private readonly pending = new Set<PendingPublish>();

  constructor(private readonly link: BrokerConnection) {}

  /** A bus message: JSON, at most `MAX_MESSAGE_BYTES`, to one queue. */
  async publishJson(queue: string, body: unknown): Promise<void> {
    if (this.link.closed) throw new Error('bus is closed');
    const text = JSON.stringify(body);
    const size = Buffer.byteLength(text);
    if (size > MAX_MESSAGE_BYTES) {
      throw new Error(`message of ${size} bytes exceeds the ${MAX_MESSAGE_BYTES}-byte limit`);
    }
    await this.publish({ via: 'queue', queue }, Buffer.from(text));
  }

  /** Publishes with a confirm; unconfirmed at a drop → sent again on the next connection. */
  publish(destination: Destination, content: Buffer, headers?: Record<string, unknown>): Promise<void> {
    if (this.link.closed) return Promise.reject(new Error('bus is closed'));
    return new Promise<void>((resolve, reject) => {
      const entry: PendingPublish = { destination, content, headers, resolve, reject, sentOn: -1 };
      this.pending.add(entry);
      this.send(entry);
      if (!this.link.model) void this.link.ensureConnected().catch(() => {});
    });
  }

  /** A new connection is in use: send everything not confirmed yet. */
  resendAll(): void {
    for (const entry of this.pending) this.send(entry);
  }

  /** The connection dropped: nothing pending was confirmed on it, all of it waits for the next. */
  unsendAll(): void {
    for (const entry of this.pending) entry.sentOn = -1;
  }

  rejectAll(error: Error): void {
    for (const entry of this.pending) entry.reject(error);
    this.pending.clear();
  }

  private send(entry: PendingPublish): void {
    const channel = this.link.publisher;
    if (!channel) return;
    const generation = this.link.generation;
    entry.sentOn = generation;
    const [exchange, routingKey] = address(entry.destination);
    const options: Options.Publish = { persistent: true, contentType: 'application/json' };
    if (entry.headers) options.headers = entry.headers;
    try {
      channel.publish(exchange, routingKey, entry.content, options, (error: unknown) => {
        if (!this.pending.has(entry) || entry.sentOn !== generation) return;
        if (error) {
          // Nacked by the broker (or channel gone): try again on the current connection.
          if (this.link.publisher && this.link.generation === generation && !this.link.closed) {
            setTimeout(() => {
              if (this.pending.has(entry) && entry.sentOn === generation) this.send(entry);
            }, 50);
          } else entry.sentOn = -1;
          return;
        }
        this.pending.delete(entry);
        entry.resolve();
      });
    } catch {
      entry.sentOn = -1;
    }
  }
}
