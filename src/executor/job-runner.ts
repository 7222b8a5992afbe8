/**
 * Runs one job inside an executor: fetch the workflow with the job token, place its assets, report
 * `loaded` (the agent acks the offer only then), run it with the engine, upload results and logs, and report
 * the final state. Everything here already runs as the job's user.
 */
import { createHash } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
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
import { emptyDir, removeDir } from './job-dirs.js';
import { uploadRun } from './result-uploads.js';
import { LiveLogShipper } from './live-logs.js';
import { ServerClient, type JobWorkflow } from './server-client.js';

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
    const fetched = await fetchWorkflow(client, job);
    const workflow = await parseCached(fetched.source, fetched.format);
    // The job's directory, and its own TMPDIR (tmp/<job>-<attempt>): private, removed with everything in
    // them at the end.
    if (needsJobDirs(workflow, fetched, context)) await Promise.all([emptyDir(workDir), emptyDir(tempDir)]);
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
    await uploadRun(client, result);
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
  if (!identity.keepJobDirs)
    await Promise.all([removeDir(tempDir).catch(() => {}), removeDir(workDir).catch(() => {})]);
}

/**
 * Whether the job's directories must exist before it runs: for files placed in them (assets, inputs), for a
 * process step (its working directory and TMPDIR), or for a job database of its own (in the job's temp
 * directory, without the executor's shared DuckDB). Otherwise nothing may use them, and a job that writes
 * there after all (a result, a `write` step) has the engine create what it writes into (as the user, 0700
 * under the executor's umask); a job of SQL steps alone touches no directory.
 */
function needsJobDirs(workflow: Workflow, fetched: LoadedWorkflow, context: JobContext): boolean {
  if (fetched.assets.length > 0 || fetched.inputs.length > 0 || !context.duckdbHost) return true;
  return workflow.steps.some((step) => step.kind !== 'sql' && step.kind !== 'read' && step.kind !== 'write');
}

/** What a job needs of its workflow fetch. */
type LoadedWorkflow = Omit<JobWorkflow, 'jobId' | 'attempt' | 'user'>;

/**
 * The job's workflow: from its offer when it travelled there, else from the server, with the claim its agent
 * asked for: none when the agent's confirmed `loading` event holds it, a check of that event's claim, or (agents of earlier versions) the fetch's own.
 */
async function fetchWorkflow(client: ServerClient, job: JobMessage): Promise<LoadedWorkflow> {
  // Carried in the signed offer: what the fetch would answer for a workflow with no assets and no inputs.
  if (job.workflow)
    return {
      source: job.workflow.source,
      format: job.workflow.format,
      params: job.params,
      assets: [],
      limits: { stepLogBytes: job.workflow.stepLogBytes },
      inputs: [],
    };
  if (job.claim === 'event') return client.workflow();
  return client.workflow(job.agentId, job.claim === 'await-event' ? 'event' : 'fetch');
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
