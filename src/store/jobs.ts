/**
 * Jobs: storing a submitted job (once per idempotency key), reading and listing jobs, a job's detail as of
 * one snapshot, and the writes a server makes outside the state machine (cancel requests, offer
 * confirmations). State changes are in `transitions.ts`, attempts in `attempts.ts`, claims in `claims.ts`,
 * agents' events in `events.ts`.
 */
import type { Transaction } from 'kysely';
import { terminalJobStates, type JobState, type ParamValue } from '../protocol/index.js';
import { isUniqueViolation, type Executor, type StoreContext } from './context.js';
import {
  PENDING_STEP,
  readAttempts,
  readJob,
  readSteps,
  toJob,
  type JobDetailRecord,
  type JobRecord,
  type StepRecord,
} from './job-records.js';
import { claimTick, type TickClaim } from './schedules.js';
import type { Database, JobsTable } from './schema.js';
import { transitionIn, type JobPatch, type TransitionOptions, type TransitionResult } from './transitions.js';

export interface NewJob {
  id: string;
  user: string;
  workflow: { space: string; name: string; version: number; digest: string };
  params: Record<string, ParamValue>;
  labels: string[];
  timeoutMs: number | null;
  jobTokenHash: string;
  createdAt: number;
  /** Steps known from the workflow, recorded `pending` so a job's detail lists them from the start. */
  steps: { id: string; kind: string }[];
  /** The job's own retry budget. Default: none (the server's policy). */
  retries?: number | null;
  /**
   * When the job expires if no executor loaded it. Stored with the job so any server's sweeper can end it,
   * even one whose submitting server died before publishing the offer. Default none.
   */
  loadDeadline?: number | null;
  /** The client's idempotency key (unique per user). Default none. */
  submitKey?: string | null;
  /**
   * Record the job straight as `offered` (the server is about to publish its offer): one commit instead of
   * an insert and a `queued → offered` transition. Default: `queued`.
   */
  offered?: boolean;
  /** The cluster the job is routed to. Default `local` (the server's own bus). */
  cluster?: string;
  /**
   * A job fired by a schedule: its tick is claimed (see `schedules.ts`) in the transaction that inserts the
   * job, which is not inserted when the claim fails (TickTakenError). Default: a job submitted by hand.
   */
  tick?: TickClaim;
}

export interface ListJobsFilter {
  user?: string;
  state?: JobState;
  workflow?: string;
  /** Only jobs with an id before this one (ids sort by creation time). */
  before?: string;
  limit: number;
}

/** An offer confirmation waiting to be recorded (see `markOfferPublished`). */
interface Confirmation {
  id: string;
  attempt: number;
  now: number;
  resolve: () => void;
  reject: (error: unknown) => void;
}

export class JobStore {
  private readonly confirmations: Confirmation[] = [];

  constructor(private readonly ctx: StoreContext) {}

  /**
   * Stores a new job with its first attempt and its steps. With a `submitKey` the user already used,
   * nothing is inserted and the job created with that key is returned with `created: false` (two servers
   * racing on one key: the unique index decides).
   */
  async insertJobOnce(job: NewJob): Promise<{ job: JobRecord; created: boolean }> {
    if (job.submitKey) {
      const existing = await this.findJobBySubmitKey(job.user, job.submitKey);
      if (existing) return { job: existing, created: false };
    }
    let row: JobsTable;
    try {
      row = await this.ctx.db.transaction().execute(async (trx) => {
        if (job.tick) await claimTick(trx, { ...job.tick, jobId: job.id });
        const inserted = await insertJobRows(trx, job);
        // New jobs appear in the jobs list streams of every server.
        await this.ctx.changes.notify(trx, job.id);
        return inserted;
      });
    } catch (error) {
      if (job.submitKey && isUniqueViolation(error)) {
        const existing = await this.findJobBySubmitKey(job.user, job.submitKey);
        if (existing) return { job: existing, created: false };
      }
      throw error;
    }
    // The record is the row as inserted: no read after the insert (its offer is not out yet).
    return { job: toJob(row), created: true };
  }

  async getJob(id: string, executor: Executor = this.ctx.db): Promise<JobRecord | undefined> {
    return readJob(executor, id);
  }

  async listJobs(filter: ListJobsFilter): Promise<JobRecord[]> {
    let query = this.ctx.db.selectFrom('jobs').selectAll();
    if (filter.user !== undefined) query = query.where('user_name', '=', filter.user);
    if (filter.state !== undefined) query = query.where('state', '=', filter.state);
    if (filter.workflow !== undefined) query = query.where('workflow_name', '=', filter.workflow);
    if (filter.before !== undefined) query = query.where('id', '<', filter.before);
    const rows = await query.orderBy('id', 'desc').limit(filter.limit).execute();
    return rows.map(toJob);
  }

  /** Ids of `user`'s jobs that have not ended (queued, offered, loading, running), oldest first. */
  async listLiveJobIds(user: string): Promise<string[]> {
    const rows = await this.ctx.db
      .selectFrom('jobs')
      .select('id')
      .where('user_name', '=', user)
      .where('state', 'not in', [...terminalJobStates])
      .orderBy('id')
      .execute();
    return rows.map((row) => row.id);
  }

  /**
   * Moves a job to `to` if the state machine allows it from the state it is in now (and, when `from` is
   * given, only from one of those states). Returns the updated job, or `ok: false` with the current one.
   * See `transitions.ts` for how racing servers are kept apart.
   */
  async transitionJob(
    id: string,
    to: JobState,
    patch: JobPatch = {},
    options: TransitionOptions = {},
  ): Promise<TransitionResult> {
    return this.ctx.db.transaction().execute((trx) => transitionIn(this.ctx, trx, id, to, patch, options));
  }

  /** Marks a loading/running job as cancel-requested; the agent's final event ends it. */
  async requestCancel(id: string, now = this.ctx.clock()): Promise<JobRecord | undefined> {
    return this.ctx.db.transaction().execute(async (trx) => {
      const result = await trx
        .updateTable('jobs')
        .set({ cancel_requested: 1, updated_at: now })
        .where('id', '=', id)
        .where('state', 'in', ['loading', 'running'])
        .executeTakeFirst();
      if (Number(result.numUpdatedRows) === 1) await this.ctx.changes.notify(trx, id);
      return readJob(trx, id);
    });
  }

  /**
   * Records that the bus confirmed the offer of this attempt. Confirmations that arrive in one turn of the
   * event loop (a burst of submits, a batch's offers) are recorded together: one UPDATE per attempt number,
   * each at the latest of their times. Resolves when the write holding this one is done.
   */
  markOfferPublished(id: string, attempt: number, now = this.ctx.clock()): Promise<void> {
    return new Promise((resolve, reject) => {
      this.confirmations.push({ id, attempt, now, resolve, reject });
      if (this.confirmations.length === 1) setImmediate(() => void this.recordConfirmations());
    });
  }

  private async recordConfirmations(): Promise<void> {
    const pending = this.confirmations.splice(0);
    const byAttempt = new Map<number, Confirmation[]>();
    for (const c of pending) byAttempt.set(c.attempt, [...(byAttempt.get(c.attempt) ?? []), c]);
    for (const [attempt, group] of byAttempt) {
      try {
        for (let i = 0; i < group.length; i += 500) {
          const part = group.slice(i, i + 500);
          await this.ctx.db
            .updateTable('jobs')
            .set({ offer_published_at: Math.max(...part.map((c) => c.now)) })
            .where(
              'id',
              'in',
              part.map((c) => c.id),
            )
            .where('attempt', '=', attempt)
            .where('offer_published_at', 'is', null)
            .execute();
        }
        for (const c of group) c.resolve();
      } catch (error) {
        for (const c of group) c.reject(error);
      }
    }
  }

  /**
   * A job with its steps and attempts as of one moment. Read separately, the job row and its steps can come
   * from different commits (PostgreSQL's READ COMMITTED takes a new snapshot per statement; an event batch
   * commits steps and job together), so a reader could see a step `succeeded` under a job still `loading`.
   * Here the three reads share one transaction: REPEATABLE READ and read-only on PostgreSQL (one snapshot
   * for the whole transaction, taken at its first read); on SQLite a transaction holds the one connection,
   * so no write can commit between the reads.
   */
  async getJobDetail(id: string): Promise<JobDetailRecord | undefined> {
    let transaction = this.ctx.db.transaction();
    if (this.ctx.dialect === 'postgres')
      transaction = transaction.setIsolationLevel('repeatable read').setAccessMode('read only');
    return transaction.execute(async (trx) => {
      const job = await readJob(trx, id);
      if (!job) return undefined;
      return { job, steps: await readSteps(trx, id), attempts: await readAttempts(trx, id) };
    });
  }

  /** A job's steps in workflow order. */
  async listSteps(jobId: string, executor: Executor = this.ctx.db): Promise<StepRecord[]> {
    return readSteps(executor, jobId);
  }

  /** The job `user` created with idempotency key `key`, if any. */
  async findJobBySubmitKey(user: string, key: string): Promise<JobRecord | undefined> {
    const row = await this.ctx.db
      .selectFrom('jobs')
      .selectAll()
      .where('user_name', '=', user)
      .where('submit_key', '=', key)
      .executeTakeFirst();
    return row && toJob(row);
  }
}

/** The job's row as its submission stores it (and as the record returned then: no read after the insert). */
export function newJobRow(job: NewJob): JobsTable {
  return {
    id: job.id,
    user_name: job.user,
    workflow_space: job.workflow.space,
    workflow_name: job.workflow.name,
    workflow_version: job.workflow.version,
    workflow_digest: job.workflow.digest,
    params_json: JSON.stringify(job.params),
    labels_json: JSON.stringify(job.labels),
    state: job.offered ? 'offered' : 'queued',
    attempt: 1,
    agent_id: null,
    executor_json: null,
    error_code: null,
    error_message: null,
    timeout_ms: job.timeoutMs,
    job_token_hash: job.jobTokenHash,
    load_deadline: job.loadDeadline ?? null,
    cancel_requested: 0,
    created_at: job.createdAt,
    started_at: null,
    finished_at: null,
    updated_at: job.createdAt,
    retries: job.retries ?? null,
    submit_key: job.submitKey ?? null,
    offer_published_at: null,
    claimed_by: null,
    cluster: job.cluster ?? 'local',
    pinned: 0,
    files_purged_at: null,
    schedule: job.tick?.scheduleId ?? null,
  };
}

/** The first attempt's row of a new job. */
export function firstAttemptRow(job: NewJob): Database['job_attempts'] {
  return {
    job_id: job.id,
    attempt: 1,
    state: job.offered ? 'offered' : 'queued',
    agent_id: null,
    offered_at: job.createdAt,
    started_at: null,
    finished_at: null,
    error_code: null,
    error_message: null,
  };
}

/** A new job's steps, `pending`, in workflow order. */
export function pendingStepRows(job: NewJob): Database['job_steps'][] {
  return job.steps.map((step, position) => ({
    job_id: job.id,
    step_id: step.id,
    kind: step.kind,
    position,
    ...PENDING_STEP,
  }));
}

async function insertJobRows(trx: Transaction<Database>, job: NewJob): Promise<JobsTable> {
  const row = newJobRow(job);
  await trx.insertInto('jobs').values(row).execute();
  await trx.insertInto('job_attempts').values(firstAttemptRow(job)).execute();
  if (job.steps.length > 0) await trx.insertInto('job_steps').values(pendingStepRows(job)).execute();
  return row;
}
