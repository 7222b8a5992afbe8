/**
 * The RabbitMQ bus: the Bus semantics of `../types.ts` over AMQP 0-9-1 (amqplib), for the distributed mode.
 * This file wires the parts: the topology (`topology.ts`), the connection with failover (`connection.ts`),
 * confirmed publishing (`publisher.ts`), consumers within their prefetch (`subscription.ts`), deliveries and
 * the bus's own delivery count on classic queues (`delivery.ts`), and dead letters (`dead-letters.ts`).
 */
import type { ChannelModel } from 'amqplib';
import type { CompiledBusConfig } from '../../config/index.js';
import {
  DEFAULT_DELIVERY_LIMIT,
  type AgentMessage,
  type Control,
  type Heartbeat,
  type SignedOffer,
} from '../../protocol/index.js';
import type { Bus, DeadLetter, Handler, Subscription } from '../types.js';
import { BrokerConnection, type ConnectionSettings } from './connection.js';
import { DeadLetterConsumer, publishDeadLetter } from './dead-letters.js';
import { deliver, type DeliveryContext } from './delivery.js';
import { Publisher } from './publisher.js';
import { AmqpSubscription, type MessageSink, type SubscriptionHost } from './subscription.js';
import {
  assertQueueableAgentId,
  Topology,
  type QueueKind,
  type QueueRole,
  type QueueType,
  type QueueTypeOption,
  type TopologyName,
} from './topology.js';

export interface AmqpBusOptions extends ConnectionSettings {
  /**
   * Deliveries after which an offer is dead-lettered with reason `delivery-limit`. Default
   * `DEFAULT_DELIVERY_LIMIT` (20). Counted by the
   * broker on quorum queues, by the bus on classic ones.
   */
  deliveryLimit?: number;
  /**
   * `quorum`, `classic`, or `auto` (quorum when the broker supports it, RabbitMQ ≥ 3.8, else classic).
   * Default `auto`.
   */
  queueType?: QueueTypeOption;
  /** Prefix of every queue/exchange name. Default `steward.v1`. */
  prefix?: string;
  /** Called when a handler throws; the bus keeps going. */
  onHandlerError?: (error: unknown, queue: string) => void;
}

/**
 * The options a compiled `kind: amqp` bus config gives (brokers, credentials, TLS, delivery limit, queue
 * type); the caller adds its own handlers.
 */
export function amqpBusOptions(config: CompiledBusConfig & { kind: 'amqp' }): AmqpBusOptions {
  return {
    urls: [...config.urls],
    vhost: config.vhost,
    user: config.user,
    password: config.password,
    ca: config.ca,
    cert: config.cert,
    key: config.key,
    deliveryLimit: config.deliveryLimit,
    queueType: config.queueType,
  };
}

export class AmqpBus implements Bus, SubscriptionHost {
  readonly kind = 'amqp' as const;
  readonly deliveryLimit: number;
  private readonly topology: Topology;
  private readonly link: BrokerConnection;
  private readonly publisher: Publisher;
  private readonly deliveries: DeliveryContext;
  private readonly deadLetters: DeadLetterConsumer;
  private readonly subscriptions = new Set<AmqpSubscription>();

  constructor(private readonly options: AmqpBusOptions) {
    this.link = new BrokerConnection(options, {
      prepare: (connection) => this.prepare(connection),
      opened: (connection, generation) => this.reattachAll(connection, generation),
      dropped: () => this.dropped(),
      closed: () => this.publisher.rejectAll(new Error('bus is closed')),
    });
    this.deliveryLimit = options.deliveryLimit ?? DEFAULT_DELIVERY_LIMIT;
    if (this.deliveryLimit < 1) throw new Error('AmqpBus: deliveryLimit must be at least 1');
    this.topology = new Topology(
      options.prefix ?? 'steward.v1',
      options.queueType ?? 'auto',
      this.deliveryLimit,
    );
    this.publisher = new Publisher(this.link);
    this.deliveries = {
      deliveryLimit: this.deliveryLimit,
      publisher: this.publisher,
      countsOwnDeliveries: (kind) => this.topology.type === 'classic' && kind === 'offers',
      deadLetter: (kind, content, reason, deliveryCount) =>
        publishDeadLetter(this.publisher, this.name('dlx'), { kind, content, reason, deliveryCount }),
      reportError: (error, role) => this.reportError(error, role),
    };
    this.deadLetters = new DeadLetterConsumer(
      (sink) => this.open(this.name('dead-letters'), 'dead-letters', sink, 32),
      this.deliveryLimit,
      (error) => this.reportError(error, 'dead-letters'),
    );
  }

  /** The queue type in use; undefined while `auto` has not met a broker yet. */
  get queueType(): QueueType | undefined {
    return this.topology.type;
  }

  /** Connects (with retries and failover) and declares the topology. */
  async connect(): Promise<void> {
    if (this.link.model) return;
    await this.link.ensureConnected();
  }

  get connected(): boolean {
    return this.link.model !== undefined;
  }

  name(kind: TopologyName): string {
    return this.topology.name(kind);
  }

  controlName(agentId: string): string {
    return this.topology.controlName(agentId);
  }

  // --- Bus ------------------------------------------------------------------------------------------------

  async publishOffer(offer: SignedOffer): Promise<void> {
    await this.knowQueueType();
    await this.publisher.publishJson(this.name('offers'), offer);
  }

  async consumeOffers(handler: Handler<unknown>, options: { prefetch: number }): Promise<Subscription> {
    await this.knowQueueType();
    return this.subscribe(this.name('offers'), 'offers', handler, options.prefetch);
  }

  async publishDaskWorkerOffer(offer: SignedOffer): Promise<void> {
    await this.knowQueueType();
    await this.publisher.publishJson(this.name('dask-workers'), offer);
  }

  async consumeDaskWorkerOffers(
    handler: Handler<unknown>,
    options: { prefetch: number },
  ): Promise<Subscription> {
    await this.knowQueueType();
    return this.subscribe(this.name('dask-workers'), 'dask-workers', handler, options.prefetch);
  }

  async publishEvent(message: AgentMessage): Promise<void> {
    await this.knowQueueType();
    await this.publisher.publishJson(this.name('events'), message);
  }

  async pendingEvents(): Promise<number | undefined> {
    const connection = this.link.model;
    if (!connection || this.link.closed) return undefined;
    try {
      // A passive check on a channel of its own: it never changes the queue, and a failure closes only it.
      const channel = await connection.createChannel();
      channel.on('error', () => {});
      try {
        return (await channel.checkQueue(this.name('events'))).messageCount;
      } finally {
        await channel.close().catch(() => {});
      }
    } catch {
      return undefined;
    }
  }

  async consumeEvents(handler: Handler<unknown>): Promise<Subscription> {
    return this.consumeSettled('events', handler, 64);
  }

  async publishHeartbeat(heartbeat: Heartbeat): Promise<void> {
    await this.knowQueueType();
    await this.publisher.publishJson(this.name('heartbeats'), heartbeat);
  }

  async consumeHeartbeats(handler: Handler<unknown>): Promise<Subscription> {
    return this.consumeSettled('heartbeats', handler, 16);
  }

  async publishControl(agentId: string, control: Control): Promise<void> {
    await this.declareControl(agentId);
    await this.publisher.publishJson(this.controlName(agentId), control);
  }

  async consumeControl(agentId: string, handler: Handler<unknown>): Promise<Subscription> {
    await this.declareControl(agentId);
    return this.subscribe(this.controlName(agentId), 'control', handler, 16);
  }

  async consumeDeadLetters(handler: (letter: DeadLetter) => void | Promise<void>): Promise<Subscription> {
    await this.knowQueueType();
    return this.deadLetters.add(handler);
  }

  async close(): Promise<void> {
    await this.link.close();
  }

  // --- SubscriptionHost -----------------------------------------------------------------------------------

  /** @internal */
  reportError(error: unknown, queue: QueueRole): void {
    try {
      this.options.onHandlerError?.(error, queue);
    } catch {
      // a reporter that throws must not stop the bus
    }
  }

  /** @internal */
  forget(subscription: AmqpSubscription): void {
    this.subscriptions.delete(subscription);
  }

  /** @internal A subscription whose channel alone closed consumes again, if the connection still stands. */
  reattachLater(subscription: AmqpSubscription, generation: number): void {
    setTimeout(() => {
      const connection = this.link.model;
      if (
        !connection ||
        this.link.generation !== generation ||
        subscription.cancelled ||
        subscription.channel
      )
        return;
      if (!this.subscriptions.has(subscription)) return;
      subscription.attach(connection, generation).catch((error: unknown) => subscription.reportError(error));
    }, 100).unref();
  }

  // --- internals -------------------------------------------------------------------------------------------

  /** With `auto`, names depend on the broker: the first connection decides them. */
  private async knowQueueType(): Promise<void> {
    if (!this.topology.type) await this.link.ensureConnected();
  }

  /** The server's handler settles by its promise: resolved → ack, rejected → requeue after a pause. */
  private async consumeSettled(
    kind: 'events' | 'heartbeats',
    handler: Handler<unknown>,
    prefetch: number,
  ): Promise<Subscription> {
    await this.knowQueueType();
    const wrapped: Handler<unknown> = async (delivery) => {
      try {
        await handler(delivery);
        await delivery.ack();
      } catch (error) {
        this.reportError(error, kind);
        await delivery.requeue(100);
      }
    };
    return this.subscribe(this.name(kind), kind, wrapped, prefetch);
  }

  private async declareControl(agentId: string): Promise<void> {
    assertQueueableAgentId(agentId);
    await this.knowQueueType();
    if (this.topology.hasControl(agentId)) return;
    await this.link.ensureConnected();
    const connection = this.link.model;
    if (!connection) throw new Error('bus is closed');
    await this.topology.declareControl(connection, agentId);
  }

  /** Consumes one of the bus's own queues: its messages become Deliveries for `handler`. */
  private subscribe(
    queue: string,
    kind: QueueKind,
    handler: Handler<unknown>,
    prefetch: number,
  ): Promise<AmqpSubscription> {
    const consumer = { queue, kind, handler };
    const sink: MessageSink = (message, settlement) =>
      deliver(this.deliveries, consumer, message, settlement);
    return this.open(queue, kind, sink, prefetch);
  }

  private async open(
    queue: string,
    role: QueueRole,
    sink: MessageSink,
    prefetch: number,
  ): Promise<AmqpSubscription> {
    if (this.link.closed) throw new Error('bus is closed');
    const subscription = new AmqpSubscription(this, queue, role, sink, Math.max(0, prefetch));
    this.subscriptions.add(subscription);
    await this.link.ensureConnected();
    const connection = this.link.model;
    if (connection && subscription.generation !== this.link.generation) {
      await subscription.attach(connection, this.link.generation);
    }
    return subscription;
  }

  private async prepare(connection: ChannelModel): Promise<void> {
    this.topology.resolveFor(connection.connection.serverProperties.version);
    await this.topology.declare(connection);
  }

  private async reattachAll(connection: ChannelModel, generation: number): Promise<void> {
    this.publisher.resendAll();
    for (const subscription of this.subscriptions) {
      await subscription
        .attach(connection, generation)
        .catch((error: unknown) => subscription.reportError(error));
    }
  }

  private dropped(): void {
    for (const subscription of this.subscriptions) subscription.detach();
    this.publisher.unsendAll();
  }
}
