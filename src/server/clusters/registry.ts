/**
 * The clusters the server is attached to, each with its own bus and its own consumer of events, heartbeats
 * and dead letters. `local` is the server's own bus (embedded for `steward up`, the configured RabbitMQ for
 * `steward server`): always attached. The others are opened from the store.
 *
 * The store is the authority: `reconcile()` (at start and on every sweep) opens the buses of `attached` and
 * `detaching` clusters and closes the others, so a restart, or another server of an HA group attaching a
 * cluster, comes to the same set. A `detaching` cluster keeps its bus until it has no unfinished job, then
 * becomes `detached` (whichever server sees that first); nothing of its jobs lives on its broker afterwards.
 */
import type { Logger } from 'pino';
import { AmqpBus, amqpBusOptions, type Bus } from '../../bus/index.js';
import { clusterBusConfig } from '../../config/index.js';
import { LOCAL_CLUSTER, StewardError } from '../../protocol/index.js';
import type { ClusterRecord, Store } from '../../store/index.js';

/** What the job service needs of the clusters: the bus a job's offer or an agent's control goes to. */
export interface ClusterBuses {
  /** The bus of an attached or detaching cluster; `STEWARD_CLUSTER_DETACHED` (or `_UNKNOWN`) otherwise. */
  busFor(cluster: string): Bus;
  /** The bus whose heartbeats an agent sends (its control queue is there); `local` for an unknown agent. */
  busOfAgent(agentId: string): Promise<Bus>;
  /** Agent messages waiting in every open cluster's events queue; undefined when a bus cannot tell. */
  pendingEvents(): Promise<number | undefined>;
}

/** A consumer of one bus's events, heartbeats and dead letters (the server's `EventConsumer`). */
export interface ClusterConsumer {
  start(): Promise<void>;
  stop(): Promise<void>;
}

export interface ClusterRegistryDeps {
  store: Store;
  logger: Logger;
  /** The server's own bus: the `local` cluster. */
  localBus: Bus;
  /** Builds the consumer of a cluster's bus. */
  consumerFor(cluster: string, bus: Bus): ClusterConsumer;
  /** Connects to a stored cluster's broker. Default: an `AmqpBus` from its stored settings. */
  connect?: (cluster: ClusterRecord) => Bus;
}

interface OpenCluster {
  bus: Bus;
  consumer: ClusterConsumer;
  /** The registry opened (and closes) this bus; false for `local`, which its creator owns. */
  owned: boolean;
  started: Promise<void>;
}

export class ClusterRegistry implements ClusterBuses {
  private readonly open = new Map<string, OpenCluster>();
  private reconciling: Promise<void> | undefined;
  private closed = false;

  constructor(private readonly deps: ClusterRegistryDeps) {}

  /** Starts consuming `local` (a failure fails the server's start), then opens the stored clusters. */
  async start(): Promise<void> {
    const consumer = this.deps.consumerFor(LOCAL_CLUSTER, this.deps.localBus);
    await consumer.start();
    this.open.set(LOCAL_CLUSTER, {
      bus: this.deps.localBus,
      consumer,
      owned: false,
      started: Promise.resolve(),
    });
    await this.reconcile();
  }

  busFor(cluster: string): Bus {
    const entry = this.open.get(cluster);
    if (entry) return entry.bus;
    throw new StewardError('STEWARD_CLUSTER_DETACHED', `cluster ${cluster} is not attached`, {
      details: { cluster },
    });
  }

  isOpen(cluster: string): boolean {
    return this.open.has(cluster);
  }

  async busOfAgent(agentId: string): Promise<Bus> {
    const cluster = (await this.deps.store.agentCluster(agentId)) ?? LOCAL_CLUSTER;
    return this.busFor(this.open.has(cluster) ? cluster : LOCAL_CLUSTER);
  }

  async pendingEvents(): Promise<number | undefined> {
    const counts = await Promise.all([...this.open.values()].map((entry) => entry.bus.pendingEvents()));
    if (counts.some((count) => count === undefined)) return undefined;
    return counts.reduce<number>((sum, count) => sum + (count ?? 0), 0);
  }

  /** Brings the open buses in line with the store; one pass at a time. */
  reconcile(): Promise<void> {
    this.reconciling ??= this.reconcileOnce().finally(() => (this.reconciling = undefined));
    return this.reconciling;
  }

  private async reconcileOnce(): Promise<void> {
    if (this.closed) return;
    const clusters = await this.deps.store.clusters.list();
    // Counting unfinished jobs is needed only to finish a detach.
    const unfinished = clusters.some((cluster) => cluster.state === 'detaching')
      ? await this.deps.store.clusters.unfinishedJobs()
      : new Map<string, Partial<Record<string, number>>>();
    for (const cluster of clusters) {
      const busy = Object.values(unfinished.get(cluster.name) ?? {}).some((count) => (count ?? 0) > 0);
      if (cluster.state === 'detaching' && !busy) {
        // Its last job ended: nothing of it is on its broker any more.
        if (await this.deps.store.clusters.setState(cluster.name, 'detached', ['detaching']))
          this.deps.logger.info({ event: 'cluster.detached', cluster: cluster.name }, 'cluster detached');
        await this.closeOne(cluster.name);
      } else if (cluster.state === 'detached') {
        await this.closeOne(cluster.name);
      } else if (!this.open.has(cluster.name)) {
        this.openOne(cluster);
      }
    }
    const known = new Set(clusters.map((cluster) => cluster.name));
    for (const name of [...this.open.keys()])
      if (name !== LOCAL_CLUSTER && !known.has(name)) await this.closeOne(name);
  }

  /**
   * Opens a cluster's bus and starts its consumer without waiting for the broker: a broker that is away
   * must not hold up the server's start; the bus reconnects with backoff and logs why it cannot.
   */
  private openOne(cluster: ClusterRecord): void {
    let bus: Bus;
    try {
      bus = this.deps.connect ? this.deps.connect(cluster) : this.connectAmqp(cluster);
    } catch (error) {
      this.deps.logger.error({ err: error, cluster: cluster.name }, 'cannot open the cluster bus');
      return;
    }
    const consumer = this.deps.consumerFor(cluster.name, bus);
    const started = consumer.start().catch((error: unknown) => {
      if (this.open.get(cluster.name)?.bus === bus)
        this.deps.logger.error(
          { err: error, cluster: cluster.name },
          'consuming from the cluster bus failed',
        );
    });
    this.open.set(cluster.name, { bus, consumer, owned: true, started });
    this.deps.logger.info({ event: 'cluster.opened', cluster: cluster.name }, 'cluster bus opened');
  }

  private connectAmqp(cluster: ClusterRecord): Bus {
    const config = clusterBusConfig(cluster);
    const log = this.deps.logger.child({ component: 'bus', cluster: cluster.name });
    return new AmqpBus({
      ...amqpBusOptions(config),
      onHandlerError: (error, queue) => log.error({ err: error, queue }, 'bus handler failed'),
      onConnectionEvent: (event) => {
        if (event.type === 'connected')
          log.info({ event: 'bus.connected' }, 'connected to the cluster broker');
        else if (event.type === 'dropped')
          log.warn({ event: 'bus.dropped' }, 'cluster broker connection dropped');
        else log.warn({ event: 'bus.failed', err: event.error }, 'cluster broker connection failed');
      },
    });
  }

  private async closeOne(name: string): Promise<void> {
    const entry = this.open.get(name);
    if (!entry || !entry.owned) return;
    this.open.delete(name);
    await entry.consumer.stop().catch(() => undefined);
    await entry.bus.close().catch(() => undefined);
    // A consumer still waiting for a broker that is away ends with the bus; never wait long for it.
    await Promise.race([entry.started, new Promise((resolve) => setTimeout(resolve, 5_000).unref())]);
    this.deps.logger.info({ event: 'cluster.closed', cluster: name }, 'cluster bus closed');
  }

  /** Stops every consumer and closes the buses the registry opened (not `local`'s). */
  async close(): Promise<void> {
    this.closed = true;
    await this.reconciling?.catch(() => undefined);
    for (const name of [...this.open.keys()]) await this.closeOne(name);
    const local = this.open.get(LOCAL_CLUSTER);
    this.open.delete(LOCAL_CLUSTER);
    await local?.consumer.stop();
  }
}
