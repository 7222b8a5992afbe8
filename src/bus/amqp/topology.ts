/**
 * The RabbitMQ topology: names, queue arguments and their declaration.
 *
 * Declared idempotently on every connect; names carry a version so that a later change of arguments is a new
 * set of names and a migration, never a clash with what a broker already holds:
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
 * under one name with different arguments. Classic queues have no `x-delivery-limit`: the bus counts
 * offers' deliveries itself (`delivery.ts`).
 */
import type { ChannelModel } from 'amqplib';
import type { DeadLetter } from '../types.js';

export type QueueTypeOption = 'auto' | 'quorum' | 'classic';
export type QueueType = 'quorum' | 'classic';

/**
 * The queues the bus's own messages go to. Heartbeats are never dead-lettered: a malformed one is dropped by
 * the server, an old one by the queue.
 */
export type QueueKind = DeadLetter['queue'] | 'heartbeats' | 'dask-workers';

/** What a subscription consumes, as named in error reports: a queue kind, or the dead letters. */
export type QueueRole = QueueKind | 'dead-letters';

/** The shared names (the per-agent control queues aside). */
export type TopologyName = 'offers' | 'events' | 'heartbeats' | 'dask-workers' | 'dead-letters' | 'dlx';

/**
 * The heartbeats queue keeps the newest this many (drop-head): with every server away for a day, agents
 * would otherwise pile up tens of thousands each, and only the latest of an agent tells anything.
 */
const HEARTBEATS_KEPT = 10_000;

/** Returns of one Dask worker offer before the broker drops it (its deadline ends it sooner). */
const DASK_WORKER_DELIVERY_LIMIT = 10_000;

/** Whether a broker announcing this version has quorum queues (RabbitMQ 3.8 and later). */
export function supportsQuorumQueues(version: string | undefined): boolean {
  const match = /^(\d+)\.(\d+)/.exec(version ?? '');
  if (!match) return false;
  const major = Number(match[1]);
  const minor = Number(match[2]);
  return major > 3 || (major === 3 && minor >= 8);
}

/** An agent id is part of a queue name: refuse anything a name cannot hold. */
export function assertQueueableAgentId(agentId: string): void {
  if (!/^[A-Za-z0-9_.:-]{1,128}$/.test(agentId))
    throw new Error(`invalid agent id for a queue name: ${agentId}`);
}

export class Topology {
  private resolved: QueueType | undefined;
  /** Agents whose control queue this bus declared; declared again on every connect. */
  private readonly controls = new Set<string>();

  constructor(
    private readonly prefix: string,
    queueType: QueueTypeOption,
    private readonly deliveryLimit: number,
  ) {
    if (queueType !== 'auto') this.resolved = queueType;
  }

  /** The queue type in use; undefined while `auto` has not met a broker yet. */
  get type(): QueueType | undefined {
    return this.resolved;
  }

  /** With `auto`, the first broker met decides the queue type, for the bus's life. */
  resolveFor(brokerVersion: string | undefined): void {
    this.resolved ??= supportsQuorumQueues(brokerVersion) ? 'quorum' : 'classic';
  }

  /** Names of classic queues carry `.classic` so they never clash with quorum queues of the same role. */
  private get base(): string {
    if (!this.resolved) throw new Error('AmqpBus: queue type not known before the first connection');
    return this.resolved === 'classic' ? `${this.prefix}.classic` : this.prefix;
  }

  name(kind: TopologyName): string {
    return `${this.base}.${kind}`;
  }

  controlName(agentId: string): string {
    return `${this.base}.control.${agentId}`;
  }

  hasControl(agentId: string): boolean {
    return this.controls.has(agentId);
  }

  /** Declares one agent's control queue, now and on every later connect. */
  async declareControl(connection: ChannelModel, agentId: string): Promise<void> {
    await this.declareQueues(connection, [this.controlName(agentId), 'control', {}]);
    this.controls.add(agentId);
  }

  /** Everything: the dead-letter exchange and queue, the shared queues, the known control queues. */
  async declare(connection: ChannelModel): Promise<void> {
    const channel = await connection.createChannel();
    channel.on('error', () => {});
    try {
      await channel.assertExchange(this.name('dlx'), 'direct', { durable: true });
      await channel.assertQueue(this.name('dead-letters'), {
        durable: true,
        arguments: { 'x-queue-type': this.resolved ?? 'quorum' },
      });
      for (const key of ['offers', 'events', 'control']) {
        await channel.bindQueue(this.name('dead-letters'), this.name('dlx'), key);
      }
    } finally {
      await channel.close().catch(() => {});
    }
    await this.declareQueues(
      connection,
      // The broker counts returns; it dead-letters once returns exceed the limit, i.e. after
      // `deliveryLimit` deliveries in all. Classic queues have no such count: the bus counts (delivery.ts).
      [
        this.name('offers'),
        'offers',
        this.resolved === 'quorum' ? { 'x-delivery-limit': this.deliveryLimit - 1 } : {},
      ],
      [this.name('events'), 'events', {}],
      [this.name('heartbeats'), 'heartbeats', { 'x-max-length': HEARTBEATS_KEPT, 'x-overflow': 'drop-head' }],
      // Agents hand back worker offers they cannot fit, often, until the offer's deadline: a high limit,
      // and no dead-letter route (nothing binds `dask-workers` on the dlx), so a spent one is dropped.
      [
        this.name('dask-workers'),
        'dask-workers',
        this.resolved === 'quorum' ? { 'x-delivery-limit': DASK_WORKER_DELIVERY_LIMIT } : {},
      ],
    );
    for (const agentId of this.controls) {
      await this.declareQueues(connection, [this.controlName(agentId), 'control', {}]);
    }
  }

  private queueArguments(kind: QueueKind, extra: Record<string, unknown>): Record<string, unknown> {
    if (kind === 'heartbeats') return { 'x-queue-type': this.resolved ?? 'quorum', ...extra };
    return {
      'x-queue-type': this.resolved ?? 'quorum',
      'x-dead-letter-exchange': this.name('dlx'),
      'x-dead-letter-routing-key': kind,
      ...extra,
    };
  }

  private async declareQueues(
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
}
