/**
 * Job state transitions: the one path by which a job's state changes (besides a retry or a re-offer, which
 * begin a new attempt: `attempts.ts`).
 *
 * Invariant: every job state change goes through `transitionIn` (from `Store.transitionJob`, or from an
 * agent's state event in `events.ts`). It reads the job's row with `lockJobRow` (`SELECT … FOR UPDATE` on
 * PostgreSQL), checks `canTransition` and updates with `WHERE state = <the state it read>` inside the
 * caller's transaction, so two servers racing serialize and cannot both win. The change is mirrored onto
 * the current attempt's row and announced (`ChangeNotifier`) in the same transaction; a job's end also
 * queues its notifications there (`enqueueJobEndIn`), so they are sent once per end, by whichever server
 * won it, and survive any crash after the commit.
 */
import { sql, type Transaction } from 'kysely';
import {
  canTransition,
  isTerminal,
  type ErrorInfo,
  type ExecutorIdentity,
  type JobState,
} from '../protocol/index.js';
import { lockJobRow, type StoreContext } from './context.js';
import { readJob, toJob, type JobRecord } from './job-records.js';
import { enqueueJobEndIn } from './notifications.js';
import type { Database, JobsTable } from './schema.js';

/** Fields a transition may set along with the new state. */
export interface JobPatch {
  agentId?: string | null;
  /** A new job token's hash (the old token stops working). */
  jobTokenHash?: string;
  executor?: ExecutorIdentity | null;
  error?: ErrorInfo | null;
  loadDeadline?: number | null;
  startedAt?: number | null;
  finishedAt?: number | null;
  cancelRequested?: boolean;
  /**
   * The attempt's claim: taken by the agent whose `loading` is applied first (its id), or given up (null):
   * its agent handed the offer back before loading it.
   */
  claimedBy?: string | null;
}

export interface TransitionOptions {
  /** Only from one of these states. */
  from?: readonly JobState[];
  /** Only while this is the job's current attempt. */
  attempt?: number;
  /** The transition's time. Default: the store's clock. */
  now?: number;
}

export type TransitionResult =
  /** `from`: the state the job left. */
  | { ok: true; job: JobRecord; from: JobState }
  /** `job` is the current record (null when the job does not exist). */
  | { ok: false; job: JobRecord | null };

/**
 * Moves a job to `to` inside `trx` if the state machine allows it from the state it is in now (see the
 * invariant above). `locked`: the job's row as this transaction already read (and locked) it, which saves
 * reading it again. The updated job is that row with the new values: the row lock (or SQLite's database
 * lock) means nobody else changed it in between.
 */
export async function transitionIn(
  ctx: StoreContext,
  trx: Transaction<Database>,
  id: string,
  to: JobState,
  patch: JobPatch,
  options: TransitionOptions,
  locked?: JobsTable,
): Promise<TransitionResult> {
  const result = await transitionRowIn(ctx, trx, id, to, patch, options, locked);
  return result.ok ? { ok: true, job: result.job, from: result.from } : result;
}

/** `transitionIn`, also returning the job's row after the transition (an event batch carries it on). */
export async function transitionRowIn(
  ctx: StoreContext,
  trx: Transaction<Database>,
  id: string,
  to: JobState,
  patch: JobPatch,
  options: TransitionOptions,
  locked?: JobsTable,
): Promise<
  Extract<TransitionResult, { ok: false }> | { ok: true; job: JobRecord; from: JobState; row: JobsTable }
> {
  const row = locked ?? (await lockJobRow(ctx, trx, id));
  if (!row) return { ok: false, job: null };
  const current = toJob(row);
  if (options.from && !options.from.includes(current.state)) return { ok: false, job: current };
  if (options.attempt !== undefined && options.attempt !== current.attempt)
    return { ok: false, job: current };
  if (!canTransition(current.state, to)) return { ok: false, job: current };
  const now = options.now ?? ctx.clock();
  const values = jobValues(to, patch, now);
  // Optimistic: the row must still be in the state we read (another server may have moved it).
  const result = await trx
    .updateTable('jobs')
    .set(values)
    .where('id', '=', id)
    .where('state', '=', current.state)
    .executeTakeFirst();
  if (Number(result.numUpdatedRows) !== 1) return { ok: false, job: (await readJob(trx, id)) ?? null };
  await recordAttemptState(trx, current.attempt, id, to, patch, now);
  if (isTerminal(to)) await closeOpenSteps(trx, id, to, values.finished_at ?? now);
  const updated = { ...row, ...values };
  const job = toJob(updated);
  if (isTerminal(to)) await enqueueJobEndIn(trx, job, await scheduleNameIn(trx, job.schedule), now);
  await ctx.changes.notify(trx, id);
  return { ok: true, job, from: current.state, row: updated };
}

/** The job row's new values for a transition to `to` with `patch`. */
function jobValues(to: JobState, patch: JobPatch, now: number): Partial<JobsTable> {
  const values: Partial<JobsTable> = { state: to, updated_at: now };
  if (patch.agentId !== undefined) values.agent_id = patch.agentId;
  if (patch.executor !== undefined)
    values.executor_json = patch.executor === null ? null : JSON.stringify(patch.executor);
  if (patch.error !== undefined) {
    values.error_code = patch.error?.code ?? null;
    values.error_message = patch.error?.message ?? null;
  }
  if (patch.loadDeadline !== undefined) values.load_deadline = patch.loadDeadline;
  if (patch.jobTokenHash !== undefined) values.job_token_hash = patch.jobTokenHash;
  if (patch.startedAt !== undefined) values.started_at = patch.startedAt;
  if (patch.finishedAt !== undefined) values.finished_at = patch.finishedAt;
  else if (isTerminal(to)) values.finished_at = now;
  if (patch.cancelRequested !== undefined) values.cancel_requested = patch.cancelRequested ? 1 : 0;
  if (patch.claimedBy !== undefined) values.claimed_by = patch.claimedBy;
  return values;
}

/** Mirrors a transition of the job onto its current attempt's row. */
async function recordAttemptState(
  trx: Transaction<Database>,
  attempt: number,
  id: string,
  to: JobState,
  patch: JobPatch,
  now: number,
): Promise<void> {
  const values: Partial<Database['job_attempts']> = { state: to };
  if (patch.agentId !== undefined) values.agent_id = patch.agentId;
  if (patch.error !== undefined) {
    values.error_code = patch.error?.code ?? null;
    values.error_message = patch.error?.message ?? null;
  }
  if (isTerminal(to)) values.finished_at = patch.finishedAt ?? now;
  await trx
    .updateTable('job_attempts')
    .set(values)
    // The attempt's own start, once (the job's startedAt is its first attempt's).
    .$if(to === 'running', (update) =>
      update.set({ started_at: sql<number>`COALESCE(started_at, ${patch.startedAt ?? now})` }),
    )
    .where('job_id', '=', id)
    .where('attempt', '=', attempt)
    .execute();
}

/** The name of the schedule that started a job (rules are scoped by name); null for a job run by hand. */
async function scheduleNameIn(trx: Transaction<Database>, scheduleId: string | null): Promise<string | null> {
  if (scheduleId === null) return null;
  const row = await trx
    .selectFrom('schedules')
    .select('name')
    .where('id', '=', scheduleId)
    .executeTakeFirst();
  return row?.name ?? null;
}

/**
 * A job that ended leaves no step open: a step still `running` (its agent was lost, its executor died, the
 * job was canceled or failed elsewhere) ends `canceled` with a canceled job and `failed` otherwise, at the
 * job's end, saying why; a `pending` one is `skipped`. Without this a lost job's step stayed `running` and
 * its duration kept growing. Only here, so every way a job ends closes its steps.
 */
async function closeOpenSteps(
  trx: Transaction<Database>,
  jobId: string,
  to: JobState,
  finishedAt: number,
): Promise<void> {
  // One statement for both: running steps end (state, end, duration never negative, a message), pending
  // ones are skipped and keep the rest.
  const ended = to === 'canceled' ? 'canceled' : 'failed';
  const running = sql<boolean>`state = 'running'`;
  await trx
    .updateTable('job_steps')
    .set({
      state: sql<string>`CASE WHEN ${running} THEN ${ended} ELSE 'skipped' END`,
      finished_at: sql<number | null>`CASE WHEN ${running} THEN ${finishedAt} ELSE finished_at END`,
      duration_ms: sql<number | null>`CASE WHEN ${running} THEN (CASE WHEN started_at IS NULL THEN NULL
        WHEN started_at > ${finishedAt} THEN 0 ELSE ${finishedAt} - started_at END) ELSE duration_ms END`,
      message: sql<string | null>`CASE WHEN ${running}
        THEN COALESCE(message, ${`the job ended ${to} while this step was running`}) ELSE message END`,
    })
    .where('job_id', '=', jobId)
    .where('state', 'in', ['running', 'pending'])
    .execute();
}
