/**
 * A consumer of one queue on a channel of its own, kept within its prefetch across re-consumes, and the
 * settlement of each delivery it receives.
 *
 * Prefetch 0 in AMQP means "unlimited", so pausing cancels the consumer instead; a prefetch change
 * re-consumes with the new limit minus what the channel still holds, so the total held never exceeds the
 * prefetch (quorum queues have no channel-wide prefetch).
 */
import type { Channel, ChannelModel, ConsumeMessage } from 'amqplib';
import type { Subscription } from '../types.js';
import type { QueueRole } from './topology.js';

/** What a subscription needs from its bus. */
export interface SubscriptionHost {
  reportError(error: unknown, role: QueueRole): void;
  /** The subscription was cancelled: no re-attach after a reconnect. */
  forget(subscription: AmqpSubscription): void;
  /** Its channel alone closed: consume again on a fresh one, if the connection still stands. */
  reattachLater(subscription: AmqpSubscription, generation: number): void;
}

/** Receives each message with the settlement that acks, nacks or learns of its revocation. */
export type MessageSink = (message: ConsumeMessage, settlement: Settlement) => void;

/**
 * One delivery until it is settled (acked or nacked, once) or revoked (the broker took it back: connection
 * or channel gone). A settle after a drop does nothing on the wire: the broker already has the message.
 */
export class Settlement {
  private done = false;
  private readonly revokedListeners: Array<() => void> = [];

  constructor(
    private readonly subscription: AmqpSubscription,
    private readonly channel: Channel,
    private readonly deliveryTag: number,
  ) {}

  get settled(): boolean {
    return this.done;
  }

  /** Runs `action` on the delivery's channel if it is still the subscription's; false if already settled. */
  settle(action: (channel: Channel) => void): boolean {
    if (this.done) return false;
    this.done = true;
    try {
      if (this.channel === this.subscription.channel) action(this.channel);
    } catch {
      // channel closed under us: the broker redelivers
    }
    this.subscription.settled(this.deliveryTag, this.channel);
    return true;
  }

  onRevoked(listener: () => void): void {
    if (!this.done) this.revokedListeners.push(listener);
  }

  /** @internal The broker took the delivery back. */
  revoke(): void {
    if (this.done) return;
    this.done = true;
    for (const listener of this.revokedListeners.splice(0)) {
      try {
        listener();
      } catch (error) {
        this.subscription.reportError(error);
      }
    }
  }
}

export class AmqpSubscription implements Subscription {
  channel: Channel | undefined;
  generation = -1;
  private consumerTag: string | undefined;
  /** Prefetch of the current consumer. */
  private consumerPrefetch = 0;
  /** Unsettled deliveries, by the consumer tag that received them. */
  private readonly held = new Map<number, string>();
  /** Unsettled deliveries, by delivery tag (revoked when the broker takes them back). */
  private readonly unsettled = new Map<number, Settlement>();
  cancelled = false;
  private busy: Promise<void> = Promise.resolve();
  /** A forced rebalance queued but not started yet. */
  private pendingRebalance: Promise<void> | undefined;

  constructor(
    private readonly host: SubscriptionHost,
    readonly queue: string,
    readonly role: QueueRole,
    private readonly sink: MessageSink,
    private prefetch: number,
  ) {}

  reportError(error: unknown): void {
    this.host.reportError(error, this.role);
  }

  /** Serialises consumer changes (cancel/consume round trips). */
  private run(step: () => Promise<void>): Promise<void> {
    this.busy = this.busy.then(step, step).catch((error: unknown) => this.reportError(error));
    return this.busy;
  }

  async setPrefetch(prefetch: number): Promise<void> {
    const next = Math.max(0, Math.floor(prefetch));
    // Unchanged: the consumer in place already enforces it (a re-consume would only cost round trips).
    if (next === this.prefetch && this.consumerTag !== undefined && this.pendingRebalance === undefined)
      return;
    this.prefetch = next;
    // A re-consume takes three round trips and they run one at a time; changes asked for while one waits
    // its turn are folded into it (it reads the latest prefetch when it runs), so a busy agent does not
    // queue two per job.
    this.pendingRebalance ??= this.run(() => {
      this.pendingRebalance = undefined;
      return this.rebalance(true);
    });
    await this.pendingRebalance;
  }

  async cancel(): Promise<void> {
    this.cancelled = true;
    this.host.forget(this);
    const channel = this.channel;
    this.detach();
    // Closing the channel hands every unacked delivery back to the queue.
    if (channel) await channel.close().catch(() => {});
  }

  /** A fresh channel after (re)connecting. */
  async attach(connection: ChannelModel, generation: number): Promise<void> {
    this.revokeAll();
    this.consumerTag = undefined;
    this.consumerPrefetch = 0;
    const channel = await connection.createChannel();
    channel.on('error', () => {});
    channel.on('close', () => {
      // The broker closed this channel alone (the connection is fine): its unacked deliveries are back in
      // the queue. Forget them and consume again on a fresh channel.
      if (this.channel !== channel || this.cancelled) return;
      this.detach();
      this.host.reattachLater(this, generation);
    });
    this.channel = channel;
    this.generation = generation;
    await this.run(() => this.rebalance(true));
  }

  /** The channel is gone (connection dropped, or closed alone): the broker took every delivery back. */
  detach(): void {
    this.channel = undefined;
    this.consumerTag = undefined;
    this.revokeAll();
  }

  /** @internal A delivery was settled: a consumer that was limited by older deliveries may widen again. */
  settled(deliveryTag: number, channel: Channel): void {
    if (channel !== this.channel) return;
    const tag = this.held.get(deliveryTag);
    this.held.delete(deliveryTag);
    this.unsettled.delete(deliveryTag);
    if (tag !== this.consumerTag || this.consumerTag === undefined) {
      void this.run(() => this.rebalance(false));
    }
  }

  /**
   * Keeps held ≤ prefetch: the current consumer may receive up to its own prefetch; deliveries held from
   * earlier consumers on this channel count against the total.
   */
  private async rebalance(force: boolean): Promise<void> {
    const channel = this.channel;
    if (!channel || this.cancelled) return;
    const tag = this.consumerTag;
    const fromOld = [...this.held.values()].filter((t) => t !== tag).length;
    // Without a reason to change, keep the consumer: widen only once older deliveries are gone.
    if (tag && !force && !(fromOld === 0 && this.consumerPrefetch < this.prefetch)) return;
    if (tag) {
      this.consumerTag = undefined;
      await channel.cancel(tag);
    }
    const room = this.prefetch - this.held.size;
    if (room <= 0) return;
    await channel.prefetch(room, false);
    this.consumerPrefetch = room;
    const reply = await channel.consume(this.queue, (message) => {
      if (message) this.receive(channel, message);
    });
    if (this.channel === channel && !this.cancelled) this.consumerTag = reply.consumerTag;
    else await channel.cancel(reply.consumerTag).catch(() => {});
  }

  /** Holds the delivery (it counts against the prefetch until settled) and hands it to the sink. */
  private receive(channel: Channel, message: ConsumeMessage): void {
    const deliveryTag = message.fields.deliveryTag;
    this.held.set(deliveryTag, message.fields.consumerTag);
    const settlement = new Settlement(this, channel, deliveryTag);
    this.unsettled.set(deliveryTag, settlement);
    this.sink(message, settlement);
  }

  /**
   * The broker took every unsettled delivery back (connection or channel gone): tell their holders, who
   * must not count on them any more; they come again as new deliveries.
   */
  private revokeAll(): void {
    const unsettled = [...this.unsettled.values()];
    this.unsettled.clear();
    this.held.clear();
    for (const settlement of unsettled) settlement.revoke();
  }
}
