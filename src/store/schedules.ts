/**
 * Schedules: their rows, and the one way a tick is handled (`claimTick`). A tick is claimed by a conditional
 * UPDATE that moves `next_due_at` (and `queued_due_at`) from the values the claimer read to the ones it
 * computed: of several servers reading the same row, exactly one UPDATE matches. The claim runs in the
 * transaction that inserts the tick's job (`jobs.ts`), so a tick is never fired twice nor lost by a crash
 * between the two. When a tick fires no job (skipped, or the owner lacks access) the claim runs alone.
 */
import type { Transaction } from 'kysely';
import { terminalJobStates, type ParamValue } from '../protocol/index.js';
import { isUniqueViolation, type StoreContext } from './context.js';
import type { Database, SchedulesTable } from './schema.js';

export type MisfirePolicy = SchedulesTable['misfire'];
export type OverlapPolicy = SchedulesTable['overlap'];

export interface ScheduleRecord {
  id: string;
  owner: string;
  name: string;
  workflow: string;
  params: Record<string, ParamValue>;
  labels: string[];
  cron: string;
  timeZone: string;
  misfire: MisfirePolicy;
  overlap: OverlapPolicy;
  paused: boolean;
  pausedReason: string | null;
  nextDueAt: number | null;
  queuedDueAt: number | null;
  lastFiredAt: number | null;
  lastJobId: string | null;
  lastError: { code: string; message: string } | null;
  createdAt: number;
  updatedAt: number;
}

export type NewSchedule = Pick<
  ScheduleRecord,
  | 'id'
  | 'owner'
  | 'name'
  | 'workflow'
  | 'params'
  | 'labels'
  | 'cron'
  | 'timeZone'
  | 'misfire'
  | 'overlap'
  | 'nextDueAt'
  | 'createdAt'
>;

/**
 * Moves a schedule's pending ticks from `from` (as read) to `to`. With a `jobId` the tick fired that job;
 * with an `error` it failed to fire for that reason.
 */
export interface TickClaim {
  scheduleId: string;
  from: { nextDueAt: number | null; queuedDueAt: number | null };
  to: { nextDueAt: number | null; queuedDueAt: number | null };
  jobId?: string;
  error?: { code: string; message: string };
  time: number;
}

/** Another server (or an earlier pass) handled the tick first, or the schedule was paused or deleted. */
export class TickTakenError extends Error {
  constructor(readonly scheduleId: string) {
    super(`the tick of schedule ${scheduleId} was already handled`);
    this.name = 'TickTakenError';
  }
}

export function toSchedule(row: SchedulesTable): ScheduleRecord {
  return {
    id: row.id,
    owner: row.owner,
    name: row.name,
    workflow: row.workflow_ref,
    params: JSON.parse(row.params_json) as Record<string, ParamValue>,
    labels: JSON.parse(row.labels_json) as string[],
    cron: row.cron,
    timeZone: row.time_zone,
    misfire: row.misfire,
    overlap: row.overlap,
    paused: row.paused === 1,
    pausedReason: row.paused_reason,
    nextDueAt: row.next_due_at === null ? null : Number(row.next_due_at),
    queuedDueAt: row.queued_due_at === null ? null : Number(row.queued_due_at),
    lastFiredAt: row.last_fired_at === null ? null : Number(row.last_fired_at),
    lastJobId: row.last_job_id,
    lastError:
      row.last_error_code === null
        ? null
        : { code: row.last_error_code, message: row.last_error_message ?? '' },
    createdAt: Number(row.created_at),
    updatedAt: Number(row.updated_at),
  };
}

/** Applies `claim` inside `trx`; throws TickTakenError unless this call moved the row. */
export async function claimTick(trx: Transaction<Database>, claim: TickClaim): Promise<void> {
  const fired = claim.jobId !== undefined;
  let query = trx
    .updateTable('schedules')
    .set({
      next_due_at: claim.to.nextDueAt,
      queued_due_at: claim.to.queuedDueAt,
      updated_at: claim.time,
      ...(fired ? { last_fired_at: claim.time, last_job_id: claim.jobId } : {}),
      ...(fired || claim.error
        ? { last_error_code: claim.error?.code ?? null, last_error_message: claim.error?.message ?? null }
        : {}),
    })
    .where('id', '=', claim.scheduleId)
    .where('paused', '=', 0);
  query =
    claim.from.nextDueAt === null
      ? query.where('next_due_at', 'is', null)
      : query.where('next_due_at', '=', claim.from.nextDueAt);
  query =
    claim.from.queuedDueAt === null
      ? query.where('queued_due_at', 'is', null)
      : query.where('queued_due_at', '=', claim.from.queuedDueAt);
  const result = await query.executeTakeFirst();
  if (Number(result.numUpdatedRows) !== 1) throw new TickTakenError(claim.scheduleId);
}

export class ScheduleStore {
  constructor(private readonly ctx: StoreContext) {}

  /** Returns false when the owner already has a schedule of that name. */
  async createSchedule(schedule: NewSchedule): Promise<boolean> {
    try {
      await this.ctx.db
        .insertInto('schedules')
        .values({
          id: schedule.id,
          owner: schedule.owner,
          name: schedule.name,
          workflow_ref: schedule.workflow,
          params_json: JSON.stringify(schedule.params),
          labels_json: JSON.stringify(schedule.labels),
          cron: schedule.cron,
          time_zone: schedule.timeZone,
          misfire: schedule.misfire,
          overlap: schedule.overlap,
          paused: 0,
          paused_reason: null,
          next_due_at: schedule.nextDueAt,
          queued_due_at: null,
          last_fired_at: null,
          last_job_id: null,
          last_error_code: null,
          last_error_message: null,
          created_at: schedule.createdAt,
          updated_at: schedule.createdAt,
        })
        .execute();
      return true;
    } catch (error) {
      if (isUniqueViolation(error)) return false;
      throw error;
    }
  }

  async getSchedule(id: string): Promise<ScheduleRecord | undefined> {
    const row = await this.ctx.db.selectFrom('schedules').selectAll().where('id', '=', id).executeTakeFirst();
    return row && toSchedule(row);
  }

  async findScheduleByName(owner: string, name: string): Promise<ScheduleRecord | undefined> {
    const row = await this.ctx.db
      .selectFrom('schedules')
      .selectAll()
      .where('owner', '=', owner)
      .where('name', '=', name)
      .executeTakeFirst();
    return row && toSchedule(row);
  }

  /** One owner's schedules, or every schedule; by owner and name. */
  async listSchedules(owner?: string): Promise<ScheduleRecord[]> {
    let query = this.ctx.db.selectFrom('schedules').selectAll();
    if (owner !== undefined) query = query.where('owner', '=', owner);
    const rows = await query.orderBy('owner').orderBy('name').limit(10_000).execute();
    return rows.map(toSchedule);
  }

  /**
   * Active schedules with a tick due at `now` or one held by the `queue` overlap policy, most overdue
   * first, at most `limit`.
   */
  async listDueSchedules(now: number, limit = 100): Promise<ScheduleRecord[]> {
    const rows = await this.ctx.db
      .selectFrom('schedules')
      .selectAll()
      .where('paused', '=', 0)
      .where((eb) => eb.or([eb('next_due_at', '<=', now), eb('queued_due_at', 'is not', null)]))
      .orderBy('next_due_at')
      .limit(limit)
      .execute();
    return rows.map(toSchedule);
  }

  /** The earliest `next_due_at` of an active schedule: when the scheduler has work next. */
  async nextDueAt(): Promise<number | null> {
    const row = await this.ctx.db
      .selectFrom('schedules')
      .select((eb) => eb.fn.min('next_due_at').as('next'))
      .where('paused', '=', 0)
      .executeTakeFirst();
    return row?.next === null || row?.next === undefined ? null : Number(row.next);
  }

  /** Handles a tick that fires no job (see `TickClaim`); false when another claim came first. */
  async settleTick(claim: TickClaim): Promise<boolean> {
    try {
      await this.ctx.db.transaction().execute((trx) => claimTick(trx, claim));
      return true;
    } catch (error) {
      if (error instanceof TickTakenError) return false;
      throw error;
    }
  }

  /**
   * Pauses (with a reason) or resumes a schedule. Resuming sets the next tick to `nextDueAt` (computed
   * from now: ticks missed while paused are not fired) and drops a held tick.
   */
  async setSchedulePaused(
    id: string,
    change: { paused: true; reason: string } | { paused: false; nextDueAt: number | null },
    now = this.ctx.clock(),
  ): Promise<ScheduleRecord | undefined> {
    await this.ctx.db
      .updateTable('schedules')
      .set(
        // `in`, not the flag: the durability test compiles the store without strict null checks, where a
        // boolean discriminant does not narrow.
        'reason' in change
          ? { paused: 1, paused_reason: change.reason, queued_due_at: null, updated_at: now }
          : {
              paused: 0,
              paused_reason: null,
              next_due_at: change.nextDueAt,
              queued_due_at: null,
              updated_at: now,
            },
      )
      .where('id', '=', id)
      .execute();
    return this.getSchedule(id);
  }

  /** Pauses every active schedule of `owner`; returns the ids it paused. */
  async pauseSchedulesOf(owner: string, reason: string, now = this.ctx.clock()): Promise<string[]> {
    const rows = await this.ctx.db
      .updateTable('schedules')
      .set({ paused: 1, paused_reason: reason, queued_due_at: null, updated_at: now })
      .where('owner', '=', owner)
      .where('paused', '=', 0)
      .returning('id')
      .execute();
    return rows.map((row) => row.id).sort();
  }

  async deleteSchedule(id: string): Promise<boolean> {
    const result = await this.ctx.db.deleteFrom('schedules').where('id', '=', id).executeTakeFirst();
    return Number(result.numDeletedRows) === 1;
  }

  /** Whether a job this schedule fired has not ended yet (the overlap policies' question). */
  async hasLiveJob(scheduleId: string): Promise<boolean> {
    const row = await this.ctx.db
      .selectFrom('jobs')
      .select('id')
      .where('schedule', '=', scheduleId)
      .where('state', 'not in', [...terminalJobStates])
      .limit(1)
      .executeTakeFirst();
    return row !== undefined;
  }
}
