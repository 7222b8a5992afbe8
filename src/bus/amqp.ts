/**
 * The RabbitMQ bus: the Bus semantics of `types.ts` over AMQP 0-9-1 (amqplib), for the distributed mode.
 *
 * Topology (declared here, idempotently, on every connect; names carry a version so that a later change of
 * arguments is a new set of names and a migration, never a clash with what a broker already holds):
 * - `<prefix>.offers`: quorum queue, `x-delivery-limit`, dead-lettering to `<prefix>.dlx` (key `offers`);
 * - `<prefix>.events`: quorum queue, dead-lettering to `<prefix>.dlx` (key `events`);
 * - `<prefix>.heartbeats`: quorum queue keeping the newest 10,000 (`x-overflow: drop-head`), not
 *   dead-lettered: agents' proof of life, apart from the events so that no backlog of those delays it;
 * - `<prefix>.control.<agentId>`: one quorum queue per agent (key `control`);
 * - `<prefix>.dlx` (direct exchange) → `<prefix>.dead-letters` (quorum queue), consumed by the server.
 *
 * Queue type (`queueType`): durable quorum queues, or durable classic queues where the broker has no quorum
 * queues (`auto` decides from the broker's version on the first connection, then keeps the choice for the
 * bus's life). Classic queues live under other names, `<prefix>.classic.*`, so the two kinds never meet
 * under one name with different arguments.
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
 *
 * Every publish goes through a confirm channel with persistent delivery and resolves on the broker's
 * confirm; publishes not confirmed when the connection drops are sent again after reconnecting (the
 * consumers are idempotent). Each subscription has its own channel. Prefetch 0 in AMQP means "unlimited",
 * so pausing cancels the consumer instead; a prefetch change re-consumes with the new limit minus what the
 * channel still holds, so the total held never exceeds the prefetch.
 */
import amqp from 'amqplib';
import type { Channel, ChannelModel, ConfirmChannel, ConsumeMessage, Options } from 'amqplib';
import {
  MAX_MESSAGE_BYTES,
  type AgentMessage,
  type Control,
  type Heartbeat,
  type SignedOffer,
} from '../protocol/index.js';
import type { Bus, DeadLetter, Delivery, Handler, Subscription } from './types.js';

export interface AmqpBusOptions {
  /** Broker URLs (`amqp://` or `amqps://`), tried in order on every (re)connect: failover. */
  urls: string[];
  /** Virtual host; overrides the one in the URLs when set. */
  vhost?: string;
  /** Credentials; override the ones in the URLs when set. */
  user?: string;
  password?: string;
  /** TLS (amqps): PEM contents of the CA certificate, client certificate and key. */
  ca?: string | Buffer;
  cert?: string | Buffer;
  key?: string | Buffer;
  /**
   * Deliveries after which an offer is dead-lettered with reason `delivery-limit`. Default 20. Counted by the
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
  /** Reconnect backoff: first delay and cap, in ms. Defaults 100 and 5000. */
  reconnectDelayMs?: number;
  reconnectMaxDelayMs?: number;
  /** Called when a handler throws; the bus keeps going. */
  onHandlerError?: (error: unknown, queue: string) => void;
  /** Connection events (connected, dropped, reconnecting) for the log. */
  onConnectionEvent?: (event: {
    type: 'connected' | 'dropped' | 'failed';
    url?: string;
    error?: unknown;
  }) => void;
}

/** Heartbeats are never dead-lettered: a malformed one is dropped by the server, an old one by the queue. */
type QueueKind = DeadLetter['queue'] | 'heartbeats';

/**
 * The heartbeats queue keeps the newest this many (drop-head): with every server away for a day, agents
 * would otherwise pile up tens of thousands each, and only the latest of an agent tells anything.
 */
const HEARTBEATS_KEPT = 10_000;
export type QueueTypeOption = 'auto' | 'quorum' | 'classic';

/** Whether a broker announcing this version has quorum queues (RabbitMQ 3.8 and later). */
export function supportsQuorumQueues(version: string | undefined): boolean {
  const match = /^(\d+)\.(\d+)/.exec(version ?? '');
  if (!match) return false;
  const major = Number(match[1]);
  const minor = Number(match[2]);
  return major > 3 || (major === 3 && minor >= 8);
}

interface PendingPublish {
  queue: string;
  content: Buffer;
  resolve: () => void;
  reject: (error: Error) => void;
  /** Connection generation it was last sent on; -1 when waiting for a connection. */
  sentOn: number;
}

/**
 * On classic offers, the delivery number of the copy that carries it (the bus's own count; see the top of
 * this file). Also on dead letters the bus publishes: the deliveries the message had.
 */
const DELIVERY_COUNT_HEADER = 'x-steward-delivery-count';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

const UNTRUSTED_CERTIFICATE = new Set([
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_SIGNATURE_FAILURE',
]);

/**
 * A connection failure as an admin can act on it: TLS trust and name problems say which setting to look at;
 * anything else is passed on unchanged. Never includes the URL's credentials.
 */
export function describeConnectError(url: string, error: unknown): unknown {
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code !== 'string') return error;
  let where = url;
  try {
    const parsed = new URL(url);
    where = `${parsed.protocol}//${parsed.host}`;
  } catch {
    // keep the URL as given
  }
  const detail = `${code}: ${(error as Error).message}`;
  let message: string | undefined;
  if (UNTRUSTED_CERTIFICATE.has(code))
    message = `TLS: the broker at ${where} presented a certificate that the configured CA (bus.ca) did not sign (${detail})`;
  else if (code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID')
    message = `TLS: the broker at ${where} presented a certificate outside its validity period (${detail})`;
  else if (code === 'ERR_TLS_CERT_ALTNAME_INVALID')
    message = `TLS: the broker's certificate does not name the host in ${where} (${detail})`;
  else if (/^ERR_SSL_.*ALERT/.test(code))
    message = `TLS: the broker at ${where} refused the handshake; does it require a client certificate (bus.cert, bus.key) signed by a CA it trusts? (${detail})`;
  if (!message) return error;
  return Object.assign(new Error(message, { cause: error }), { code });
}

/**
 * amqplib hands the socket one frame (or one small message) per write, each its own system call even when a
 * dozen are ready at once — a burst's publishes and acks, a batch of events. Its multiplexer writes out
 * everything ready in one synchronous pass: corking the socket around that pass makes it one `writev`.
 * Looked up defensively on amqplib's connection; if its internals change, writes simply stay as they were.
 */
function coalesceWrites(model: ChannelModel): void {
  const connection = (model as unknown as { connection?: { muxer?: unknown; stream?: unknown } }).connection;
  const muxer = connection?.muxer as { _readIncoming?: () => void } | undefined;
  const socket = connection?.stream as { cork?: () => void; uncork?: () => void } | undefined;
  const pass = muxer?._readIncoming;
  if (!muxer || typeof pass !== 'function' || typeof socket?.cork !== 'function' || !socket.uncork) return;
  muxer._readIncoming = function corked(this: unknown): void {
    socket.cork!();
    try {
      pass.call(this);
    } finally {
      socket.uncork!();
    }
  };
}

/** Maps a broker's x-death reason to the bus's reason vocabulary. */
function brokerReason(reason: unknown): string {
  if (reason === 'delivery_limit') return 'delivery-limit';
  return typeof reason === 'string' ? reason : 'unknown';
}

class AmqpSubscription implements Subscription {
  channel: Channel | undefined;
  generation = -1;
  consumerTag: string | undefined;
  /** Prefetch of the current consumer. */
  consumerPrefetch = 0;
  /** Unsettled deliveries, by the consumer tag that received them. */
  readonly held = new Map<number, string>();
  /** Unsettled deliveries' revocation callbacks (run when the broker takes them back), by delivery tag. */
  readonly revokers = new Map<number, () => void>();
  cancelled = false;
  private busy: Promise<void> = Promise.resolve();
  /** A forced rebalance queued but not started yet. */
  private pendingRebalance: Promise<void> | undefined;

  constructor(
    private readonly bus: AmqpBus,
    readonly queue: string,
    readonly kind: QueueKind,
    readonly handler: Handler<unknown>,
    public prefetch: number,
  ) {}

  /** Serialises consumer changes (cancel/consume round trips). */
  run(step: () => Promise<void>): Promise<void> {
    this.busy = this.busy.then(step, step).catch((error: unknown) => {
      this.bus.reportError(error, this.kind);
    });
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
    this.bus.forget(this);
    const channel = this.channel;
    this.channel = undefined;
    this.consumerTag = undefined;
    this.revokeAll();
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
      this.channel = undefined;
      this.consumerTag = undefined;
      this.revokeAll();
      this.bus.reattachLater(this, generation);
    });
    this.channel = channel;
    this.generation = generation;
    await this.run(() => this.rebalance(true));
  }

  /**
   * Keeps held ≤ prefetch: the current consumer may receive up to its own prefetch; deliveries held from
   * earlier consumers on this channel count against the total.
   */
  async rebalance(force: boolean): Promise<void> {
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
      if (message) this.bus.deliver(this, channel, message);
    });
    if (this.channel === channel && !this.cancelled) this.consumerTag = reply.consumerTag;
    else await channel.cancel(reply.consumerTag).catch(() => {});
  }

  /**
   * The broker took every unsettled delivery back (connection or channel gone): tell their holders, who
   * must not count on them any more; they come again as new deliveries.
   */
  revokeAll(): void {
    const revokers = [...this.revokers.values()];
    this.revokers.clear();
    this.held.clear();
    for (const revoke of revokers) revoke();
  }

  /** A delivery was settled: a consumer that was limited by older deliveries may widen again. */
  settled(deliveryTag: number, channel: Channel): void {
    if (channel !== this.channel) return;
    const tag = this.held.get(deliveryTag);
    this.held.delete(deliveryTag);
    this.revokers.delete(deliveryTag);
    if (tag !== this.consumerTag || this.consumerTag === undefined) {
      void this.run(() => this.rebalance(false));
    }
  }
}

export class AmqpBus implements Bus {
  readonly kind = 'amqp' as const;
  private readonly options: AmqpBusOptions;
  readonly deliveryLimit: number;
  private readonly prefix: string;
  private resolvedQueueType: 'quorum' | 'classic' | undefined;
  private readonly subscriptions = new Set<AmqpSubscription>();
  private readonly pending = new Set<PendingPublish>();
  private readonly declaredControls = new Set<string>();
  private readonly deadLetterHandlers = new Set<(letter: DeadLetter) => void | Promise<void>>();
  private deadLetterSubscription: AmqpSubscription | undefined;
  private connection: ChannelModel | undefined;
  private publisher: ConfirmChannel | undefined;
  private generation = 0;
  private connecting: Promise<void> | undefined;
  private closed = false;
  private urlIndex = 0;
  private waiters: Array<() => void> = [];

  constructor(options: AmqpBusOptions) {
    if (options.urls.length === 0) throw new Error('AmqpBus: at least one broker URL is required');
    this.options = options;
    this.deliveryLimit = options.deliveryLimit ?? 20;
    if (this.deliveryLimit < 1) throw new Error('AmqpBus: deliveryLimit must be at least 1');
    this.prefix = options.prefix ?? 'steward.v1';
    const queueType = options.queueType ?? 'auto';
    if (queueType !== 'auto') this.resolvedQueueType = queueType;
  }

  /** The queue type in use; undefined while `auto` has not met a broker yet. */
  get queueType(): 'quorum' | 'classic' | undefined {
    return this.resolvedQueueType;
  }

  /** Connects (with retries and failover) and declares the topology. */
  async connect(): Promise<void> {
    if (this.connection) return;
    await this.ensureConnected();
  }

  get connected(): boolean {
    return this.connection !== undefined;
  }

  /** Names of classic queues carry `.classic` so they never clash with quorum queues of the same role. */
  private get base(): string {
    if (!this.resolvedQueueType) throw new Error('AmqpBus: queue type not known before the first connection');
    return this.resolvedQueueType === 'classic' ? `${this.prefix}.classic` : this.prefix;
  }

  name(kind: 'offers' | 'events' | 'heartbeats' | 'dead-letters' | 'dlx'): string {
    return `${this.base}.${kind}`;
  }

  controlName(agentId: string): string {
    return `${this.base}.control.${agentId}`;
  }

  // --- Bus ------------------------------------------------------------------------------------------------

  async publishOffer(offer: SignedOffer): Promise<void> {
    await this.knowQueueType();
    await this.publish(this.name('offers'), offer);
  }

  async consumeOffers(handler: Handler<unknown>, options: { prefetch: number }): Promise<Subscription> {
    await this.knowQueueType();
    return this.subscribe(this.name('offers'), 'offers', handler, options.prefetch);
  }

  async publishEvent(message: AgentMessage): Promise<void> {
    await this.knowQueueType();
    await this.publish(this.name('events'), message);
  }

  async pendingEvents(): Promise<number | undefined> {
    const connection = this.connection;
    if (!connection || this.closed) return undefined;
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
    await this.publish(this.name('heartbeats'), heartbeat);
  }

  async consumeHeartbeats(handler: Handler<unknown>): Promise<Subscription> {
    return this.consumeSettled('heartbeats', handler, 16);
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

  async publishControl(agentId: string, control: Control): Promise<void> {
    await this.declareControl(agentId);
    await this.publish(this.controlName(agentId), control);
  }

  async consumeControl(agentId: string, handler: Handler<unknown>): Promise<Subscription> {
    await this.declareControl(agentId);
    return this.subscribe(this.controlName(agentId), 'control', handler, 16);
  }

  async consumeDeadLetters(handler: (letter: DeadLetter) => void | Promise<void>): Promise<Subscription> {
    await this.knowQueueType();
    this.deadLetterHandlers.add(handler);
    if (!this.deadLetterSubscription) {
      this.deadLetterSubscription = await this.subscribe(
        this.name('dead-letters'),
        'offers',
        async (delivery) => {
          // Handled in deliver(): this handler is never called for dead letters.
          await delivery.ack();
        },
        32,
        true,
      );
    }
    return {
      setPrefetch: async () => {},
      cancel: async () => {
        this.deadLetterHandlers.delete(handler);
        if (this.deadLetterHandlers.size === 0 && this.deadLetterSubscription) {
          const subscription = this.deadLetterSubscription;
          this.deadLetterSubscription = undefined;
          await subscription.cancel();
        }
      },
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const waiter of this.waiters.splice(0)) waiter();
    for (const publish of this.pending) publish.reject(new Error('bus is closed'));
    this.pending.clear();
    const connection = this.connection;
    this.connection = undefined;
    this.publisher = undefined;
    if (connection) await connection.close().catch(() => {});
  }

  // --- internals -------------------------------------------------------------------------------------------

  /** With `auto`, names depend on the broker: the first connection decides them. */
  private async knowQueueType(): Promise<void> {
    if (!this.resolvedQueueType) await this.ensureConnected();
  }

  /** @internal */
  reportError(error: unknown, queue: string): void {
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
      const connection = this.connection;
      if (!connection || this.generation !== generation || subscription.cancelled || subscription.channel)
        return;
      if (!this.subscriptions.has(subscription)) return;
      subscription.attach(connection, generation).catch((error: unknown) => {
        this.reportError(error, subscription.kind);
      });
    }, 100).unref();
  }

  private deadLetterSubscriptions = new WeakSet<AmqpSubscription>();

  private async subscribe(
    queue: string,
    kind: QueueKind,
    handler: Handler<unknown>,
    prefetch: number,
    deadLetters = false,
  ): Promise<AmqpSubscription> {
    if (this.closed) throw new Error('bus is closed');
    const subscription = new AmqpSubscription(this, queue, kind, handler, Math.max(0, prefetch));
    if (deadLetters) this.deadLetterSubscriptions.add(subscription);
    this.subscriptions.add(subscription);
    await this.ensureConnected();
    if (this.connection && subscription.generation !== this.generation) {
      await subscription.attach(this.connection, this.generation);
    }
    return subscription;
  }

  /** @internal Turns an AMQP message into a Delivery and runs the handler. */
  deliver(subscription: AmqpSubscription, channel: Channel, message: ConsumeMessage): void {
    const deliveryTag = message.fields.deliveryTag;
    subscription.held.set(deliveryTag, message.fields.consumerTag);
    const headers = (message.properties.headers ?? {}) as Record<string, unknown>;
    const deliveryCount = this.deliveryCountOf(headers, message.fields.redelivered);
    // Classic offers are counted by the bus (see the top of this file); events and control are not limited.
    const countsOwnDeliveries =
      this.resolvedQueueType === 'classic' &&
      subscription.kind === 'offers' &&
      !this.deadLetterSubscriptions.has(subscription);
    let settled = false;
    const revokedListeners: Array<() => void> = [];
    subscription.revokers.set(deliveryTag, () => {
      if (settled) return;
      settled = true;
      for (const listener of revokedListeners.splice(0)) {
        try {
          listener();
        } catch (error) {
          this.reportError(error, subscription.kind);
        }
      }
    });
    const settle = (action: () => void): boolean => {
      if (settled) return false;
      settled = true;
      try {
        // After a drop the broker has already taken the delivery back: nothing to do.
        if (channel === subscription.channel) action();
      } catch {
        // channel closed under us: the broker redelivers
      }
      subscription.settled(deliveryTag, channel);
      return true;
    };

    if (this.deadLetterSubscriptions.has(subscription)) {
      void this.onDeadLetter(message).finally(() => settle(() => channel.ack(message)));
      return;
    }

    let body: unknown;
    try {
      body = JSON.parse(message.content.toString('utf8')) as unknown;
    } catch {
      body = undefined;
    }
    const delivery: Delivery<unknown> = {
      body,
      deliveryCount,
      ack: async () => {
        settle(() => channel.ack(message));
      },
      requeue: async (delayMs = 0) => {
        if (settled) return;
        if (delayMs > 0) await sleep(delayMs);
        if (!countsOwnDeliveries) {
          settle(() => channel.nack(message, false, true));
          return;
        }
        if (settled) return;
        if (deliveryCount >= this.deliveryLimit) {
          await this.publishDeadLetter(subscription.kind, message.content, 'delivery-limit', deliveryCount);
        } else {
          // The copy must be in the queue (confirmed) before the original goes: an offer is never lost.
          await this.publishRaw('', subscription.queue, message.content, {
            headers: { ...headers, [DELIVERY_COUNT_HEADER]: deliveryCount + 1 },
          });
        }
        settle(() => channel.ack(message));
      },
      deadLetter: async (reason) => {
        if (settled) return;
        await this.publishDeadLetter(subscription.kind, message.content, reason, deliveryCount);
        settle(() => channel.ack(message));
      },
      onRevoked: (listener) => {
        if (!settled) revokedListeners.push(listener);
      },
    };
    if (countsOwnDeliveries && deliveryCount > this.deliveryLimit) {
      // Taken back from consumers that went away until past the limit (agents dying on it): a quorum queue
      // would not deliver it again either.
      void delivery
        .deadLetter('delivery-limit')
        .catch((error: unknown) => this.reportError(error, subscription.kind));
      return;
    }
    if (body === undefined) {
      // Not JSON: nobody can act on it; record it as a dead letter.
      void delivery
        .deadLetter('malformed')
        .catch((error: unknown) => this.reportError(error, subscription.kind));
      return;
    }
    void Promise.resolve()
      .then(() => subscription.handler(delivery))
      .catch((error: unknown) => this.reportError(error, subscription.kind));
  }

  /**
   * 1 for a first delivery. Quorum queues count returns in `x-delivery-count`. On classic queues the bus's
   * own header counts the deliveries before the copy, plus 1 if the broker flags a redelivery of it.
   */
  private deliveryCountOf(headers: Record<string, unknown>, redelivered: boolean): number {
    const returns = Number(headers['x-delivery-count']);
    if (headers['x-delivery-count'] !== undefined && Number.isFinite(returns)) return returns + 1;
    const own = Number(headers[DELIVERY_COUNT_HEADER]);
    const base = headers[DELIVERY_COUNT_HEADER] !== undefined && Number.isFinite(own) && own >= 1 ? own : 1;
    return base + (redelivered ? 1 : 0);
  }

  private async onDeadLetter(message: ConsumeMessage): Promise<void> {
    const headers = (message.properties.headers ?? {}) as Record<string, unknown>;
    const deaths = headers['x-death'] as Array<Record<string, unknown>> | undefined;
    const death = Array.isArray(deaths) ? deaths[0] : undefined;
    const ownReason = headers['x-steward-reason'];
    const reason = typeof ownReason === 'string' ? ownReason : brokerReason(death?.reason);
    const queueHeader = headers['x-steward-queue'];
    const routingKey = message.fields.routingKey;
    const queue = (
      typeof queueHeader === 'string' ? queueHeader : routingKey.split('.')[0]
    ) as DeadLetter['queue'];
    let deliveryCount = Number(headers[DELIVERY_COUNT_HEADER]);
    if (!Number.isFinite(deliveryCount)) {
      deliveryCount = reason === 'delivery-limit' ? this.deliveryLimit : Number(death?.count ?? 1);
    }
    const text = message.content.toString('utf8');
    let body: unknown;
    try {
      body = JSON.parse(text) as unknown;
    } catch {
      body = text;
    }
    const letter: DeadLetter = {
      body,
      reason,
      queue: ['offers', 'events', 'control'].includes(queue) ? queue : 'offers',
      deliveryCount,
    };
    for (const handler of this.deadLetterHandlers) {
      try {
        await handler(letter);
      } catch (error) {
        this.reportError(error, 'dead-letters');
      }
    }
  }

  private async publishDeadLetter(
    kind: QueueKind,
    content: Buffer,
    reason: string,
    deliveryCount: number,
  ): Promise<void> {
    await this.publishRaw(this.name('dlx'), kind, content, {
      headers: {
        'x-steward-reason': reason,
        'x-steward-queue': kind,
        [DELIVERY_COUNT_HEADER]: deliveryCount,
      },
    });
  }

  private async publish(queue: string, body: unknown): Promise<void> {
    if (this.closed) throw new Error('bus is closed');
    const text = JSON.stringify(body);
    const size = Buffer.byteLength(text);
    if (size > MAX_MESSAGE_BYTES) {
      throw new Error(`message of ${size} bytes exceeds the ${MAX_MESSAGE_BYTES}-byte limit`);
    }
    await this.publishRaw('', queue, Buffer.from(text));
  }

  /** Publishes with a confirm; unconfirmed at a drop → sent again on the next connection. */
  private publishRaw(
    exchange: string,
    routingKey: string,
    content: Buffer,
    extra: Options.Publish = {},
  ): Promise<void> {
    if (this.closed) return Promise.reject(new Error('bus is closed'));
    return new Promise<void>((resolve, reject) => {
      const entry: PendingPublish & { exchange: string; extra: Options.Publish } = {
        queue: routingKey,
        exchange,
        extra,
        content,
        resolve,
        reject,
        sentOn: -1,
      };
      this.pending.add(entry);
      this.send(entry);
      if (!this.connection) void this.ensureConnected().catch(() => {});
    });
  }

  private send(entry: PendingPublish & { exchange?: string; extra?: Options.Publish }): void {
    const publisher = this.publisher;
    if (!publisher) return;
    const generation = this.generation;
    entry.sentOn = generation;
    try {
      publisher.publish(
        entry.exchange ?? '',
        entry.queue,
        entry.content,
        { persistent: true, contentType: 'application/json', ...entry.extra },
        (error: unknown) => {
          if (!this.pending.has(entry) || entry.sentOn !== generation) return;
          if (error) {
            // Nacked by the broker (or channel gone): try again on the current connection.
            if (this.publisher && this.generation === generation && !this.closed) {
              setTimeout(() => {
                if (this.pending.has(entry) && entry.sentOn === generation) this.send(entry);
              }, 50);
            } else entry.sentOn = -1;
            return;
          }
          this.pending.delete(entry);
          entry.resolve();
        },
      );
    } catch {
      entry.sentOn = -1;
    }
  }

  private async declareControl(agentId: string): Promise<void> {
    if (!/^[A-Za-z0-9_.:-]{1,128}$/.test(agentId))
      throw new Error(`invalid agent id for a queue name: ${agentId}`);
    await this.knowQueueType();
    if (this.declaredControls.has(agentId)) return;
    await this.ensureConnected();
    const connection = this.connection;
    if (!connection) throw new Error('bus is closed');
    await this.declareOn(connection, [this.controlName(agentId), 'control', {}]);
    this.declaredControls.add(agentId);
  }

  private queueArguments(kind: QueueKind, extra: Record<string, unknown>): Record<string, unknown> {
    if (kind === 'heartbeats') return { 'x-queue-type': this.resolvedQueueType ?? 'quorum', ...extra };
    return {
      'x-queue-type': this.resolvedQueueType ?? 'quorum',
      'x-dead-letter-exchange': this.name('dlx'),
      'x-dead-letter-routing-key': kind,
      ...extra,
    };
  }

  private async declareOn(
    connection: ChannelModel,
    ...queues: Array<[string, QueueKind, Record<string, unknown>]>
  ): Promise<void> {
    const channel = await connection.createChannel();
    channel.on('error', () => {});
    try {
      for (const [queue, kind, extra] of queues) {
        await channel.assertQueue(queue, { durable: true, arguments: this.queueArguments(kind, extra) });
      }
    } finally {
      await channel.close().catch(() => {});
    }
  }

  private async declareTopology(connection: ChannelModel): Promise<void> {
    const channel = await connection.createChannel();
    channel.on('error', () => {});
    try {
      await channel.assertExchange(this.name('dlx'), 'direct', { durable: true });
      await channel.assertQueue(this.name('dead-letters'), {
        durable: true,
        arguments: { 'x-queue-type': this.resolvedQueueType ?? 'quorum' },
      });
      for (const key of ['offers', 'events', 'control']) {
        await channel.bindQueue(this.name('dead-letters'), this.name('dlx'), key);
      }
    } finally {
      await channel.close().catch(() => {});
    }
    await this.declareOn(
      connection,
      // The broker counts returns; it dead-letters once returns exceed the limit, i.e. after
      // `deliveryLimit` deliveries in all. Classic queues have no such count: the bus counts (deliver()).
      [
        this.name('offers'),
        'offers',
        this.resolvedQueueType === 'quorum' ? { 'x-delivery-limit': this.deliveryLimit - 1 } : {},
      ],
      [this.name('events'), 'events', {}],
      [this.name('heartbeats'), 'heartbeats', { 'x-max-length': HEARTBEATS_KEPT, 'x-overflow': 'drop-head' }],
    );
    for (const agentId of this.declaredControls) {
      await this.declareOn(connection, [this.controlName(agentId), 'control', {}]);
    }
  }

  private connectOptions(url: string): string | Options.Connect {
    const { vhost, user, password } = this.options;
    if (vhost === undefined && user === undefined && password === undefined) return url;
    const parsed = new URL(url);
    return {
      protocol: parsed.protocol.replace(':', ''),
      hostname: parsed.hostname,
      port: parsed.port ? Number(parsed.port) : parsed.protocol === 'amqps:' ? 5671 : 5672,
      username: user ?? (decodeURIComponent(parsed.username) || 'guest'),
      password: password ?? (decodeURIComponent(parsed.password) || 'guest'),
      vhost: vhost ?? (decodeURIComponent(parsed.pathname.slice(1)) || '/'),
      heartbeat: 10,
    };
  }

  private socketOptions(): Record<string, unknown> {
    const { ca, cert, key } = this.options;
    // Nagle's algorithm would hold a small frame (a publish, an ack) back until the previous one is
    // acknowledged: tens of ms added to every round trip of a request/confirm protocol.
    const tls: Record<string, unknown> = { noDelay: true };
    if (ca) tls.ca = [ca];
    if (cert) tls.cert = cert;
    if (key) tls.key = key;
    return tls;
  }

  private ensureConnected(): Promise<void> {
    if (this.closed) return Promise.reject(new Error('bus is closed'));
    if (this.connection) return Promise.resolve();
    this.connecting ??= this.connectLoop().finally(() => {
      this.connecting = undefined;
    });
    return this.connecting;
  }

  private async connectLoop(): Promise<void> {
    const first = this.options.reconnectDelayMs ?? 100;
    const cap = this.options.reconnectMaxDelayMs ?? 5000;
    let delay = first;
    for (;;) {
      if (this.closed) throw new Error('bus is closed');
      const url = this.options.urls[this.urlIndex % this.options.urls.length]!;
      try {
        await this.open(url);
        return;
      } catch (error) {
        this.options.onConnectionEvent?.({ type: 'failed', url, error: describeConnectError(url, error) });
        this.urlIndex += 1;
        // A full round over the URLs failed: back off (jittered) before the next round.
        if (this.urlIndex % this.options.urls.length === 0) {
          await new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, delay * (0.8 + Math.random() * 0.4));
            this.waiters.push(() => {
              clearTimeout(timer);
              resolve();
            });
          });
          delay = Math.min(cap, delay * 2);
        }
      }
    }
  }

  private async open(url: string): Promise<void> {
    const connection = await amqp.connect(this.connectOptions(url), this.socketOptions());
    coalesceWrites(connection);
    let ready = false;
    try {
      connection.on('error', () => {});
      if (!this.resolvedQueueType) {
        const version = connection.connection.serverProperties.version;
        this.resolvedQueueType = supportsQuorumQueues(version) ? 'quorum' : 'classic';
      }
      await this.declareTopology(connection);
      const publisher = await connection.createConfirmChannel();
      publisher.on('error', () => {});
      if (this.closed) throw new Error('bus is closed');
      this.generation += 1;
      const generation = this.generation;
      this.connection = connection;
      this.publisher = publisher;
      connection.on('close', () => this.onDrop(generation));
      publisher.on('close', () => {
        // The publisher channel alone can fail (e.g. a publish to an exchange that vanished): reconnect.
        if (this.generation === generation && this.connection) void this.connection.close().catch(() => {});
      });
      ready = true;
      this.options.onConnectionEvent?.({ type: 'connected', url });
      for (const entry of this.pending) this.send(entry);
      for (const subscription of this.subscriptions) {
        await subscription.attach(connection, generation).catch((error: unknown) => {
          this.reportError(error, subscription.kind);
        });
      }
    } finally {
      if (!ready) await connection.close().catch(() => {});
    }
  }

  private onDrop(generation: number): void {
    if (generation !== this.generation) return;
    this.connection = undefined;
    this.publisher = undefined;
    for (const subscription of this.subscriptions) {
      subscription.channel = undefined;
      subscription.consumerTag = undefined;
      subscription.revokeAll();
    }
    for (const entry of this.pending) entry.sentOn = -1;
    if (this.closed) return;
    this.options.onConnectionEvent?.({ type: 'dropped' });
    void this.ensureConnected().catch(() => {});
  }
}
