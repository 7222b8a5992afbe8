/**
 * Dask workers placed on this agent by worker offers (protocol/dask.ts): the agent side of a step's Dask
 * cluster spread over the agents of the job's cluster.
 *
 * An agent takes a worker offer only if it fits here now, by the rules a job's executor meets: a free slot
 * (jobs and workers share the agent's slots), core tokens and memory for one more executor-sized process,
 * and a worker `memory` within the user's executor memory limit (the worker's cgroup). Otherwise it reports
 * why to the server (the step's error names it) and hands the offer back after a jittered pause, for
 * another agent or for later; an expired offer is dropped.
 *
 * A worker taken here runs in a worker host (dask-worker-process.ts) as the job's user, in its own cgroup.
 * Its TLS files come from the server with the offer's worker token, and go to the host over its pipe. The
 * offer is acked once the worker runs (a crash before that redelivers it). Then the agent reports the
 * worker every second (its lease): pid, uid, peak RSS and CPU, then its exit. The server's answer `stop`
 * (the step or the job ended), a server unreachable for `LEASE_LOST_MS`, or the agent's own stop ends it.
 */
import { networkInterfaces } from 'node:os';
import type { Logger } from 'pino';
import type { Bus, Delivery, Subscription } from '../bus/index.js';
import type { CompiledAgentConfig } from '../config/index.js';
import {
  DaskWorkerTls,
  DaskWorkerVerdict,
  MAX_REPORT_LOG_LINES,
  coerceError,
  verifyDaskWorkerOffer,
  type DaskWorkerOffer,
  type DaskWorkerReport,
  type OfferVerifier,
} from '../protocol/index.js';
import type { CgroupSupport } from './cgroups.js';
import { formatBytes } from './cgroups.js';
import type { AgentHost } from './collaborators.js';
import { DaskWorkerOutput } from './dask-worker-output.js';
import { DaskWorkerProcess } from './dask-worker-process.js';
import { jitteredPause } from './parking.js';

/** How often a running worker is reported (its lease is renewed). */
const LEASE_MS = 1000;
/** A worker whose lease could not be renewed for this long is stopped (the server is gone or lost it). */
const LEASE_LOST_MS = 30_000;
/** Worker offers held at once (each is settled within a worker's start). */
const PREFETCH = 2;
const STOP_GRACE_MS = 3000;
/** Pause before handing back a worker offer that does not fit here (a worker waits for room, not a job). */
const DECLINE_PAUSE_MS = [500, 1500] as const;
/** Declines remembered, so each (offer, reason) is reported once. */
const MAX_DECLINES_REMEMBERED = 1000;
/** The Python with `distributed` (Debian's python3-distributed). */
const DASK_PYTHON = '/usr/bin/python3';

export interface DaskWorkerHostDeps {
  config: CompiledAgentConfig;
  bus: Bus;
  verifier: OfferVerifier;
  host: AgentHost;
  log: Logger;
  cgroups: () => CgroupSupport;
  /** The agent's slots not taken by jobs, and its user executors; whether it takes new work at all. */
  load: () => { freeSlots: number; executors: number; open: boolean };
}

interface RunningWorker {
  offer: DaskWorkerOffer;
  process: DaskWorkerProcess;
}

export class DaskWorkerHost {
  private readonly running = new Map<string, RunningWorker>();
  /** The last reason reported per declined offer. */
  private readonly declined = new Map<string, string>();
  /** Offers being started (they hold a slot too). */
  private starting = 0;
  private subscription: Subscription | undefined;
  private closed = false;

  constructor(private readonly deps: DaskWorkerHostDeps) {}

  /** Slots taken by Dask workers here (the agent counts them against its free slots). */
  get slotsTaken(): number {
    return this.running.size + this.starting;
  }

  async start(): Promise<void> {
    this.subscription = await this.deps.bus.consumeDaskWorkerOffers((delivery) => this.onOffer(delivery), {
      prefetch: PREFETCH,
    });
  }

  /** Stops taking worker offers and stops every worker started here. */
  async stop(): Promise<void> {
    this.closed = true;
    await this.subscription?.cancel();
    await Promise.all([...this.running.values()].map((worker) => worker.process.stop(STOP_GRACE_MS)));
  }

  private async onOffer(delivery: Delivery<unknown>): Promise<void> {
    let offer: DaskWorkerOffer;
    try {
      offer = verifyDaskWorkerOffer(this.deps.verifier, delivery.body, Date.now());
    } catch (error) {
      const reason = coerceError(error, 'STEWARD_MESSAGE_INVALID');
      // Expired: its step gave up on it. Anything else is not a worker offer of our server.
      if (reason.code !== 'STEWARD_OFFER_EXPIRED')
        this.deps.log.warn({ event: 'dask.offer-rejected', code: reason.code }, reason.message);
      await delivery.ack();
      return;
    }
    const refusal = this.refusal(offer);
    if (refusal !== undefined) return this.decline(offer, delivery, refusal);
    this.starting += 1;
    try {
      await this.startWorker(offer, delivery);
    } finally {
      this.starting -= 1;
    }
  }

  /** Tells the server why (once per reason), and hands the offer back for another agent or for later. */
  private async decline(offer: DaskWorkerOffer, delivery: Delivery<unknown>, reason: string): Promise<void> {
    const key = `${offer.jobId}:${offer.attempt}:${offer.step}:${offer.index}`;
    if (this.declined.get(key) !== reason) {
      if (this.declined.size >= MAX_DECLINES_REMEMBERED) this.declined.clear();
      this.declined.set(key, reason);
      void this.report(offer, { kind: 'declined', agent: this.deps.config.id, reason });
    }
    await delivery.requeue(jitteredPause(DECLINE_PAUSE_MS));
  }

  /** Why the offer does not fit here now, or undefined when it does. */
  private refusal(offer: DaskWorkerOffer): string | undefined {
    const { config } = this.deps;
    const load = this.deps.load();
    if (!load.open || this.closed) return 'the agent takes no new work (drained or stopping)';
    if (offer.memoryBytes > config.limits.memoryBytes)
      return `worker memory ${formatBytes(offer.memoryBytes)} exceeds the per-user memory limit here (${formatBytes(config.limits.memoryBytes)})`;
    if (load.freeSlots - this.slotsTaken <= 0)
      return `no free slot (${config.slots} slots, ${this.slotsTaken} taken by Dask workers)`;
    const processes = load.executors + this.slotsTaken + 1;
    const tokens = processes * config.capacity.tokensPerExecutor;
    const memory = processes * config.limits.memoryBytes;
    if (tokens > config.capacity.tokens || memory > config.capacity.memoryBytes)
      return `no capacity for another worker (${tokens} of ${config.capacity.tokens} core tokens, ${formatBytes(memory)} of ${formatBytes(config.capacity.memoryBytes)})`;
    return undefined;
  }

  /** Starts the worker as the job's user, then acks; a start that fails is reported and handed back. */
  private async startWorker(offer: DaskWorkerOffer, delivery: Delivery<unknown>): Promise<void> {
    const { host, config, log } = this.deps;
    const key = `${offer.jobId}:${offer.attempt}:${offer.step}:${offer.index}`;
    try {
      const tls = await this.fetchTls(offer);
      if (!tls) {
        await delivery.ack();
        return;
      }
      const account = await host.resolveAccount(offer.user);
      await host.ensureHome(account);
      const dirs = await host.prepareUserDirs(account);
      const name = `${offer.step}-worker-${offer.index}`;
      const output = new DaskWorkerOutput();
      const process = await DaskWorkerProcess.start({
        name: `dask-${offer.jobId}-${offer.attempt}-${name}`.replace(/[^A-Za-z0-9_.-]/g, '_'),
        cgroups: this.deps.cgroups(),
        limits: config.limits,
        account,
        dirs,
        worker: {
          jobDir: `${offer.jobId}-${offer.attempt}`,
          name,
          label: `${offer.jobId}-${offer.attempt}-${offer.step}-${config.id}`,
          schedulerAddress: offer.schedulerAddress,
          threads: offer.threads,
          memoryBytes: offer.memoryBytes,
          python: DASK_PYTHON,
          keepDirs: config.keepJobDirs,
        },
        tls,
        onOutput: (pid, stream, line) => {
          host.userLog(account.name, pid, stream, line);
          output.add(stream, line);
        },
      });
      this.running.set(key, { offer, process });
      await delivery.ack();
      log.info(
        {
          event: 'dask.worker-started',
          jobId: offer.jobId,
          step: offer.step,
          index: offer.index,
          pid: process.workerPid,
          user: account.name,
        },
        'Dask worker started',
      );
      await this.report(offer, {
        kind: 'started',
        agent: config.id,
        pid: process.workerPid,
        uid: process.uid,
      });
      void this.lease(key, offer, process, output);
    } catch (error) {
      const reason = coerceError(error).message;
      log.warn(
        { event: 'dask.worker-start-failed', jobId: offer.jobId, reason },
        'Dask worker did not start',
      );
      await this.decline(offer, delivery, `could not start: ${reason}`);
    }
  }

  /** Renews the worker's lease every second until it exits or must stop; then reports its exit. */
  private async lease(
    key: string,
    offer: DaskWorkerOffer,
    process: DaskWorkerProcess,
    output: DaskWorkerOutput,
  ): Promise<void> {
    let exited = false;
    void process.exited.then(() => (exited = true));
    let renewedAt = Date.now();
    while (!exited && !this.closed) {
      await Promise.race([process.exited, delay(LEASE_MS)]);
      if (exited) break;
      const verdict = await this.reportWithLog(offer, output, {
        kind: 'alive',
        ...(await process.resources()),
      });
      if (verdict) renewedAt = Date.now();
      if (verdict?.action === 'stop' || Date.now() - renewedAt > LEASE_LOST_MS) {
        await process.stop(STOP_GRACE_MS);
        break;
      }
    }
    const exit = await process.exited;
    await process.stop(0);
    this.running.delete(key);
    this.deps.log.info(
      { event: 'dask.worker-exited', jobId: offer.jobId, step: offer.step, index: offer.index, ...exit },
      'Dask worker exited',
    );
    const resources = await process.resources();
    // The last lines first (a report carries a bounded number), then the exit with what is left.
    for (let round = 0; output.pending > MAX_REPORT_LOG_LINES && round < 10; round += 1)
      if (!(await this.reportWithLog(offer, output, { kind: 'alive', ...resources }))) break;
    await this.reportWithLog(offer, output, { kind: 'exited', ...exit, ...resources });
  }

  /** A report carrying the worker's output since the last one (kept for the next when it fails). */
  private async reportWithLog(
    offer: DaskWorkerOffer,
    output: DaskWorkerOutput,
    report: Extract<DaskWorkerReport, { kind: 'alive' | 'exited' }>,
  ): Promise<DaskWorkerVerdict | undefined> {
    const log = output.take();
    const verdict = await this.report(offer, log.length > 0 ? { ...report, log } : report);
    if (!verdict) output.putBack(log);
    return verdict;
  }

  /** The worker's TLS files; undefined when the server no longer wants the worker (drop the offer). */
  private async fetchTls(offer: DaskWorkerOffer): Promise<DaskWorkerTls | undefined> {
    const response = await fetch(new URL('/api/dask/worker/tls', offer.serverUrl), {
      headers: { authorization: `Bearer ${offer.workerToken}` },
      signal: AbortSignal.timeout(10_000),
    });
    if (response.status === 409 || response.status === 401) return undefined;
    if (!response.ok) throw new Error(`the server answered ${response.status} for the worker's TLS files`);
    return DaskWorkerTls.parse(await response.json());
  }

  /** Sends a report; the server's verdict, or undefined when it could not be reached. Never throws. */
  private async report(
    offer: DaskWorkerOffer,
    report: DaskWorkerReport,
  ): Promise<DaskWorkerVerdict | undefined> {
    try {
      const response = await fetch(new URL('/api/dask/worker/report', offer.serverUrl), {
        method: 'POST',
        headers: { authorization: `Bearer ${offer.workerToken}`, 'content-type': 'application/json' },
        body: JSON.stringify(report),
        signal: AbortSignal.timeout(10_000),
      });
      if (!response.ok) return undefined;
      return DaskWorkerVerdict.parse(await response.json());
    } catch {
      return undefined;
    }
  }
}

/**
 * Where Dask schedulers of jobs run on this agent listen: `agent.dask.schedulerHost`, else 127.0.0.1 with an
 * embedded bus (one machine), else this machine's first non-loopback IPv4 address, which the cluster's other
 * agents reach.
 */
export function daskSchedulerHost(configured: string | undefined, bus: Bus): string {
  if (configured !== undefined) return configured;
  if (bus.kind === 'embedded') return '127.0.0.1';
  for (const addresses of Object.values(networkInterfaces()))
    for (const address of addresses ?? [])
      if (address.family === 'IPv4' && !address.internal) return address.address;
  return '127.0.0.1';
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
