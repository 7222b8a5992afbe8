/**
 * Runs one job inside an executor: fetch the workflow with the job token, place its assets, report
 * `loaded` (the agent acks the offer only then), run it with the engine, upload results and logs, and report
 * the final state. Everything here already runs as the job's user.
 */
import { createHash } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { LRUCache } from 'lru-cache';
import {
  DEFAULT_STEP_LOG_LIMIT_BYTES,
  MIN_STEP_LOG_LIMIT_BYTES,
  parseWorkflow,
  runWorkflow,
  type DuckDBHost,
  type RunResult,
  type SpawnWrapper,
  type Workflow,
} from '../engine/index.js';
import {
  coerceError,
  type AgentToExecutor,
  type ErrorInfo,
  type ExecutorToAgent,
} from '../protocol/index.js';
import type { AssumeMessage } from './identity.js';
import { ClusterWorkerPlacement, DEFAULT_WORKER_LOAD_TIMEOUT_MS } from './dask-placement.js';
import { placeInputs } from './inputs.js';
import { LiveLogShipper } from './live-logs.js';
import { ServerClient } from './server-client.js';

export type JobMessage = Extract<AgentToExecutor, { type: 'job' }>;

export interface JobContext {
  identity: AssumeMessage;
  env: Record<string, string>;
  send: (message: ExecutorToAgent) => void;
  signal: AbortSignal;
  /** The executor's warm DuckDB instance; the job's tables go in a database of their own inside it. */
  duckdbHost?: Promise<DuckDBHost>;
  /** Starts each step inside the job's cgroup (see main.ts). */
  spawnWrapper?: SpawnWrapper;
}

/**
 * Parsed workflows by digest of their source. A user's jobs mostly run the same few workflows, and parsing
 * validates every SQL step with DuckDB's parser. The parse is a pure function of (format, source), so a
 * cached result is exactly what parsing again would give; the run never modifies it.
 */
const parsedWorkflows = new LRUCache<string, Promise<Workflow>>({ max: 32 });

function parseCached(source: string, format: 'yaml' | 'json'): Promise<Workflow> {
  const key = createHash('sha256').update(format).update('\0').update(source).digest('hex');
  let parsed = parsedWorkflows.get(key);
  if (!parsed) {
    parsed = parseWorkflow(source, { format });
    parsed.catch(() => parsedWorkflows.delete(key));
    parsedWorkflows.set(key, parsed);
  }
  return parsed;
}

export async function runJob(job: JobMessage, context: JobContext): Promise<void> {
  const { identity, send } = context;
  const dirName = `${job.jobId}-${job.attempt}`;
  const workDir = path.join(identity.workspaceDir, 'jobs', dirName);
  const tempDir = path.join(identity.tempDir, dirName);
  const client = new ServerClient(job.serverUrl, job.jobId, job.jobToken);
  let result: RunResult | undefined;
  let failure: ErrorInfo | undefined;
  let loaded = false;
  let shipper: LiveLogShipper | undefined;
  try {
    await mkdir(workDir, { recursive: true, mode: 0o700 });
    // The job's own TMPDIR (tmp/<job>-<attempt>): private, and removed with everything in it at the job's end.
    await mkdir(tempDir, { recursive: true, mode: 0o700 });
    const fetched = await client.workflow(job.agentId);
    const workflow = await parseCached(fetched.source, fetched.format);
    for (const asset of fetched.assets) {
      const target = path.join(workDir, asset.path);
      // Asset paths were validated at push; check again here since this is where they touch the disk.
      if (!target.startsWith(workDir + path.sep))
        throw new Error(`asset path ${asset.path} leaves the job directory`);
      await mkdir(path.dirname(target), { recursive: true, mode: 0o700 });
      await client.downloadAsset(asset.digest, target);
    }
    const params = await placeInputs(client, workflow, fetched, workDir);
    send({ type: 'loaded', jobId: job.jobId });
    loaded = true;
    const limit = stepLogLimit(fetched.limits.stepLogBytes);
    shipper = new LiveLogShipper(client, { limitBytes: limit.logLimitBytes ?? DEFAULT_STEP_LOG_LIMIT_BYTES });
    const liveLogs = shipper;
    result = await runWorkflow(workflow, {
      params,
      workDir,
      tempDir,
      duckdb: identity.duckdb,
      ...(context.duckdbHost ? { duckdbHost: context.duckdbHost } : {}),
      env: { ...context.env, TMPDIR: tempDir },
      signal: context.signal,
      ...(context.spawnWrapper ? { spawnWrapper: context.spawnWrapper } : {}),
      ...daskOptions(identity, client),
      timeoutMs: job.timeoutMs,
      ...limit,
      onEvent: (step) => send({ type: 'step', jobId: job.jobId, step }),
      onStepLogs: (logs) => liveLogs.watch(logs),
    });
    // The final uploads replace the live logs: nothing live may arrive after them.
    await shipper.stop();
    await uploadAll(client, result);
  } catch (error) {
    const normalised = coerceError(error, 'STEWARD_EXECUTOR_START_FAILED');
    failure = { code: normalised.code, message: normalised.message };
  }
  await shipper?.stop();
  if (!loaded && !failure) failure = { code: 'STEWARD_INTERNAL', message: 'job ended before loading' };
  // The outcome is reported before the job's directories are removed: nothing of the job runs any more
  // (steps ended with their process groups, results and logs are uploaded), and the removal is not the
  // job's business. The executor still waits for it before it exits (the job counts as running until then).
  if (failure) {
    send({
      type: 'finished',
      jobId: job.jobId,
      state: context.signal.aborted ? 'canceled' : 'failed',
      error: failure,
    });
  } else {
    send({
      type: 'finished',
      jobId: job.jobId,
      state: result!.state,
      ...(result!.error ? { error: result!.error } : {}),
    });
  }
  if (!identity.keepJobDirs) {
    await rm(tempDir, { recursive: true, force: true }).catch(() => {});
    await rm(workDir, { recursive: true, force: true }).catch(() => {});
  }
}

/** The agent's interpreter and Dask scheduler host, and workers placed on the job's cluster's agents. */
function daskOptions(identity: AssumeMessage, client: ServerClient) {
  return {
    ...(identity.python ? { python: identity.python } : {}),
    ...(identity.daskSchedulerHost ? { daskSchedulerHost: identity.daskSchedulerHost } : {}),
    daskPlacement: new ClusterWorkerPlacement(client, DEFAULT_WORKER_LOAD_TIMEOUT_MS),
  };
}

/** The server's step log cap when it is usable; else the engine's default. */
function stepLogLimit(bytes: unknown): { logLimitBytes?: number } {
  return typeof bytes === 'number' && Number.isSafeInteger(bytes) && bytes >= MIN_STEP_LOG_LIMIT_BYTES
    ? { logLimitBytes: bytes }
    : {};
}

async function uploadAll(client: ServerClient, result: RunResult): Promise<void> {
  // Logs first: they matter most when a job failed.
  for (const log of result.logs) await client.uploadLog(log.stepId, log.stream, log.path);
  if (result.state !== 'succeeded') return;
  for (const output of result.outputs) {
    if (output.kind === 'table') {
      await client.uploadResult(output.name, output.parquetPath, {
        kind: 'table',
        format: 'parquet',
        rows: output.rows,
      });
      await client.uploadResult(output.name, output.csvPath, {
        kind: 'table',
        format: 'csv',
        rows: output.rows,
      });
    } else {
      await client.uploadResult(output.name, output.path, { kind: 'file' });
    }
  }
}
