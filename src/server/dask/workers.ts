/**
 * The server's side of Dask workers placed across a cluster's agents: for a step's placement it signs one
 * worker offer per worker (its own worker-scoped token in each) and publishes them on the job's cluster bus;
 * then it is the rendezvous for the agents that took them (TLS files out, reports in) and for the executor
 * that asked (state of each worker, stop).
 *
 * Stopping is a lease: the agent reports each worker every second and the answer says `keep` or `stop`.
 * The answer is `stop` once the executor stopped the step's workers, once the job has ended or moved to
 * another attempt, or for a worker this server does not know (a restarted server), so an agent never keeps
 * a worker nobody asked for. An agent that cannot reach the server stops its workers by itself.
 *
 * Kept in memory (bounded): the TLS files only until the worker started or was withdrawn; the worker
 * records until they are evicted as the oldest of `MAX_PLACEMENTS`. With several servers (HA), the agent
 * calls the server that placed the worker (the offer's `serverUrl`), so the records are where they are used;
 * job detail on another server shows no workers.
 */
import type { Logger } from 'pino';
import {
  PROTOCOL_VERSION,
  StewardError,
  isTerminal,
  signDaskWorkerOffer,
  type DaskPlaceRequest,
  type DaskPlacement,
  type DaskWorkerInfo,
  type DaskWorkerReport,
  type DaskWorkerTls,
  type DaskWorkerVerdict,
  type OfferSigner,
} from '../../protocol/index.js';
import type { JobRecord, Store } from '../../store/index.js';
import type { ClusterBuses } from '../clusters/registry.js';
import { newSecret, sha256Hex } from '../secrets.js';

/** Placements kept (the oldest are forgotten first). */
const MAX_PLACEMENTS = 2000;
/** Agents' refusals kept per worker. */
const MAX_DECLINES = 8;
/** Output lines of one worker kept until the executor takes them (the oldest are dropped first). */
const MAX_PENDING_LOG_LINES = 2000;

interface WorkerEntry {
  info: DaskWorkerInfo;
  placement: Placement;
  tls: DaskWorkerTls | undefined;
  /** Output relayed by its agent that the executor has not taken yet, and how many lines were dropped. */
  log: string[];
  dropped: number;
}

/** Output of one worker for the step's log, as `DaskPlacement.logs` carries it. */
export interface DaskWorkerLog {
  index: number;
  agent: string;
  lines: string[];
  dropped: number;
}

interface Placement {
  key: string;
  jobId: string;
  attempt: number;
  stopped: boolean;
  workers: WorkerEntry[];
}

export interface DaskWorkersDeps {
  store: Store;
  clusters: ClusterBuses;
  signer: OfferSigner;
  logger: Logger;
  serverUrl: () => string;
  /** The server's load timeout: the longest a worker offer waits for an agent. */
  loadTimeoutMs: number;
  clock?: () => number;
}

export class DaskWorkers {
  private readonly placements = new Map<string, Placement>();
  private readonly byToken = new Map<string, WorkerEntry>();
  private readonly clock: () => number;

  constructor(private readonly deps: DaskWorkersDeps) {
    this.clock = deps.clock ?? Date.now;
  }

  /**
   * Publishes one signed offer per worker on the job's cluster bus; a placement of the same step asked
   * again replaces (and stops) the earlier one. An embedded bus has one agent, the job's: `local`.
   */
  async place(job: JobRecord, step: string, request: DaskPlaceRequest): Promise<DaskPlacement> {
    const bus = this.deps.clusters.busFor(job.cluster);
    const loadTimeoutMs = Math.min(request.loadTimeoutMs, this.deps.loadTimeoutMs);
    if (bus.kind === 'embedded') return { mode: 'local', loadTimeoutMs, workers: [] };
    this.stop(job.id, step);
    const now = this.clock();
    const placement: Placement = {
      key: placementKey(job.id, step),
      jobId: job.id,
      attempt: job.attempt,
      stopped: false,
      workers: [],
    };
    this.remember(placement);
    for (let index = 1; index <= request.count; index += 1) {
      const token = newSecret('std_');
      const entry: WorkerEntry = {
        placement,
        tls: request.tls,
        info: newWorker(step, index, request),
        log: [],
        dropped: 0,
      };
      placement.workers.push(entry);
      this.byToken.set(sha256Hex(token), entry);
      const signed = signDaskWorkerOffer(this.deps.signer, {
        v: PROTOCOL_VERSION,
        kind: 'dask-worker',
        jobId: job.id,
        attempt: job.attempt,
        step,
        index,
        count: request.count,
        user: job.user,
        schedulerAddress: request.schedulerAddress,
        threads: request.threads,
        memoryBytes: request.memoryBytes,
        serverUrl: this.deps.serverUrl(),
        workerToken: token,
        deadline: now + loadTimeoutMs,
        issuedAt: now,
      });
      try {
        await bus.publishDaskWorkerOffer(signed);
      } catch (error) {
        this.stop(job.id, step);
        throw new StewardError('STEWARD_UNAVAILABLE', 'the bus did not accept the Dask worker offers', {
          cause: error,
        });
      }
    }
    this.deps.logger.info(
      { event: 'dask.workers-offered', jobId: job.id, step, count: request.count },
      'Dask worker offers published',
    );
    return { mode: 'cluster', loadTimeoutMs, workers: placement.workers.map((worker) => worker.info) };
  }

  /** The step's workers (all steps' with `step` undefined). */
  list(jobId: string, step?: string): DaskWorkerInfo[] {
    const found: DaskWorkerInfo[] = [];
    for (const placement of this.placements.values()) {
      if (placement.jobId !== jobId) continue;
      for (const worker of placement.workers)
        if (step === undefined || worker.info.step === step) found.push(worker.info);
    }
    return found;
  }

  /** Output the step's workers sent since the last call (each line is handed out once). */
  takeLogs(jobId: string, step: string): DaskWorkerLog[] {
    const placement = this.placements.get(placementKey(jobId, step));
    const logs: DaskWorkerLog[] = [];
    for (const worker of placement?.workers ?? []) {
      if (worker.log.length === 0 && worker.dropped === 0) continue;
      logs.push({
        index: worker.info.index,
        agent: worker.info.agent ?? '?',
        lines: worker.log,
        dropped: worker.dropped,
      });
      worker.log = [];
      worker.dropped = 0;
    }
    return logs;
  }

  /** Asks the step's workers to stop: their agents get `stop` at their next report. Idempotent. */
  stop(jobId: string, step: string): void {
    const placement = this.placements.get(placementKey(jobId, step));
    if (!placement || placement.stopped) return;
    placement.stopped = true;
    for (const worker of placement.workers) {
      worker.tls = undefined;
      if (worker.info.state === 'offered') worker.info.state = 'withdrawn';
    }
  }

  /** The worker's TLS files, for the agent holding its offer (while it is offered and wanted). */
  tls(authorization: string | undefined): DaskWorkerTls {
    const worker = this.authenticate(authorization);
    if (!worker.tls || worker.info.state !== 'offered')
      throw new StewardError('STEWARD_CONFLICT', 'this Dask worker is no longer wanted');
    return worker.tls;
  }

  /** Applies an agent's report; says whether the worker should keep running. */
  async report(authorization: string | undefined, report: DaskWorkerReport): Promise<DaskWorkerVerdict> {
    let worker: WorkerEntry;
    try {
      worker = this.authenticate(authorization);
    } catch {
      // Unknown here (a restarted server, an evicted record): nobody wants this worker any more.
      return { action: 'stop' };
    }
    const { info } = worker;
    const now = this.clock();
    switch (report.kind) {
      case 'declined':
        info.declined = [
          { agent: report.agent, reason: report.reason },
          ...info.declined.filter((entry) => entry.agent !== report.agent),
        ].slice(0, MAX_DECLINES);
        break;
      case 'started':
        Object.assign(info, {
          state: 'started',
          agent: report.agent,
          pid: report.pid,
          uid: report.uid,
          startedAt: now,
        });
        // The key is on the worker's machine now; nothing here needs it any more.
        worker.tls = undefined;
        break;
      case 'alive':
        Object.assign(info, { peakRssBytes: report.peakRssBytes, cpuMs: report.cpuMs });
        keepLog(worker, report.log);
        break;
      case 'exited':
        keepLog(worker, report.log);
        Object.assign(info, {
          state: 'exited',
          exitedAt: now,
          exit: { code: report.code, signal: report.signal },
          peakRssBytes: report.peakRssBytes ?? info.peakRssBytes,
          cpuMs: report.cpuMs ?? info.cpuMs,
        });
        break;
    }
    return { action: (await this.wanted(worker)) ? 'keep' : 'stop' };
  }

  private async wanted(worker: WorkerEntry): Promise<boolean> {
    if (worker.placement.stopped || worker.info.state === 'exited') return false;
    const job = await this.deps.store.getJob(worker.placement.jobId);
    return job !== undefined && job.attempt === worker.placement.attempt && !isTerminal(job.state);
  }

  private authenticate(authorization: string | undefined): WorkerEntry {
    const token = /^Bearer (\S+)$/.exec(authorization ?? '')?.[1];
    const worker = token ? this.byToken.get(sha256Hex(token)) : undefined;
    if (!worker) throw new StewardError('STEWARD_UNAUTHENTICATED', 'unknown Dask worker token');
    return worker;
  }

  private remember(placement: Placement): void {
    this.placements.delete(placement.key);
    this.placements.set(placement.key, placement);
    while (this.placements.size > MAX_PLACEMENTS) {
      const oldest = this.placements.values().next().value!;
      this.placements.delete(oldest.key);
      for (const [hash, entry] of this.byToken) if (entry.placement === oldest) this.byToken.delete(hash);
    }
  }
}

/** Appends relayed output to what the executor has not taken yet, dropping the oldest past the bound. */
function keepLog(worker: WorkerEntry, lines: readonly string[] | undefined): void {
  if (!lines || lines.length === 0) return;
  worker.log.push(...lines);
  const excess = worker.log.length - MAX_PENDING_LOG_LINES;
  if (excess > 0) {
    worker.log.splice(0, excess);
    worker.dropped += excess;
  }
}

function placementKey(jobId: string, step: string): string {
  return `${jobId}\u0000${step}`;
}

function newWorker(step: string, index: number, request: DaskPlaceRequest): DaskWorkerInfo {
  return {
    step,
    index,
    state: 'offered',
    agent: null,
    pid: null,
    uid: null,
    threads: request.threads,
    memoryBytes: request.memoryBytes,
    startedAt: null,
    exitedAt: null,
    exit: null,
    peakRssBytes: null,
    cpuMs: null,
    declined: [],
  };
}
