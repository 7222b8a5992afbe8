/**
 * Attempts: a job runs as one or more attempts, each with its own job token. A retry (`retryJob`) or a
 * re-offer (`reofferAsNewAttempt`) ends the current attempt and begins the next in one transaction, with
 * the job's row locked (`lockJobRow`): two servers, or a duplicate event, cannot both begin one attempt.
 * The old attempt's token and events stop counting at once.
 */
import type { Transaction } from 'kysely';
import { canStartNewAttempt, type ErrorInfo, type JobState } from '../protocol/index.js';
import { lockJobRow, type Executor, type StoreContext } from './context.js';
import {
  PENDING_STEP,
  readAttempts,
  readJob,
  readSteps,
  toJob,
  type AttemptRecord,
  type JobRecord,
  type StepRecord,
} from './job-records.js';
import type { Database } from './schema.js';

/** What a retry ends and what it begins (see `Store.retryJob`). */
export interface RetryPlan {
  /** The attempt being ended; the retry happens only while it is still the job's current attempt. */
  attempt: number;
  /** How the old attempt ended: `lost` (agent silent) or `failed` (executor crashed). */
  endState: 'lost' | 'failed';
  error: ErrorInfo;
  /** The new attempt's job token (hash): the old attempt's token stops working at once. */
  jobTokenHash: string;
  loadDeadline: number;
  /** Default: the store's clock. */
  now?: number;
}

/**
 * What `Store.retryJob` did. On success `steps` are the job's steps as the retry left them (all `pending`),
 * read in the same transaction as `job`.
 */
export type RetryResult =
  { ok: true; job: JobRecord; steps: StepRecord[] } | { ok: false; job: JobRecord | null };

/** Records a new attempt of a job, not yet taken by any agent. */
export async function beginAttempt(
  trx: Transaction<Database>,
  jobId: string,
  attempt: number,
  state: JobState,
  offeredAt: number,
): Promise<void> {
  await trx
    .insertInto('job_attempts')
    .values({
      job_id: jobId,
      attempt,
      state,
      agent_id: null,
      offered_at: offeredAt,
      started_at: null,
      finished_at: null,
      error_code: null,
      error_message: null,
    })
    .execute();
}

export class AttemptStore {
  constructor(private readonly ctx: StoreContext) {}

  /**
   * Ends the job's current attempt (`plan.endState`, with its error) and begins the next one in one
   * transaction: attempt + 1 in state `offered`, a new job token, no agent, executor or error, and every step
   * back to `pending`. Happens only while `plan.attempt` is still current and the job has not ended (see
   * `canStartNewAttempt`), so two servers (or a duplicate event) cannot both retry one attempt. The caller
   * publishes the new attempt's offer after this commits.
   */
  async retryJob(id: string, plan: RetryPlan): Promise<RetryResult> {
    const now = plan.now ?? this.ctx.clock();
    return this.ctx.db.transaction().execute(async (trx) => {
      const row = await lockJobRow(this.ctx, trx, id);
      if (!row) return { ok: false, job: null };
      const current = toJob(row);
      if (current.attempt !== plan.attempt || !canStartNewAttempt(current.state))
        return { ok: false, job: current };
      if (!(await moveToNextAttempt(trx, current, plan, now)))
        return { ok: false, job: (await readJob(trx, id)) ?? null };
      // A job already `lost` keeps the end recorded when it was lost.
      await endAttempt(trx, id, current.attempt, {
        state: plan.endState,
        error: plan.error,
        finishedAt: current.state === 'lost' ? (current.finishedAt ?? now) : now,
      });
      await beginAttempt(trx, id, current.attempt + 1, 'offered', now);
      await resetSteps(trx, id);
      await this.ctx.changes.notify(trx, id);
      return { ok: true, job: (await readJob(trx, id))!, steps: await readSteps(trx, id) };
    });
  }

  /** A job's attempts, oldest first. */
  async listAttempts(jobId: string, executor: Executor = this.ctx.db): Promise<AttemptRecord[]> {
    return readAttempts(executor, jobId);
  }

  /**
   * Makes an unpublished `offered` job a new attempt with a new token: its first offer may have been
   * published after all, and must then fail to load (old token) and have its events ignored (old attempt)
   * rather than run the job a second time unseen. Only if the job is still as read (offered, that attempt,
   * unpublished): one of several servers doing this at once wins. Returns the job, or undefined.
   */
  async reofferAsNewAttempt(
    id: string,
    fromAttempt: number,
    jobTokenHash: string,
    now = this.ctx.clock(),
  ): Promise<JobRecord | undefined> {
    return this.ctx.db.transaction().execute(async (trx) => {
      const row = await lockJobRow(this.ctx, trx, id);
      const job = row && toJob(row);
      if (!job || job.state !== 'offered' || job.attempt !== fromAttempt || job.offerPublishedAt !== null)
        return undefined;
      await trx
        .updateTable('jobs')
        .set({
          attempt: fromAttempt + 1,
          job_token_hash: jobTokenHash,
          agent_id: null,
          executor_json: null,
          claimed_by: null,
          updated_at: now,
        })
        .where('id', '=', id)
        .execute();
      // The attempt whose offer may never have gone out ends here; the new one starts offered.
      await endAttempt(trx, id, fromAttempt, {
        state: 'lost',
        error: {
          code: 'STEWARD_UNAVAILABLE',
          message:
            "the bus never confirmed this attempt's offer (its server may have died); offered again as a new attempt",
        },
        finishedAt: now,
      });
      await beginAttempt(trx, id, fromAttempt + 1, 'offered', now);
      await this.ctx.changes.notify(trx, id);
      return readJob(trx, id);
    });
  }
}

/**
 * Moves the job's row to the next attempt, offered afresh; false when the row is no longer as read (same
 * attempt and state).
 */
async function moveToNextAttempt(
  trx: Transaction<Database>,
  current: JobRecord,
  plan: RetryPlan,
  now: number,
): Promise<boolean> {
  const moved = await trx
    .updateTable('jobs')
    .set({
      state: 'offered',
      attempt: current.attempt + 1,
      agent_id: null,
      executor_json: null,
      error_code: null,
      error_message: null,
      job_token_hash: plan.jobTokenHash,
      load_deadline: plan.loadDeadline,
      offer_published_at: null,
      cancel_requested: 0,
      claimed_by: null,
      finished_at: null,
      updated_at: now,
    })
    .where('id', '=', current.id)
    .where('attempt', '=', current.attempt)
    .where('state', '=', current.state)
    .executeTakeFirst();
  return Number(moved.numUpdatedRows) === 1;
}

/** Records how an attempt ended on its own row. */
async function endAttempt(
  trx: Transaction<Database>,
  jobId: string,
  attempt: number,
  end: { state: JobState; error: ErrorInfo; finishedAt: number },
): Promise<void> {
  await trx
    .updateTable('job_attempts')
    .set({
      state: end.state,
      error_code: end.error.code,
      error_message: end.error.message,
      finished_at: end.finishedAt,
    })
    .where('job_id', '=', jobId)
    .where('attempt', '=', attempt)
    .execute();
}

/** Every step of the job back to `pending`, as before its first attempt. */
async function resetSteps(trx: Transaction<Database>, jobId: string): Promise<void> {
  await trx.updateTable('job_steps').set(PENDING_STEP).where('job_id', '=', jobId).execute();
}
