/**
 * A step's Dask cluster, from start to stop: the job's certificates, the scheduler (on the step's
 * machine), the workers (through a `DaskWorkerPlacement`), and the wait until every worker has registered
 * with the scheduler, which a scheduler preload reports as JSON lines (`worker-added`, with the worker's
 * pid). A scheduler that exits while the step runs is the step's failure (`lost`); a lost worker is Dask's
 * to recover (its tasks run again on the others).
 */
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { StewardError, formatExactDuration } from '../../protocol/index.js';
import type { DaskRequest, SpawnWrapper } from '../types.js';
import { makeDaskCertificates, type DaskTlsFiles } from './certificates.js';
import type { DaskWorkerPlacement, PlacedDaskWorker } from './placement.js';
import { DaskProcess, type DaskExit, type DaskLogSink } from './process.js';

/** Steward's Python helper package (`steward_dask`), shipped beside `dist/` and `src/`. */
export const DASK_HELPER_DIR = fileURLToPath(new URL('../../../python', import.meta.url));
/** Debian's interpreter, where python3-distributed and python3-pandas are installed. */
export const DEFAULT_DASK_PYTHON = '/usr/bin/python3';

export interface DaskClusterOptions {
  request: DaskRequest;
  /** `<job>-<step>`, for names. */
  label: string;
  step: string;
  /** Private (0700) directory for the certificates and the scheduler's files, in the job directory. */
  stateDir: string;
  /** Scratch (spill) directory, in the job's temp directory. */
  scratchDir: string;
  cwd: string;
  python: string;
  /** Address the scheduler listens on (reachable by the workers' machines). */
  schedulerHost: string;
  /** The step's clean base environment (the executor's). */
  env: Record<string, string>;
  placement: DaskWorkerPlacement;
  spawnWrapper?: SpawnWrapper;
  sink: DaskLogSink;
  signal: AbortSignal;
  /** Longest wait for the scheduler and every worker to be up. */
  startTimeoutMs: number;
  killGraceMs: number;
}

export interface DaskCluster {
  address: string;
  tls: DaskTlsFiles;
  scheduler: { pid: number };
  workers: readonly PlacedDaskWorker[];
  /** Milliseconds from each worker's start to its registration with the scheduler, by worker name. */
  workerStartMs: ReadonlyMap<string, number>;
  /** The variables a step of this cluster sees. */
  stepEnvironment(): Record<string, string>;
  /** Resolves with the step's failure if the scheduler exits before `stop()`. */
  lost: Promise<StewardError>;
  /** Stops the workers and the scheduler (TERM, then KILL of each group); idempotent. */
  stop(): Promise<void>;
}

/** PYTHONPATH with Steward's helper first. */
export function helperPythonPath(existing: string | undefined): string {
  return existing ? `${DASK_HELPER_DIR}:${existing}` : DASK_HELPER_DIR;
}

/** The processes started so far, for stopping them all on a failed start or at `stop()`. */
interface StartedProcesses {
  scheduler?: DaskProcess;
  workers: PlacedDaskWorker[];
}

/** Where a starting cluster keeps its files, and the environment its processes share. */
interface ClusterFiles {
  tls: DaskTlsFiles;
  schedulerFile: string;
  eventsFile: string;
  env: Record<string, string>;
}

export async function startDaskCluster(options: DaskClusterOptions): Promise<DaskCluster> {
  const files = await prepareFiles(options);
  const deadline = Date.now() + options.startTimeoutMs;
  const started: StartedProcesses = { workers: [] };
  const stopAll = async () => {
    await Promise.all(started.workers.map((worker) => worker.stop(options.killGraceMs)));
    await started.scheduler?.stop(options.killGraceMs);
  };
  try {
    const { scheduler, schedulerExit, address } = await startScheduler(options, files, deadline, started);
    started.workers = await placeWorkers(options, files, address);
    const workerStartMs = await waitForWorkers(options, files, deadline, {
      scheduler,
      schedulerExit,
      workers: started.workers,
    });
    return runningCluster(options, files.tls, { scheduler, address, started, workerStartMs, stopAll });
  } catch (error) {
    await stopAll();
    throw error;
  }
}

/** The state and scratch directories, the job's certificates, and the processes' environment. */
async function prepareFiles(options: DaskClusterOptions): Promise<ClusterFiles> {
  await mkdir(options.stateDir, { recursive: true, mode: 0o700 });
  await mkdir(options.scratchDir, { recursive: true, mode: 0o700 });
  const tls = await makeDaskCertificates(path.join(options.stateDir, 'tls'), options.label);
  const env = {
    ...options.env,
    PYTHONPATH: helperPythonPath(options.env.PYTHONPATH),
    // Refuse any connection that is not TLS, whatever a user's dask config says.
    DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION: 'True',
  };
  return {
    tls,
    schedulerFile: path.join(options.stateDir, 'scheduler.json'),
    eventsFile: path.join(options.stateDir, 'events.jsonl'),
    env,
  };
}

/** Starts the scheduler (recorded in `started` at once) and waits for the address it writes. */
async function startScheduler(
  options: DaskClusterOptions,
  files: ClusterFiles,
  deadline: number,
  started: StartedProcesses,
): Promise<{ scheduler: DaskProcess; schedulerExit: { exit?: DaskExit }; address: string }> {
  const scheduler = await DaskProcess.start({
    name: 'scheduler',
    argv: schedulerArgv(options.python, options.schedulerHost, files.tls, files.schedulerFile),
    cwd: options.cwd,
    env: { ...files.env, STEWARD_DASK_EVENTS: files.eventsFile },
    ...(options.spawnWrapper ? { spawnWrapper: options.spawnWrapper } : {}),
    sink: options.sink,
  });
  started.scheduler = scheduler;
  const schedulerExit = watchExit(scheduler.exited);
  const address = await waitFor(options, deadline, 'the Dask scheduler to start', async () => {
    if (schedulerExit.exit) throw exitedError('scheduler', schedulerExit.exit, scheduler.tail());
    const info = await readJson(files.schedulerFile);
    return typeof info?.address === 'string' ? info.address : undefined;
  });
  return { scheduler, schedulerExit, address };
}

/** Starts the requested workers through the placement, pointed at the scheduler. */
function placeWorkers(
  options: DaskClusterOptions,
  files: ClusterFiles,
  address: string,
): Promise<PlacedDaskWorker[]> {
  const { request } = options;
  const { tls } = files;
  return options.placement.place(
    {
      label: options.label,
      step: options.step,
      count: request.workers,
      threads: request.threads,
      memoryBytes: request.memoryBytes,
      schedulerAddress: address,
      tls: { ca: tls.ca, ...tls.worker },
      python: options.python,
      env: files.env,
      cwd: options.cwd,
      scratchDir: options.scratchDir,
    },
    {
      signal: options.signal,
      sink: options.sink,
      ...(options.spawnWrapper ? { spawnWrapper: options.spawnWrapper } : {}),
    },
  );
}

/**
 * Waits until every worker has registered with the scheduler (failing as soon as the scheduler or a worker
 * exits); gives each worker's milliseconds from its start to its registration, by worker name.
 */
async function waitForWorkers(
  options: DaskClusterOptions,
  files: ClusterFiles,
  deadline: number,
  processes: { scheduler: DaskProcess; schedulerExit: { exit?: DaskExit }; workers: PlacedDaskWorker[] },
): Promise<Map<string, number>> {
  const { request } = options;
  const { scheduler, schedulerExit, workers } = processes;
  const workerExits = workers.map((worker) => ({ worker, state: watchExit(worker.exited) }));
  const registered = await waitFor(
    options,
    deadline,
    `${request.workers} Dask workers to register`,
    async () => {
      if (schedulerExit.exit) throw exitedError('scheduler', schedulerExit.exit, scheduler.tail());
      const gone = workerExits.find((entry) => entry.state.exit);
      if (gone) throw exitedError(gone.worker.name, gone.state.exit!, gone.worker.tail());
      const added = await workersAdded(files.eventsFile);
      return added.size >= request.workers ? added : undefined;
    },
  );
  const workerStartMs = new Map<string, number>();
  for (const worker of workers) {
    const at = registered.get(`${options.label}-${worker.name}`);
    if (at !== undefined) workerStartMs.set(worker.name, Math.max(0, at - worker.startedAt));
  }
  return workerStartMs;
}

/** The started cluster: its address and files for the step, its loss, and its stop. */
function runningCluster(
  options: DaskClusterOptions,
  tls: DaskTlsFiles,
  parts: {
    scheduler: DaskProcess;
    address: string;
    started: StartedProcesses;
    workerStartMs: Map<string, number>;
    stopAll: () => Promise<void>;
  },
): DaskCluster {
  const { scheduler, address, started, workerStartMs, stopAll } = parts;
  let stopping: Promise<void> | undefined;
  const lost = scheduler.exited.then(async (exit) => {
    await stopping;
    return exitedError('scheduler', exit, scheduler.tail(), 'STEWARD_DASK_SCHEDULER_LOST');
  });
  return {
    address,
    tls,
    scheduler: { pid: scheduler.pid },
    workers: started.workers,
    workerStartMs,
    lost: new Promise((resolve) => {
      // Only an exit before stop() is a loss; after it, the promise stays pending.
      void lost.then((error) => {
        if (!stopping) resolve(error);
      });
    }),
    stepEnvironment: () => ({
      STEWARD_DASK_SCHEDULER: address,
      STEWARD_DASK_CA_FILE: tls.ca,
      STEWARD_DASK_CLIENT_CERT: tls.client.cert,
      STEWARD_DASK_CLIENT_KEY: tls.client.key,
      STEWARD_DASK_WORKERS: String(options.request.workers),
    }),
    stop: () => (stopping ??= stopAll()),
  };
}

function schedulerArgv(python: string, host: string, tls: DaskTlsFiles, schedulerFile: string): string[] {
  return [
    python,
    '-m',
    'distributed.cli.dask_scheduler',
    '--protocol',
    'tls',
    '--host',
    host,
    '--port',
    '0',
    '--no-dashboard',
    '--no-show',
    '--tls-ca-file',
    tls.ca,
    '--tls-cert',
    tls.scheduler.cert,
    '--tls-key',
    tls.scheduler.key,
    '--scheduler-file',
    schedulerFile,
    '--preload',
    'steward_dask.scheduler_preload',
  ];
}

function watchExit(exited: Promise<DaskExit>): { exit?: DaskExit } {
  const state: { exit?: DaskExit } = {};
  void exited.then((exit) => (state.exit = exit));
  return state;
}

function exitedError(
  name: string,
  exit: DaskExit,
  tail: string,
  code: 'STEWARD_DASK_START_FAILED' | 'STEWARD_DASK_SCHEDULER_LOST' = 'STEWARD_DASK_START_FAILED',
): StewardError {
  const how =
    exit.code === null ? `was killed by ${exit.signal ?? 'a signal'}` : `exited with code ${exit.code}`;
  const what =
    code === 'STEWARD_DASK_SCHEDULER_LOST' ? 'the Dask scheduler was lost: it' : `the Dask ${name}`;
  return new StewardError(code, `${what} ${how}${tail ? `:\n${tail}` : ''}`);
}

/** Polls `probe` until it returns a value; rejects on abort, on the deadline, or with what `probe` throws. */
async function waitFor<T>(
  options: DaskClusterOptions,
  deadline: number,
  what: string,
  probe: () => Promise<T | undefined>,
): Promise<T> {
  for (;;) {
    if (options.signal.aborted)
      throw new StewardError('STEWARD_DASK_START_FAILED', `stopped while waiting for ${what}`);
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) {
      throw new StewardError(
        'STEWARD_DASK_START_FAILED',
        `timed out after ${formatExactDuration(options.startTimeoutMs)} waiting for ${what}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function readJson(file: string): Promise<Record<string, unknown> | undefined> {
  const text = await readFile(file, 'utf8').catch(() => '');
  try {
    const value: unknown = JSON.parse(text);
    return value && typeof value === 'object' ? (value as Record<string, unknown>) : undefined;
  } catch {
    // Not there yet, or half written.
    return undefined;
  }
}

/** Registration time (ms since the epoch) by worker name, from the scheduler preload's events. */
async function workersAdded(eventsFile: string): Promise<Map<string, number>> {
  const text = await readFile(eventsFile, 'utf8').catch(() => '');
  const byAddress = new Map<string, { name: string; time: number }>();
  for (const line of text.split('\n')) {
    if (!line) continue;
    try {
      const event = JSON.parse(line) as {
        event?: unknown;
        address?: unknown;
        name?: unknown;
        time?: unknown;
      };
      if (typeof event.address !== 'string') continue;
      if (event.event === 'worker-added' && typeof event.name === 'string' && typeof event.time === 'number')
        byAddress.set(event.address, { name: event.name, time: event.time * 1000 });
      if (event.event === 'worker-removed') byAddress.delete(event.address);
    } catch {
      // A line being written: read again on the next poll.
    }
  }
  const added = new Map<string, number>();
  for (const { name, time } of byAddress.values()) added.set(name, time);
  return added;
}
