/**
 * Where a step's Dask workers run: the seam between the cluster's life (cluster.ts) and the machines.
 *
 * `LocalWorkerPlacement` starts every worker on the machine of the step (the job's own agent), as children
 * of the executor: the job's user and groups, inside the job's cgroup. A placement across a cluster's
 * agents implements the same interface from the executor's side: it asks its agent (over the executor's
 * pipe) to publish signed worker offers; each agent that takes one starts the worker as the same user,
 * inside its own cgroup limits, and reports the worker's pid and exit back through the bus. The cluster
 * code does not change: it gets `PlacedDaskWorker`s and stops them.
 */
import path from 'node:path';
import { DaskProcess, type DaskExit, type DaskLogSink } from './process.js';
import type { SpawnWrapper } from '../types.js';

/** What every worker of one step is started with. */
export interface DaskWorkerRequest {
  /** Job and step, for names (`<label>-worker-<n>`). */
  label: string;
  /** The step's id (a placement across agents names the step to the server). */
  step: string;
  count: number;
  threads: number;
  /** Dask's memory limit per worker (it spills, then pauses, above fractions of it). */
  memoryBytes: number;
  /** `tls://host:port` of the job's scheduler. */
  schedulerAddress: string;
  tls: { ca: string; cert: string; key: string };
  /** The Python that has `distributed` (Debian's python3-distributed: /usr/bin/python3). */
  python: string;
  /** Environment of the workers: the step's clean base, PYTHONPATH with Steward's helper. */
  env: Record<string, string>;
  /** Working directory; each worker's spill directory goes under `scratchDir`. */
  cwd: string;
  scratchDir: string;
}

/** Context of one placement: cancellation, the job's cgroup, the step's log. */
export interface DaskPlacementContext {
  signal: AbortSignal;
  spawnWrapper?: SpawnWrapper;
  sink: DaskLogSink;
}

/** One started worker, wherever it runs. */
export interface PlacedDaskWorker {
  name: string;
  /** `local`, or the id of the agent that runs it. */
  location: string;
  pid: number;
  startedAt: number;
  exited: Promise<DaskExit>;
  tail(): string;
  stop(graceMs: number): Promise<void>;
}

export interface DaskWorkerPlacement {
  /**
   * Starts `request.count` workers. Resolves once each is started (not yet registered: the cluster waits
   * for that); rejects with a STEWARD_DASK_* error when they cannot all be placed, after stopping those it
   * started.
   */
  place(request: DaskWorkerRequest, context: DaskPlacementContext): Promise<PlacedDaskWorker[]>;
}

export class LocalWorkerPlacement implements DaskWorkerPlacement {
  async place(request: DaskWorkerRequest, context: DaskPlacementContext): Promise<PlacedDaskWorker[]> {
    const started: PlacedDaskWorker[] = [];
    try {
      for (let index = 1; index <= request.count; index += 1) {
        if (context.signal.aborted) break;
        const name = `worker-${index}`;
        const process = await DaskProcess.start({
          name,
          argv: workerArgv(request, name),
          cwd: request.cwd,
          env: request.env,
          ...(context.spawnWrapper ? { spawnWrapper: context.spawnWrapper } : {}),
          sink: context.sink,
        });
        started.push({
          name,
          location: 'local',
          pid: process.pid,
          startedAt: process.startedAt,
          exited: process.exited,
          tail: () => process.tail(),
          stop: (graceMs) => process.stop(graceMs),
        });
      }
    } catch (error) {
      await Promise.all(started.map((worker) => worker.stop(1000)));
      throw error;
    }
    return started;
  }
}

/** `dask worker` as one process (no nanny: Steward is the one that starts and stops it). */
export function workerArgv(request: DaskWorkerRequest, name: string): string[] {
  return [
    request.python,
    '-m',
    'distributed.cli.dask_worker',
    request.schedulerAddress,
    '--name',
    `${request.label}-${name}`,
    '--nthreads',
    String(request.threads),
    '--memory-limit',
    String(request.memoryBytes),
    '--no-nanny',
    '--no-dashboard',
    '--local-directory',
    path.join(request.scratchDir, name),
    '--tls-ca-file',
    request.tls.ca,
    '--tls-cert',
    request.tls.cert,
    '--tls-key',
    request.tls.key,
    // A worker whose scheduler is gone exits by itself after this long (Steward stops it sooner).
    '--death-timeout',
    '60',
    '--preload',
    'steward_dask.worker_preload',
  ];
}
