/**
 * Runs one job inside an executor: fetch the workflow with the job token, place its assets, report
 * `loaded` (the agent acks the offer only then), run it with the engine, upload results and logs, and report
 * the final state. Everything here already runs as the job's user.
 */
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { parseWorkflow, runWorkflow, type RunResult } from '../engine/index.js';
import {
  coerceError,
  type AgentToExecutor,
  type ErrorInfo,
  type ExecutorToAgent,
} from '../protocol/index.js';
import type { AssumeMessage } from './identity.js';
import { ServerClient } from './server-client.js';

export type JobMessage = Extract<AgentToExecutor, { type: 'job' }>;

export interface JobContext {
  identity: AssumeMessage;
  env: Record<string, string>;
  send: (message: ExecutorToAgent) => void;
  signal: AbortSignal;
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
  try {
    await mkdir(workDir, { recursive: true, mode: 0o700 });
    await mkdir(tempDir, { recursive: true, mode: 0o700 });
    const fetched = await client.workflow();
    const workflow = await parseWorkflow(fetched.source, { format: fetched.format });
    for (const asset of fetched.assets) {
      const target = path.join(workDir, asset.path);
      // Asset paths were validated at push; check again here since this is where they touch the disk.
      if (!target.startsWith(workDir + path.sep))
        throw new Error(`asset path ${asset.path} leaves the job directory`);
      await mkdir(path.dirname(target), { recursive: true, mode: 0o700 });
      await client.downloadAsset(asset.digest, target);
    }
    send({ type: 'loaded', jobId: job.jobId });
    loaded = true;
    result = await runWorkflow(workflow, {
      params: fetched.params,
      workDir,
      tempDir,
      duckdb: identity.duckdb,
      env: context.env,
      signal: context.signal,
      timeoutMs: job.timeoutMs,
      onEvent: (step) => send({ type: 'step', jobId: job.jobId, step }),
    });
    await uploadAll(client, result);
  } catch (error) {
    const normalised = coerceError(error, 'STEWARD_EXECUTOR_START_FAILED');
    failure = { code: normalised.code, message: normalised.message };
  } finally {
    if (!identity.keepJobDirs) {
      await rm(tempDir, { recursive: true, force: true }).catch(() => {});
      await rm(workDir, { recursive: true, force: true }).catch(() => {});
    }
  }
  if (!loaded && !failure) failure = { code: 'STEWARD_INTERNAL', message: 'job ended before loading' };
  if (failure) {
    send({
      type: 'finished',
      jobId: job.jobId,
      state: context.signal.aborted ? 'canceled' : 'failed',
      error: failure,
    });
    return;
  }
  send({
    type: 'finished',
    jobId: job.jobId,
    state: result!.state,
    ...(result!.error ? { error: result!.error } : {}),
  });
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
