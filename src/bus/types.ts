/**
 * The bus: how the server and agents talk. Two implementations share these semantics exactly:
 * the embedded in-process bus (single machine) and RabbitMQ (distributed).
 *
 * Semantics (the RabbitMQ ones; the embedded bus reproduces them):
 * - At-least-once: a delivery that is neither acked nor dead-lettered is redelivered, to any consumer,
 *   when its consumer requeues it, fails, or goes away (the delivery's `onRevoked` listeners then run).
 *   `deliveryCount` counts deliveries (1 = first).
 * - Offers past `deliveryLimit` deliveries are dead-lettered with reason `delivery-limit`.
 * - A consumer holds at most `prefetch` unacked deliveries at once; an agent sets it to its free capacity.
 * - Publishes resolve once the bus has taken responsibility for the message (publisher confirms).
 */
import type { AgentMessage, Control, Heartbeat, SignedOffer } from '../protocol/index.js';

export interface Delivery<T> {
  /** The message as received. Offers are raw (unverified) so the agent verifies signatures itself. */
  readonly body: T;
  /** 1 on first delivery; increases on every redelivery. */
  readonly deliveryCount: number;
  /** Done with the message: it will not be delivered again. */
  ack(): Promise<void>;
  /** Hand it back for another consumer, after `delayMs` (a short jittered pause spreads offers round). */
  requeue(delayMs?: number): Promise<void>;
  /** Remove it for good and record why; the server learns of dead-lettered offers. */
  deadLetter(reason: string): Promise<void>;
  /**
   * Called once if the bus takes the delivery back before it was settled: the broker connection dropped
   * (or the consumer went away), the broker requeued it and will deliver it again — possibly to this same
   * consumer. From then on ack/requeue/deadLetter of this delivery do nothing. Not called after a settle.
   */
  onRevoked(listener: () => void): void;
}

export interface Subscription {
  /** Change how many unacked deliveries this consumer may hold (0 pauses delivery). */
  setPrefetch(prefetch: number): Promise<void>;
  /** Stop consuming; unacked deliveries go back to the queue. */
  cancel(): Promise<void>;
}

export interface DeadLetter {
  /** The original body (may be anything a publisher sent). */
  body: unknown;
  reason: string;
  queue: 'offers' | 'events' | 'control';
  deliveryCount: number;
}

export type Handler<T> = (delivery: Delivery<T>) => void | Promise<void>;

export interface Bus {
  readonly kind: 'embedded' | 'amqp';
  /**
   * Deliveries of one offer, in all, after which the bus dead-letters it with reason `delivery-limit`
   * instead of delivering it again. Counts every delivery: rejects, and agents or executors lost before the
   * ack. The server names this figure when it reports a poison job.
   */
  readonly deliveryLimit: number;
  /** Server → any agent. */
  publishOffer(offer: SignedOffer): Promise<void>;
  /** Agents consume offers; `prefetch` = free capacity. */
  consumeOffers(handler: Handler<unknown>, options: { prefetch: number }): Promise<Subscription>;
  /**
   * Server → any agent: a signed offer of one Dask worker (protocol/dask.ts), in a queue of its own so that
   * job offers' prefetch and delivery limit are not shared with them. Never dead-lettered for the server:
   * one that no agent takes expires (its deadline), and the step that asked fails on its own timeout.
   */
  publishDaskWorkerOffer(offer: SignedOffer): Promise<void>;
  consumeDaskWorkerOffers(handler: Handler<unknown>, options: { prefetch: number }): Promise<Subscription>;
  /** Agent → server: job events, one or a batch per message. */
  publishEvent(message: AgentMessage): Promise<void>;
  /**
   * Agent → server: a heartbeat, in a queue of its own, so that no backlog of job events delays the proof
   * that the agent lives (the lease sweep reads it). Bounded: only the latest few thousand are kept.
   */
  publishHeartbeat(heartbeat: Heartbeat): Promise<void>;
  /** Server consumes heartbeats, settled like `consumeEvents`. Bodies are raw. */
  consumeHeartbeats(handler: Handler<unknown>): Promise<Subscription>;
  /**
   * Server consumes agent messages. The handler's promise decides: resolved → ack, rejected → requeue.
   * Bodies are raw: the server validates them (and dead-letters what does not parse).
   */
  consumeEvents(handler: Handler<unknown>): Promise<Subscription>;
  /** Server → one agent's own control queue (cancel, drain). */
  publishControl(agentId: string, control: Control): Promise<void>;
  consumeControl(agentId: string, handler: Handler<unknown>): Promise<Subscription>;
  /**
   * Agent messages waiting in the events queue for a server to take them (ready, not yet delivered), or
   * undefined when the bus cannot tell right now. While a backlog waits, the final events of jobs whose agent
   * then died may be in it: the lease sweep gives agents longer.
   */
  pendingEvents(): Promise<number | undefined>;
  /** Server learns what was dead-lettered (offers past the delivery limit, malformed messages). */
  consumeDeadLetters(handler: (letter: DeadLetter) => void | Promise<void>): Promise<Subscription>;
  close(): Promise<void>;
}
