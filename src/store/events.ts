/**
 * Agents' job events (state and step reports), applied exactly once.
 *
 * Invariant: `applyEventIn` locks the job's row first (`lockJobRow`) and records (job, attempt, seq) in
 * `applied_events` in the same transaction as the event's effect. A duplicate delivery, on this server or
 * another one, waits for the lock, finds the record and changes nothing. Events of an older attempt only
 * count as seen; events from an agent other than the one holding the attempt's claim are recorded and not
 * applied. State events move the job through `transitionIn` (the one path for state changes); step events
 * upsert the step's row. Every change is announced (`ChangeNotifier`) in the same transaction.
 */
import type { Transaction } from 'kysely';
import {
  isTerminal,
  type JobEvent,
  type JobState,
  type JobStateEvent,
  type JobStepEvent,
} from '../protocol/index.js';
import type { StoreContext } from './context.js';
import { applyEventBatch } from './event-batch.js';
import { toJob, toStep, type JobRecord, type StepRecord } from './job-records.js';
import type { Database, JobsTable } from './schema.js';
import { transitionRowIn, type JobPatch } from './transitions.js';

export interface AppliedEvent {
  /** False when (jobId, attempt, seq) was seen before: nothing changed. */
  applied: boolean;
  /** The job after the event, when the event changed it. */
  job?: JobRecord;
  /** The state the job left, when the event moved it to another state (metrics observe transitions). */
  from?: JobState;
  /** The step after the event, for step events. */
  step?: StepRecord;
  /**
   * Set when the event was recorded as seen but not applied because another agent holds the attempt's
   * claim: the agent holding it.
   */
  claimedBy?: string;
}

type StepRow = Database['job_steps'];
/** The columns a step event sets. */
type StepValues = Pick<
  StepRow,
  'state' | 'started_at' | 'finished_at' | 'duration_ms' | 'rows' | 'progress' | 'message'
>;

export class EventStore {
  constructor(private readonly ctx: StoreContext) {}

  /**
   * Applies an agent event exactly once per (jobId, attempt, seq). State events move the job when the state
   * machine allows it (late or reordered events that cannot apply are recorded and skipped); events of an
   * older attempt only count as seen. Step events upsert the step row.
   */
  async applyEvent(event: JobEvent, now = this.ctx.clock()): Promise<AppliedEvent> {
    return (await this.applyEvents([event], now))[0]!;
  }

  /**
   * Applies several events in one transaction, in the given order (a group commit: one fsync for all; see
   * `event-batch.ts` for how the batch's jobs are locked and its events recorded). Each event is applied
   * exactly as `applyEvent` would; all of them are durable when this resolves, and none is if it rejects.
   */
  async applyEvents(events: readonly JobEvent[], now = this.ctx.clock()): Promise<AppliedEvent[]> {
    if (events.length === 0) return [];
    return this.ctx.db
      .transaction()
      .execute((trx) =>
        applyEventBatch(this.ctx, trx, events, now, (t, event, row) => this.applyLocked(t, event, row, now)),
      );
  }

  /** Applies a new event of a locked job when it is of the current attempt and from the claim's agent. */
  private async applyLocked(
    trx: Transaction<Database>,
    event: JobEvent,
    jobRow: JobsTable,
    now: number,
  ): Promise<{ applied: AppliedEvent; row?: JobsTable }> {
    const job = toJob(jobRow);
    if (event.attempt !== job.attempt) return { applied: { applied: true } };
    // Only the agent holding the attempt's claim may report on it. Before any claim (an agent reports
    // `loading` before its executor fetches) every agent's events apply as before.
    if (job.claimedBy !== null && event.agentId !== job.claimedBy)
      return { applied: { applied: true, claimedBy: job.claimedBy } };
    return event.type === 'state'
      ? this.applyStateEvent(trx, event, job, jobRow, now)
      : this.applyStepEvent(trx, event, job, jobRow, now);
  }

  /**
   * A state event of the current attempt: the same state again may bring the executor's identity; another
   * state is a transition (one the state machine refuses is skipped).
   */
  private async applyStateEvent(
    trx: Transaction<Database>,
    event: JobStateEvent,
    job: JobRecord,
    jobRow: JobsTable,
    now: number,
  ): Promise<{ applied: AppliedEvent; row?: JobsTable }> {
    if (event.state === job.state) {
      // `loading` again with no claim yet (the first came from an agent of an earlier version): it claims.
      const claim = event.state === 'loading' && job.claimedBy === null;
      if (!event.executor && !claim) return { applied: { applied: true } };
      const values = {
        ...(event.executor ? { executor_json: JSON.stringify(event.executor) } : {}),
        ...(claim ? { claimed_by: event.agentId, agent_id: event.agentId } : {}),
        updated_at: now,
      };
      await trx.updateTable('jobs').set(values).where('id', '=', job.id).execute();
      await this.ctx.changes.notify(trx, job.id);
      // The row as locked with the new values: nobody else can have changed it.
      const row = { ...jobRow, ...values };
      return { applied: { applied: true, job: toJob(row) }, row };
    }
    const options = { attempt: event.attempt, now };
    const firstStep =
      event.state === 'running'
        ? await trx
            .selectFrom('job_steps')
            .select((eb) => eb.fn.min('started_at').as('first'))
            .where('job_id', '=', job.id)
            .executeTakeFirst()
        : undefined;
    const firstStepAt =
      firstStep?.first === null || firstStep?.first === undefined ? null : Number(firstStep.first);
    const result = await transitionRowIn(
      this.ctx,
      trx,
      job.id,
      event.state,
      patchOf(event, job, firstStepAt),
      options,
      jobRow,
    );
    return result.ok
      ? { applied: { applied: true, job: result.job, from: job.state }, row: result.row }
      : { applied: { applied: true } };
  }

  /** A step event of the current attempt: upserts the step's row (a step the job did not list is added). */
  private async applyStepEvent(
    trx: Transaction<Database>,
    event: JobStepEvent,
    job: JobRecord,
    jobRow: JobsTable,
    now: number,
  ): Promise<{ applied: AppliedEvent; row?: JobsTable }> {
    let step = event.step;
    const existing = await trx
      .selectFrom('job_steps')
      .selectAll()
      .where('job_id', '=', job.id)
      .where('step_id', '=', step.stepId)
      .executeTakeFirst();
    // A step never goes back: once it (or its job) ended, a late `running` or `pending` report is stale.
    const reopens = step.state === 'running' || step.state === 'pending';
    if (reopens && existing !== undefined && (isTerminal(job.state) || isStepEnded(existing.state)))
      return { applied: { applied: true } };
    // A step the job did not list, first reported after the job ended (events applied out of order): it is
    // recorded, closed as the job's end closes steps.
    if (reopens && existing === undefined && isTerminal(job.state))
      step = {
        ...step,
        state: step.state === 'pending' ? 'skipped' : job.state === 'canceled' ? 'canceled' : 'failed',
        message: step.message ?? `the job ended ${job.state} while this step was running`,
      };
    const values = stepValues(step, existing);
    if (existing) {
      await trx
        .updateTable('job_steps')
        .set(values)
        .where('job_id', '=', job.id)
        .where('step_id', '=', step.stepId)
        .execute();
    } else await insertUnlistedStep(trx, job.id, step.stepId, values);
    // The job started no later than its first step: the agent stamps `running` after the executor said
    // `loaded`, and a quick step may start (and end) before that stamp.
    const stepStart = values.started_at;
    const startedAt =
      stepStart !== null && job.startedAt !== null && stepStart < job.startedAt ? stepStart : undefined;
    const jobValues = { updated_at: now, ...(startedAt !== undefined ? { started_at: startedAt } : {}) };
    // Skipped when an earlier event of this batch already left the job at these values.
    const changed = jobRow.updated_at !== now || startedAt !== undefined;
    if (changed) await trx.updateTable('jobs').set(jobValues).where('id', '=', job.id).execute();
    // An updated step is the row read above with the new values (the job's lock keeps others out).
    const row = existing
      ? { ...existing, ...values }
      : await trx
          .selectFrom('job_steps')
          .selectAll()
          .where('job_id', '=', job.id)
          .where('step_id', '=', step.stepId)
          .executeTakeFirstOrThrow();
    await this.ctx.changes.notify(trx, job.id, step.stepId);
    return {
      applied: { applied: true, step: toStep(row) },
      ...(changed ? { row: { ...jobRow, ...jobValues } } : {}),
    };
  }
}

function isStepEnded(state: string): boolean {
  return state !== 'running' && state !== 'pending';
}

/** What a state event changes along with the state. */
function patchOf(event: JobStateEvent, job: JobRecord, firstStepAt: number | null): JobPatch {
  const patch: JobPatch = { agentId: event.agentId };
  if (event.executor) patch.executor = event.executor;
  if (event.error) patch.error = event.error;
  // An offer handed back after an executor loss carries that error; a later delivery that gets further
  // must not keep showing it.
  else if (event.state === 'loading' || event.state === 'running' || event.state === 'succeeded')
    patch.error = null;
  if (event.state === 'running' && job.startedAt === null)
    patch.startedAt = firstStepAt !== null && firstStepAt < event.time ? firstStepAt : event.time;
  if (isTerminal(event.state)) patch.finishedAt = event.time;
  // The claim's agent handed the offer back before loading it (its executor died): the attempt is
  // free again for whichever agent the bus gives the offer to next.
  if (event.state === 'offered') patch.claimedBy = null;
  // The first applied `loading` of the attempt claims it for its agent (see docs/architecture.md, "Claims"):
  // in the same statement as the state, so a claim costs nothing of its own.
  else if (event.state === 'loading' && job.claimedBy === null) patch.claimedBy = event.agentId;
  return patch;
}

/** The step's row after the event: what the event reports, else what was stored, else derived. */
function stepValues(step: JobStepEvent['step'], existing: StepRow | undefined): StepValues {
  const startedAt =
    step.state === 'running' ? (existing?.started_at ?? step.time) : (existing?.started_at ?? null);
  const finished = step.state !== 'running' && step.state !== 'pending';
  return {
    state: step.state,
    started_at: startedAt,
    finished_at: finished ? step.time : (existing?.finished_at ?? null),
    duration_ms:
      step.durationMs ??
      (finished && startedAt !== null ? step.time - startedAt : (existing?.duration_ms ?? null)),
    rows: step.rows ?? existing?.rows ?? null,
    progress: step.progress ?? (step.state === 'succeeded' ? 1 : (existing?.progress ?? null)),
    message: step.message ?? step.error?.message ?? existing?.message ?? null,
  };
}

/** A step the job's workflow did not list (kind unknown), placed after the known ones. */
async function insertUnlistedStep(
  trx: Transaction<Database>,
  jobId: string,
  stepId: string,
  values: StepValues,
): Promise<void> {
  const position = await trx
    .selectFrom('job_steps')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('job_id', '=', jobId)
    .executeTakeFirstOrThrow();
  await trx
    .insertInto('job_steps')
    .values({ job_id: jobId, step_id: stepId, kind: 'unknown', position: Number(position.n), ...values })
    .execute();
}
