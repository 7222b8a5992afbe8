/**
 * A `python` step's Dask cluster as the runner sees it: started before the step's program, with the
 * variables the step needs, a signal that also fires when the scheduler is lost (so the step's program is
 * stopped), and `stop()` for the runner's `finally` — whatever ended the step (success, failure, cancel,
 * timeout), every Dask process is stopped before the step is reported.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { StewardError } from '../../protocol/index.js';
import type { DaskRequest, RunOptions } from '../types.js';
import { DEFAULT_DASK_PYTHON, helperPythonPath, startDaskCluster, type DaskCluster } from './cluster.js';
import { LocalWorkerPlacement } from './placement.js';
import { DaskLogSink } from './process.js';

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

/** Defaults of the RunOptions this reads. */
const DEFAULT_START_TIMEOUT_MS = 120_000;
const DEFAULT_KILL_GRACE_MS = 3000;

/**
 * Starts the cluster of step `stepId` of the job run in `run.workDir`: state and certificates in
 * `<stewardDir>/dask/<step>`, scratch in `<run.tempDir>/dask/<step>`. `env` is the step's environment
 * (params, its `env:`, the STEWARD_* variables); the Dask processes get it too.
 */
export async function startStepCluster(
  stepId: string,
  request: DaskRequest,
  stewardDir: string,
  env: Record<string, string>,
  signal: AbortSignal,
  run: RunOptions,
): Promise<StepCluster> {
  const sink = new DaskLogSink();
  const named = (error: unknown) =>
    error instanceof StewardError
      ? new StewardError(error.code, `step "${stepId}": ${error.message}`)
      : error;
  const stateDir = path.join(stewardDir, 'dask', stepId);
  const cluster = await startDaskCluster({
    request,
    label: `${path.basename(run.workDir)}-${stepId}`,
    step: stepId,
    stateDir,
    scratchDir: path.join(run.tempDir, 'dask', stepId),
    cwd: run.workDir,
    python: run.daskPython ?? DEFAULT_DASK_PYTHON,
    schedulerHost: run.daskSchedulerHost ?? '127.0.0.1',
    env,
    placement: run.daskPlacement ?? new LocalWorkerPlacement(),
    ...(run.spawnWrapper ? { spawnWrapper: run.spawnWrapper } : {}),
    sink,
    signal,
    startTimeoutMs: run.daskStartTimeoutMs ?? DEFAULT_START_TIMEOUT_MS,
    killGraceMs: run.killGraceMs ?? DEFAULT_KILL_GRACE_MS,
  }).catch((error: unknown) => {
    throw named(error);
  });
  await recordCluster(cluster, path.join(stateDir, 'workers.json'), sink).catch(async (error: unknown) => {
    await cluster.stop();
    throw error;
  });
  const controller = new AbortController();
  const onAbort = () => controller.abort();
  signal.addEventListener('abort', onAbort, { once: true });
  let lost: StewardError | undefined;
  void cluster.lost.then((error) => {
    lost = named(error) as StewardError;
    controller.abort();
  });
  return {
    cluster,
    sink,
    signal: controller.signal,
    env: { ...env, ...cluster.stepEnvironment(), PYTHONPATH: helperPythonPath(env.PYTHONPATH) },
    lostError: () => lost,
    stop: async () => {
      signal.removeEventListener('abort', onAbort);
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
