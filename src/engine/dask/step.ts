/**
 * A `python` step's Dask cluster as the runner sees it: started before the step's program, with the
 * variables the step needs, a signal that also fires when the scheduler is lost (so the step's program is
 * stopped), and `stop()` for the runner's `finally` — whatever ended the step (success, failure, cancel,
 * timeout), every Dask process is stopped before the step is reported.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { StewardError } from '../../protocol/index.js';
import type { DaskRequest, SpawnWrapper } from '../types.js';
import { helperPythonPath, startDaskCluster, type DaskCluster } from './cluster.js';
import type { DaskWorkerPlacement } from './placement.js';
import { DaskLogSink } from './process.js';

export interface StepClusterOptions {
  request: DaskRequest;
  jobId: string;
  stepId: string;
  /** The job's `.steward` directory (state and certificates go in `dask/<step>`). */
  stewardDir: string;
  tempDir: string;
  cwd: string;
  /** The step's environment (params, its `env:`, the STEWARD_* variables). */
  env: Record<string, string>;
  python: string;
  placement: DaskWorkerPlacement;
  spawnWrapper?: SpawnWrapper;
  signal: AbortSignal;
  startTimeoutMs: number;
  killGraceMs: number;
}

export interface StepCluster {
  cluster: DaskCluster;
  /** The step's Dask processes' output, for the step's stderr log. */
  sink: DaskLogSink;
  /** The step's signal, also aborted when the scheduler is lost. */
  signal: AbortSignal;
  /** The step's environment with the cluster's variables and the helper on PYTHONPATH. */
  env: Record<string, string>;
  /** The scheduler's loss, if it happened while the step ran. */
  lostError(): StewardError | undefined;
  stop(): Promise<void>;
}

export async function startStepCluster(options: StepClusterOptions): Promise<StepCluster> {
  const sink = new DaskLogSink();
  const label = `${options.jobId}-${options.stepId}`;
  const named = (error: unknown) =>
    error instanceof StewardError
      ? new StewardError(error.code, `step "${options.stepId}": ${error.message}`)
      : error;
  const cluster = await startDaskCluster({
    request: options.request,
    label,
    stateDir: path.join(options.stewardDir, 'dask', options.stepId),
    scratchDir: path.join(options.tempDir, 'dask', options.stepId),
    cwd: options.cwd,
    python: options.python,
    env: options.env,
    placement: options.placement,
    ...(options.spawnWrapper ? { spawnWrapper: options.spawnWrapper } : {}),
    sink,
    signal: options.signal,
    startTimeoutMs: options.startTimeoutMs,
    killGraceMs: options.killGraceMs,
  }).catch((error: unknown) => {
    throw named(error);
  });
  await recordCluster(cluster, path.join(options.stewardDir, 'dask', options.stepId, 'workers.json'), sink);
  const controller = new AbortController();
  const onAbort = () => controller.abort();
  options.signal.addEventListener('abort', onAbort, { once: true });
  let lost: StewardError | undefined;
  void cluster.lost.then((error) => {
    lost = named(error) as StewardError;
    controller.abort();
  });
  return {
    cluster,
    sink,
    signal: controller.signal,
    env: {
      ...options.env,
      ...cluster.stepEnvironment(),
      PYTHONPATH: helperPythonPath(options.env.PYTHONPATH),
    },
    lostError: () => lost,
    stop: async () => {
      options.signal.removeEventListener('abort', onAbort);
      await cluster.stop();
    },
  };
}

/**
 * Says where the cluster runs: a line in the step's log, and `workers.json` beside the certificates (each
 * worker's name, location, pid and start time, for the job's record and for benchmarks).
 */
async function recordCluster(cluster: DaskCluster, file: string, sink: DaskLogSink): Promise<void> {
  const workers = cluster.workers.map((worker) => ({
    name: worker.name,
    location: worker.location,
    pid: worker.pid,
    startMs: cluster.workerStartMs.get(worker.name) ?? null,
  }));
  await writeFile(
    file,
    JSON.stringify({ scheduler: { address: cluster.address, pid: cluster.scheduler.pid }, workers }, null, 2),
    { mode: 0o600 },
  );
  const starts = workers.map((worker) => `${worker.name} ${worker.startMs ?? '?'} ms`).join(', ');
  sink.write(
    `[steward] Dask scheduler ${cluster.address}; ${workers.length} workers registered (${starts})\n`,
  );
}
