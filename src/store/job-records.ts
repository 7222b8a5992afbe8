/**
 * A job, its attempts and its steps as the store returns them, how their rows map to records, and the
 * plain reads of them that the job modules (jobs, attempts, claims, events, sweeps) share. Reads take an
 * `Executor` so that they can run inside a caller's transaction.
 */
import type { ErrorInfo, ExecutorIdentity, JobState, ParamValue, StepState } from '../protocol/index.js';
import type { Executor } from './context.js';
import type { Database, JobsTable } from './schema.js';

export interface JobRecord {
  id: string;
  user: string;
  workflow: { space: string; name: string; version: number; digest: string };
  params: Record<string, ParamValue>;
  labels: string[];
  state: JobState;
  attempt: number;
  agentId: string | null;
  executor: ExecutorIdentity | null;
  error: ErrorInfo | null;
  timeoutMs: number | null;
  jobTokenHash: string;
  loadDeadline: number | null;
  /** When the bus confirmed the current attempt's offer; null while unpublished. */
  offerPublishedAt: number | null;
  cancelRequested: boolean;
  createdAt: number;
  startedAt: number | null;
  finishedAt: number | null;
  updatedAt: number;
  /** The job's own retry budget; null when the server's policy applies. */
  retries: number | null;
  /** The agent holding the current attempt's claim (see `claimAttempt`); null until its first fetch. */
  claimedBy: string | null;
  /** The cluster the job was routed to at submit (`local`: the server's own bus). */
  cluster: string;
  /** Kept whatever the retention settings (`steward pin`). */
  pinned: boolean;
  /** When the retention sweep removed the job's result files, logs and inputs; null while they are kept. */
  filesPurgedAt: number | null;
  /** The id of the schedule that fired the job; null for jobs submitted by hand. */
  schedule: string | null;
}

/** One attempt of a job: a run on one agent. Attempt numbers start at 1; a retry adds the next. */
export interface AttemptRecord {
  jobId: string;
  attempt: number;
  /** The job's state while this is its current attempt; afterwards how the attempt ended. */
  state: JobState;
  agentId: string | null;
  offeredAt: number;
  startedAt: number | null;
  finishedAt: number | null;
  error: ErrorInfo | null;
}

export interface StepRecord {
  jobId: string;
  id: string;
  kind: string;
  state: StepState;
  startedAt: number | null;
  finishedAt: number | null;
  durationMs: number | null;
  rows: number | null;
  progress: number | null;
  message: string | null;
}

/** A job with its steps and attempts, all read from one snapshot of the database (`Store.getJobDetail`). */
export interface JobDetailRecord {
  job: JobRecord;
  /** In workflow order. */
  steps: StepRecord[];
  /** Oldest first. */
  attempts: AttemptRecord[];
}

/** A step's columns before any attempt ran it: how a job lists its steps at first and after a retry. */
export const PENDING_STEP = {
  state: 'pending',
  started_at: null,
  finished_at: null,
  duration_ms: null,
  rows: null,
  progress: null,
  message: null,
} as const satisfies Partial<Database['job_steps']>;

function errorOf(code: string | null, message: string | null): ErrorInfo | null {
  return code === null ? null : ({ code, message: message ?? '' } as ErrorInfo);
}

export function toJob(row: JobsTable): JobRecord {
  return {
    id: row.id,
    user: row.user_name,
    workflow: {
      space: row.workflow_space,
      name: row.workflow_name,
      version: row.workflow_version,
      digest: row.workflow_digest,
    },
    params: JSON.parse(row.params_json) as Record<string, ParamValue>,
    labels: JSON.parse(row.labels_json) as string[],
    state: row.state as JobState,
    attempt: row.attempt,
    agentId: row.agent_id,
    executor: row.executor_json === null ? null : (JSON.parse(row.executor_json) as ExecutorIdentity),
    error: errorOf(row.error_code, row.error_message),
    timeoutMs: row.timeout_ms,
    jobTokenHash: row.job_token_hash,
    loadDeadline: row.load_deadline,
    offerPublishedAt: row.offer_published_at,
    cancelRequested: row.cancel_requested === 1,
    createdAt: row.created_at,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
    updatedAt: row.updated_at,
    retries: row.retries,
    claimedBy: row.claimed_by,
    cluster: row.cluster,
    pinned: Number(row.pinned) === 1,
    filesPurgedAt: row.files_purged_at,
    schedule: row.schedule,
  };
}

function toAttempt(row: Database['job_attempts']): AttemptRecord {
  return {
    jobId: row.job_id,
    attempt: row.attempt,
    state: row.state as JobState,
    agentId: row.agent_id,
    offeredAt: row.offered_at,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
    error: errorOf(row.error_code, row.error_message),
  };
}

export function toStep(row: Database['job_steps']): StepRecord {
  return {
    jobId: row.job_id,
    id: row.step_id,
    kind: row.kind,
    state: row.state as StepState,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
    durationMs: row.duration_ms,
    rows: row.rows,
    progress: row.progress,
    message: row.message,
  };
}

export async function readJob(executor: Executor, id: string): Promise<JobRecord | undefined> {
  const row = await executor.selectFrom('jobs').selectAll().where('id', '=', id).executeTakeFirst();
  return row && toJob(row);
}

/** A job's steps in workflow order. */
export async function readSteps(executor: Executor, jobId: string): Promise<StepRecord[]> {
  const rows = await executor
    .selectFrom('job_steps')
    .selectAll()
    .where('job_id', '=', jobId)
    .orderBy('position')
    .orderBy('step_id')
    .execute();
  return rows.map(toStep);
}

/** A job's attempts, oldest first. */
export async function readAttempts(executor: Executor, jobId: string): Promise<AttemptRecord[]> {
  const rows = await executor
    .selectFrom('job_attempts')
    .selectAll()
    .where('job_id', '=', jobId)
    .orderBy('attempt')
    .execute();
  return rows.map(toAttempt);
}
