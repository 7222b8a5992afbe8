/**
 * Where a step's Dask workers run when the executor runs under an agent: on the agents of the job's cluster.
 * The executor asks the server (with its job token) to place them; the server signs and publishes one worker
 * offer per worker on the cluster's bus, agents take them by their capacity and start each worker as the
 * job's user, and report to the server, which this placement polls. On a cluster with one embedded bus
 * (`steward up`) the server answers `local`, and the workers start here (`LocalWorkerPlacement`).
 *
 * A placement that does not get all its workers before `loadTimeoutMs` stops those it got and fails the
 * step with STEWARD_DASK_NO_ROOM, naming how many were placed out of how many and why agents declined.
 */
import { readFile } from 'node:fs/promises';
import {
  LocalWorkerPlacement,
  type DaskExit,
  type DaskLogSink,
  type DaskPlacementContext,
  type DaskWorkerPlacement,
  type DaskWorkerRequest,
  type PlacedDaskWorker,
} from '../engine/index.js';
import { DaskPlacement, StewardError, formatExactDuration, type DaskWorkerInfo } from '../protocol/index.js';
import type { ServerClient } from './server-client.js';

const POLL_MS = 250;
/** Lines of a worker's output kept for `tail()` (a lost worker's error names them). */
const TAIL_LINES = 20;
/** How long agents may take to start a step's workers, unless the server's load timeout is shorter. */
export const DEFAULT_WORKER_LOAD_TIMEOUT_MS = 120_000;
/** Longest wait, after asking, for the agents to report the workers stopped. */
const STOP_WAIT_MS = 15_000;

export class ClusterWorkerPlacement implements DaskWorkerPlacement {
  constructor(
    private readonly client: ServerClient,
    /** How long agents may take to start the workers (the server caps it with its load timeout). */
    private readonly loadTimeoutMs: number,
  ) {}

  async place(request: DaskWorkerRequest, context: DaskPlacementContext): Promise<PlacedDaskWorker[]> {
    const path = `/dask/${encodeURIComponent(request.step)}/workers`;
    const tls = {
      ca: await readFile(request.tls.ca, 'utf8'),
      cert: await readFile(request.tls.cert, 'utf8'),
      key: await readFile(request.tls.key, 'utf8'),
    };
    const asked = DaskPlacement.parse(
      await this.client.json('POST', path, {
        count: request.count,
        threads: request.threads,
        memoryBytes: request.memoryBytes,
        schedulerAddress: request.schedulerAddress,
        tls,
        loadTimeoutMs: this.loadTimeoutMs,
      }),
    );
    if (asked.mode === 'local') return new LocalWorkerPlacement().place(request, context);
    const watch = new RemoteWorkers(this.client, path, context.sink);
    try {
      const workers = await watch.untilStarted(request.count, asked.loadTimeoutMs, context.signal);
      return workers.map((info) => watch.placed(info));
    } catch (error) {
      await watch.stopAll();
      throw error;
    }
  }
}

/** The server's view of one step's workers, polled: starts, exits and the stop of all of them. */
class RemoteWorkers {
  private latest = new Map<number, DaskWorkerInfo>();
  private polling: Promise<void> | undefined;
  private stopping: Promise<void> | undefined;
  private readonly exits = new Map<number, (exit: DaskExit) => void>();
  /** The last lines of each worker's output, for `tail()`. */
  private readonly tails = new Map<number, string[]>();

  constructor(
    private readonly client: ServerClient,
    private readonly path: string,
    /** The step's log: workers on other agents write into it through the server (bounded by the sink). */
    private readonly sink: DaskLogSink,
  ) {}

  async untilStarted(count: number, timeoutMs: number, signal: AbortSignal): Promise<DaskWorkerInfo[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const workers = await this.refresh();
      const started = workers.filter((worker) => worker.state === 'started');
      const exited = workers.find((worker) => worker.state === 'exited');
      if (exited)
        throw new StewardError(
          'STEWARD_DASK_START_FAILED',
          `Dask worker ${exited.index} on agent ${exited.agent ?? '?'} exited while the workers started`,
        );
      if (started.length >= count) return started;
      if (signal.aborted)
        throw new StewardError('STEWARD_DASK_START_FAILED', 'stopped while placing the Dask workers');
      if (Date.now() > deadline) throw noRoom(workers, count, timeoutMs);
      await delay(POLL_MS);
    }
  }

  placed(info: DaskWorkerInfo): PlacedDaskWorker {
    const startedAt = info.startedAt ?? Date.now();
    return {
      name: `worker-${info.index}`,
      location: info.agent ?? '?',
      pid: info.pid ?? 0,
      startedAt,
      exited: new Promise((resolve) => {
        this.exits.set(info.index, resolve);
        this.polling ??= this.pollExits();
      }),
      tail: () => (this.tails.get(info.index) ?? []).join('\n'),
      stop: () => this.stopAll(),
    };
  }

  /** Asks the server to stop every worker of the step, and waits (bounded) until their agents report them. */
  stopAll(): Promise<void> {
    this.stopping ??= (async () => {
      await this.client.json('DELETE', this.path).catch(() => undefined);
      const until = Date.now() + STOP_WAIT_MS;
      while (Date.now() < until) {
        const workers = await this.refresh().catch(() => []);
        if (workers.every((worker) => worker.state !== 'started')) return;
        await delay(POLL_MS);
      }
    })();
    return this.stopping;
  }

  private async refresh(): Promise<DaskWorkerInfo[]> {
    const { workers, logs } = DaskPlacement.parse(await this.client.json('GET', this.path));
    for (const log of logs ?? []) this.relay(log);
    for (const worker of workers) {
      this.latest.set(worker.index, worker);
      if (worker.state === 'exited' && worker.exit) {
        this.exits.get(worker.index)?.({
          code: worker.exit.code,
          signal: worker.exit.signal as NodeJS.Signals | null,
        });
        this.exits.delete(worker.index);
      }
    }
    return workers;
  }

  /** Writes a worker's output into the step's log, as a worker started here would (`[dask worker-N@agent]`). */
  private relay(log: { index: number; agent: string; lines: string[]; dropped: number }): void {
    const prefix = `[dask worker-${log.index}@${log.agent}]`;
    if (log.dropped > 0) this.sink.write(`${prefix} (${log.dropped} lines dropped by the server)\n`);
    const tail = this.tails.get(log.index) ?? [];
    for (const line of log.lines) {
      this.sink.write(`${prefix} ${line}\n`);
      tail.push(line);
    }
    this.tails.set(log.index, tail.slice(-TAIL_LINES));
  }

  /** Resolves each started worker's `exited` as the server learns of its exit, until all are known. */
  private async pollExits(): Promise<void> {
    while (this.exits.size > 0) {
      await delay(this.stopping ? POLL_MS : 1000);
      await this.refresh().catch(() => undefined);
    }
  }
}

function noRoom(workers: DaskWorkerInfo[], count: number, timeoutMs: number): StewardError {
  const placed = workers.filter((worker) => worker.state === 'started').length;
  const reasons = new Map<string, string>();
  for (const worker of workers)
    for (const { agent, reason } of worker.declined) if (!reasons.has(agent)) reasons.set(agent, reason);
  const why = [...reasons].map(([agent, reason]) => `${agent}: ${reason}`).join('; ');
  return new StewardError(
    'STEWARD_DASK_NO_ROOM',
    `placed ${placed} of ${count} Dask workers on the cluster's agents within ${formatExactDuration(timeoutMs)}` +
      (why ? ` (agents declined: ${why})` : ' (no agent took the others)'),
  );
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
