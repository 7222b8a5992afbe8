/**
 * The embedded bus: an in-process implementation of the Bus semantics for `steward up`. It behaves like the
 * RabbitMQ topology on purpose (copies bodies, counts deliveries, redelivers what was not acked, enforces
 * prefetch and a delivery limit, dead-letters with a reason) so that the single-machine mode exercises the
 * same code paths as the distributed one.
 */
import {
  DEFAULT_DELIVERY_LIMIT,
  MAX_MESSAGE_BYTES,
  type AgentMessage,
  type Control,
  type Heartbeat,
  type SignedOffer,
} from '../protocol/index.js';
import type { Bus, DeadLetter, Delivery, Handler, Subscription } from './types.js';

export interface EmbeddedBusOptions {
  /** Deliveries after which an offer is dead-lettered. Default `DEFAULT_DELIVERY_LIMIT` (20). */
  deliveryLimit?: number;
  /** Called when a handler throws; the bus itself keeps going. */
  onHandlerError?: (error: unknown, queue: string) => void;
}

interface Message {
  text: string;
  deliveryCount: number;
}

type QueueName = DeadLetter['queue'] | 'heartbeats' | 'dask-workers';

class Consumer {
  unacked = 0;
  active = true;
  /** Releases for deliveries not yet settled; run when the consumer goes away. */
  readonly outstanding = new Set<() => void>();
  constructor(
    readonly handler: Handler<unknown>,
    public prefetch: number,
  ) {}
  get free(): boolean {
    return this.active && (this.prefetch === 0 ? false : this.unacked < this.prefetch);
  }
}

class Queue {
  readonly ready: Message[] = [];
  readonly consumers: Consumer[] = [];
  private next = 0;
  private scheduled = false;

  constructor(
    readonly name: QueueName,
    private readonly bus: EmbeddedBus,
  ) {}

  push(message: Message): void {
    this.ready.push(message);
    this.schedule();
  }

  schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.dispatch();
    });
  }

  /** Round-robin over consumers with free prefetch, as RabbitMQ does. */
  private dispatch(): void {
    while (this.ready.length > 0) {
      const consumer = this.pickConsumer();
      if (!consumer) return;
      const message = this.ready.shift()!;
      message.deliveryCount += 1;
      this.deliver(consumer, message);
    }
  }

  private pickConsumer(): Consumer | undefined {
    const n = this.consumers.length;
    for (let i = 0; i < n; i++) {
      const consumer = this.consumers[(this.next + i) % n]!;
      if (consumer.free) {
        this.next = (this.next + i + 1) % n;
        return consumer;
      }
    }
    return undefined;
  }

  private deliver(consumer: Consumer, message: Message): void {
    consumer.unacked += 1;
    let settled = false;
    const revokedListeners: Array<() => void> = [];
    const settle = (): boolean => {
      if (settled) return false;
      settled = true;
      consumer.unacked -= 1;
      consumer.outstanding.delete(release);
      this.schedule();
      return true;
    };
    // A consumer that went away leaves its unacked deliveries to be redelivered.
    const release = (): void => {
      if (!settle()) return;
      for (const listener of revokedListeners.splice(0)) {
        try {
          listener();
        } catch (error) {
          this.bus.reportError(error, this.name);
        }
      }
      this.bus.requeue(this, message, 0);
    };
    consumer.outstanding.add(release);
    const delivery: Delivery<unknown> = {
      body: JSON.parse(message.text) as unknown,
      deliveryCount: message.deliveryCount,
      ack: async () => {
        settle();
      },
      requeue: async (delayMs = 0) => {
        if (!settle()) return;
        this.bus.requeue(this, message, delayMs);
      },
      deadLetter: async (reason) => {
        if (!settle()) return;
        this.bus.deadLetter(this.name, message, reason);
      },
      onRevoked: (listener) => {
        if (!settled) revokedListeners.push(listener);
      },
    };
    void this.bus.invoke(this.name, consumer.handler, delivery);
  }
}

export class EmbeddedBus implements Bus {
  readonly kind = 'embedded' as const;
  readonly deliveryLimit: number;
  private readonly onHandlerError: (error: unknown, queue: string) => void;
  private readonly offers = new Queue('offers', this);
  private readonly events = new Queue('events', this);
  private readonly heartbeats = new Queue('heartbeats', this);
  private readonly daskWorkers = new Queue('dask-workers', this);
  private readonly controls = new Map<string, Queue>();
  private readonly deadLetterHandlers = new Set<(letter: DeadLetter) => void | Promise<void>>();
  private readonly pendingDeadLetters: DeadLetter[] = [];
  private readonly timers = new Set<NodeJS.Timeout>();
  private closed = false;

  constructor(options: EmbeddedBusOptions = {}) {
    this.deliveryLimit = options.deliveryLimit ?? DEFAULT_DELIVERY_LIMIT;
    this.onHandlerError = options.onHandlerError ?? (() => {});
  }

  async publishOffer(offer: SignedOffer): Promise<void> {
    this.publish(this.offers, offer);
  }

  async consumeOffers(handler: Handler<unknown>, options: { prefetch: number }): Promise<Subscription> {
    return this.subscribe(this.offers, handler, options.prefetch);
  }

  async publishDaskWorkerOffer(offer: SignedOffer): Promise<void> {
    this.publish(this.daskWorkers, offer);
  }

  async consumeDaskWorkerOffers(
    handler: Handler<unknown>,
    options: { prefetch: number },
  ): Promise<Subscription> {
    return this.subscribe(this.daskWorkers, handler, options.prefetch);
  }

  async publishEvent(message: AgentMessage): Promise<void> {
    this.publish(this.events, message);
  }

  pendingEvents(): Promise<number | undefined> {
    return Promise.resolve(this.events.ready.length);
  }

  async consumeEvents(handler: Handler<unknown>): Promise<Subscription> {
    return this.consumeSettled(this.events, handler, 64);
  }

  async publishHeartbeat(heartbeat: Heartbeat): Promise<void> {
    this.publish(this.heartbeats, heartbeat);
  }

  async consumeHeartbeats(handler: Handler<unknown>): Promise<Subscription> {
    return this.consumeSettled(this.heartbeats, handler, 16);
  }

  /** The server's handler settles by its promise: resolved → ack, rejected → requeue after a pause. */
  private async consumeSettled(
    queue: Queue,
    handler: Handler<unknown>,
    prefetch: number,
  ): Promise<Subscription> {
    const wrapped: Handler<unknown> = async (delivery) => {
      try {
        await handler(delivery);
        await delivery.ack();
      } catch (error) {
        this.onHandlerError(error, queue.name);
        await delivery.requeue(100);
      }
    };
    return this.subscribe(queue, wrapped, prefetch);
  }

  async publishControl(agentId: string, control: Control): Promise<void> {
    this.publish(this.controlQueue(agentId), control);
  }

  async consumeControl(agentId: string, handler: Handler<unknown>): Promise<Subscription> {
    return this.subscribe(this.controlQueue(agentId), handler, 16);
  }

  async consumeDeadLetters(handler: (letter: DeadLetter) => void | Promise<void>): Promise<Subscription> {
    this.deadLetterHandlers.add(handler);
    for (const letter of this.pendingDeadLetters.splice(0)) this.emitDeadLetter(letter);
    return {
      setPrefetch: async () => {},
      cancel: async () => {
        this.deadLetterHandlers.delete(handler);
      },
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    for (const queue of [this.offers, this.events, this.daskWorkers, ...this.controls.values()]) {
      for (const consumer of queue.consumers) consumer.active = false;
    }
  }

  // --- internals used by Queue ---------------------------------------------------------------------------

  /** @internal */
  requeue(queue: Queue, message: Message, delayMs: number): void {
    if (queue.name === 'offers' && message.deliveryCount >= this.deliveryLimit) {
      this.deadLetter(queue.name, message, 'delivery-limit');
      return;
    }
    if (delayMs <= 0 || this.closed) {
      queue.push(message);
      return;
    }
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      queue.push(message);
    }, delayMs);
    this.timers.add(timer);
  }

  /** @internal */
  deadLetter(queue: QueueName, message: Message, reason: string): void {
    // As on RabbitMQ, heartbeats are never dead-lettered: one the server cannot use is dropped.
    if (queue === 'heartbeats' || queue === 'dask-workers') return;
    const letter: DeadLetter = {
      body: JSON.parse(message.text) as unknown,
      reason,
      queue,
      deliveryCount: message.deliveryCount,
    };
    if (this.deadLetterHandlers.size === 0) this.pendingDeadLetters.push(letter);
    else this.emitDeadLetter(letter);
  }

  /** @internal */
  reportError(error: unknown, queue: string): void {
    try {
      this.onHandlerError(error, queue);
    } catch {
      // a reporter that throws must not stop the bus
    }
  }

  /** @internal A handler that throws must not stop the bus (the delivery stays unacked until released). */
  async invoke(queue: string, handler: Handler<unknown>, delivery: Delivery<unknown>): Promise<void> {
    try {
      await handler(delivery);
    } catch (error) {
      this.onHandlerError(error, queue);
    }
  }

  private emitDeadLetter(letter: DeadLetter): void {
    for (const handler of this.deadLetterHandlers) {
      void Promise.resolve()
        .then(() => handler(letter))
        .catch((error: unknown) => this.onHandlerError(error, 'dead-letters'));
    }
  }

  private publish(queue: Queue, body: unknown): void {
    if (this.closed) throw new Error('bus is closed');
    const text = JSON.stringify(body);
    if (Buffer.byteLength(text) > MAX_MESSAGE_BYTES) {
      throw new Error(
        `message of ${Buffer.byteLength(text)} bytes exceeds the ${MAX_MESSAGE_BYTES}-byte limit`,
      );
    }
    queue.push({ text, deliveryCount: 0 });
  }

  private controlQueue(agentId: string): Queue {
    let queue = this.controls.get(agentId);
    if (!queue) this.controls.set(agentId, (queue = new Queue('control', this)));
    return queue;
  }

  private subscribe(queue: Queue, handler: Handler<unknown>, prefetch: number): Subscription {
    const consumer = new Consumer(handler, Math.max(0, prefetch));
    queue.consumers.push(consumer);
    queue.schedule();
    return {
      setPrefetch: async (value) => {
        consumer.prefetch = Math.max(0, value);
        queue.schedule();
      },
      cancel: async () => {
        consumer.active = false;
        const index = queue.consumers.indexOf(consumer);
        if (index >= 0) queue.consumers.splice(index, 1);
        for (const release of [...consumer.outstanding]) release();
      },
    };
  }
}
