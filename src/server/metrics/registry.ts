/**
 * The server's Prometheus metrics (prom-client), one registry per server. Label values are bounded sets:
 * job states, cluster names, agent ids (as many as agents), error kinds; never a user name or a job id.
 *
 * Two kinds of figures, which behave differently with several servers on one database:
 * - read from the store at scrape time (`steward_jobs`, `steward_job_queue_*`, `steward_agents`,
 *   `steward_agent_*`): the whole installation's, the same on every server — aggregate with `max`;
 * - counted by this server as it does the work (`*_total`, the histograms): what this server applied —
 *   aggregate with `sum`. A job's end or start is applied by exactly one server, so the sum counts it once.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { isTerminal, type JobState } from '../../protocol/index.js';
import { LIVE_JOB_STATES, type JobRecord, type Store, type StoreErrorKind } from '../../store/index.js';
import { clusterOf, clusterOfAgent, DEFAULT_CLUSTER } from './clusters.js';

export type BusErrorKind = 'connection' | 'publish' | 'handler';
export type LoginFailureReason = 'rejected' | 'throttled';

/** What the scrape-time figures are read from. */
export interface MetricsSource {
  store: Store;
  /** An agent silent longer than this is not counted (the server's `agentLease`). */
  agentLeaseMs: number;
  clock: () => number;
}

/**
 * The process's own figures (memory, CPU, event loop, GC), once per process: prom-client starts monitors
 * for them that are never stopped, so a registry per server (tests start hundreds) must not each add them.
 */
let processRegistry: Registry | undefined;
function processMetrics(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry, prefix: 'steward_' });
  }
  return processRegistry;
}

/** Seconds: from a second to a day, for queue waits and run times alike. */
const DURATION_BUCKETS = [1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21_600, 86_400];

export class ServerMetrics {
  readonly registry = new Registry();
  private source: MetricsSource | undefined;
  private rendering: Promise<string> | undefined;
  private readonly jobs = new Gauge({
    name: 'steward_jobs',
    help: 'Jobs that have not ended, by state and cluster (from the store; the same on every server)',
    labelNames: ['state', 'cluster'] as const,
    registers: [this.registry],
  });
  private readonly queueDepth = new Gauge({
    name: 'steward_job_queue_depth',
    help: 'Jobs waiting for an agent (queued or offered), by cluster',
    labelNames: ['cluster'] as const,
    registers: [this.registry],
  });
  private readonly queueOldest = new Gauge({
    name: 'steward_job_queue_oldest_seconds',
    help: 'Age of the oldest job waiting for an agent, by cluster (0 when none waits)',
    labelNames: ['cluster'] as const,
    registers: [this.registry],
  });
  private readonly ended = new Counter({
    name: 'steward_jobs_ended_total',
    help: 'Jobs this server ended, by end state and cluster',
    labelNames: ['state', 'cluster'] as const,
    registers: [this.registry],
  });
  private readonly startDelay = new Histogram({
    name: 'steward_job_start_delay_seconds',
    help: 'From submit to running, observed by the server that applied the start, by cluster',
    labelNames: ['cluster'] as const,
    buckets: DURATION_BUCKETS,
    registers: [this.registry],
  });
  private readonly runDuration = new Histogram({
    name: 'steward_job_run_duration_seconds',
    help: 'From running to the end, observed by the server that applied the end, by end state and cluster',
    labelNames: ['state', 'cluster'] as const,
    buckets: DURATION_BUCKETS,
    registers: [this.registry],
  });
  private readonly agents = new Gauge({
    name: 'steward_agents',
    help: 'Agents heartbeating within the lease, by cluster and state (active or draining)',
    labelNames: ['cluster', 'state'] as const,
    registers: [this.registry],
  });
  private readonly executors = new Gauge({
    name: 'steward_agent_executors',
    help: "Users' executors kept warm on an agent, busy (running jobs) or idle, as of its last heartbeat",
    labelNames: ['agent', 'cluster', 'state'] as const,
    registers: [this.registry],
  });
  private readonly slots = new Gauge({
    name: 'steward_agent_slots',
    help: "An agent's job slots, used or free, as of its last heartbeat",
    labelNames: ['agent', 'cluster', 'state'] as const,
    registers: [this.registry],
  });
  private readonly loginFailures = new Counter({
    name: 'steward_login_failures_total',
    help: 'Failed logins on this server: rejected (wrong name or password, disabled) or throttled',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  private readonly storeErrors = new Counter({
    name: 'steward_store_errors_total',
    help: 'Failed store queries and database connections of this server, by kind',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });
  private readonly busErrors = new Counter({
    name: 'steward_bus_errors_total',
    help: 'Bus failures seen by this server: broker connections failed or dropped, publishes refused, handlers failed',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });
  private readonly retentionRemoved = new Counter({
    name: 'steward_retention_removed_total',
    help: "Ended jobs whose files or records this server's retention sweeps removed",
    labelNames: ['what'] as const,
    registers: [this.registry],
  });

  constructor() {
    // Counters start at 0 for every known label value, so rate() and alerts see them before the first event.
    for (const reason of ['rejected', 'throttled'] as const) this.loginFailures.inc({ reason }, 0);
    for (const kind of ['query', 'connection'] as const) this.storeErrors.inc({ kind }, 0);
    for (const kind of ['connection', 'publish', 'handler'] as const) this.busErrors.inc({ kind }, 0);
    for (const what of ['files', 'records'] as const) this.retentionRemoved.inc({ what }, 0);
  }

  /** Where the scrape-time figures come from (the server sets it once its store is open). */
  readFrom(source: MetricsSource): void {
    this.source = source;
  }

  /**
   * A job change this server committed: `from` is the state the job left. Entering `running` observes the
   * wait since submit; an end observes the run (when it had started) and counts the end.
   */
  observeTransition(job: JobRecord, from: JobState): void {
    if (from === job.state) return;
    const cluster = clusterOf(job);
    if (job.state === 'running') {
      this.startDelay.observe({ cluster }, Math.max(0, job.updatedAt - job.createdAt) / 1000);
    } else if (isTerminal(job.state)) {
      this.ended.inc({ state: job.state, cluster });
      if (job.startedAt !== null && job.finishedAt !== null)
        this.runDuration.observe(
          { state: job.state, cluster },
          Math.max(0, job.finishedAt - job.startedAt) / 1000,
        );
    }
  }

  countLoginFailure(reason: LoginFailureReason): void {
    this.loginFailures.inc({ reason });
  }

  countStoreError(kind: StoreErrorKind): void {
    this.storeErrors.inc({ kind });
  }

  countBusError(kind: BusErrorKind): void {
    this.busErrors.inc({ kind });
  }

  countRetention(what: 'files' | 'records', jobs: number): void {
    this.retentionRemoved.inc({ what }, jobs);
  }

  /**
   * The exposition text, with the scrape-time figures read from the store first. Scrapes that arrive while
   * one is being rendered share it: the gauges are reset and refilled, which must not interleave.
   */
  render(): Promise<string> {
    this.rendering ??= this.refresh()
      .then(async () => `${await this.registry.metrics()}${await processMetrics().metrics()}`)
      .finally(() => {
        this.rendering = undefined;
      });
    return this.rendering;
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** Reads the store's figures into the gauges: one grouped job count and the agent registry. */
  private async refresh(): Promise<void> {
    const source = this.source;
    if (!source) return;
    const now = source.clock();
    const [counts, agents] = await Promise.all([
      source.store.stats.liveJobCounts(),
      source.store.listAgents(now - source.agentLeaseMs),
    ]);
    this.jobs.reset();
    this.queueDepth.reset();
    this.queueOldest.reset();
    const clusters = new Set([DEFAULT_CLUSTER, ...counts.map((row) => row.cluster)]);
    for (const cluster of clusters) {
      for (const state of LIVE_JOB_STATES) this.jobs.set({ state, cluster }, 0);
      this.queueDepth.set({ cluster }, 0);
      this.queueOldest.set({ cluster }, 0);
    }
    const oldestWaiting = new Map<string, number>();
    for (const row of counts) {
      this.jobs.set({ state: row.state, cluster: row.cluster }, row.count);
      if (row.state !== 'queued' && row.state !== 'offered') continue;
      this.queueDepth.inc({ cluster: row.cluster }, row.count);
      const oldest = oldestWaiting.get(row.cluster);
      if (oldest === undefined || row.oldestCreatedAt < oldest)
        oldestWaiting.set(row.cluster, row.oldestCreatedAt);
    }
    for (const [cluster, oldest] of oldestWaiting)
      this.queueOldest.set({ cluster }, Math.max(0, now - oldest) / 1000);
    this.refreshAgents(agents);
  }

  private refreshAgents(agents: Awaited<ReturnType<Store['listAgents']>>): void {
    this.agents.reset();
    this.executors.reset();
    this.slots.reset();
    for (const state of ['active', 'draining'] as const)
      this.agents.set({ cluster: DEFAULT_CLUSTER, state }, 0);
    for (const agent of agents) {
      const cluster = clusterOfAgent(agent);
      this.agents.inc({ cluster, state: agent.draining ? 'draining' : 'active' });
      const busy = agent.executors.filter((executor) => executor.jobs > 0).length;
      this.executors.set({ agent: agent.id, cluster, state: 'busy' }, busy);
      this.executors.set({ agent: agent.id, cluster, state: 'idle' }, agent.executors.length - busy);
      const free = Math.max(0, Math.min(agent.capacity.free, agent.capacity.slots));
      this.slots.set({ agent: agent.id, cluster, state: 'used' }, agent.capacity.slots - free);
      this.slots.set({ agent: agent.id, cluster, state: 'free' }, free);
    }
  }
}
