/**
 * Retention of ended jobs (the sweep itself is the server's: server/retention.ts). Two steps per job, each
 * a conditional write that re-checks `pinned` in the database, so a job pinned while a sweep runs is kept:
 * - its files expire: `markFilesPurged` records `files_purged_at` and drops the rows that describe the files
 *   (results, inputs); the server removes the files after that commit;
 * - its record expires: `deleteRecords` removes the job with its steps, attempts and applied events.
 * Candidates are read oldest first from `jobs_finished` (migration 0015), a bounded batch at a time.
 */
import { sql } from 'kysely';
import { terminalJobStates } from '../protocol/index.js';
import { readJob, type JobRecord } from './job-records.js';
import type { StoreContext } from './context.js';

/** Jobs that ended before `finishedBefore`, in the given spaces only, or outside the excepted ones. */
export interface ExpiryRule {
  finishedBefore: number;
  /** Only jobs of this space (a per-space override). */
  space?: string;
  /** Jobs of every space but these (the default rule, minus the overridden spaces). */
  exceptSpaces?: readonly string[];
}

export interface ExpiredJob {
  id: string;
  user: string;
  space: string;
  finishedAt: number;
  /** Whether its files were removed already (always false for a files sweep). */
  filesPurged: boolean;
}

const ENDED = [...terminalJobStates];

export class RetentionStore {
  constructor(private readonly ctx: StoreContext) {}

  /**
   * Up to `limit` unpinned ended jobs matching any rule whose files (`files`) or records (`records`) are
   * due, oldest end first.
   */
  async listExpired(
    what: 'files' | 'records',
    rules: readonly ExpiryRule[],
    limit: number,
  ): Promise<ExpiredJob[]> {
    const found: ExpiredJob[] = [];
    for (const rule of rules) {
      let query = this.ctx.db
        .selectFrom('jobs')
        .select(['id', 'user_name', 'workflow_space', 'finished_at', 'files_purged_at'])
        .where('finished_at', '<', rule.finishedBefore)
        .where('pinned', '=', 0)
        .where('state', 'in', ENDED);
      if (what === 'files') query = query.where('files_purged_at', 'is', null);
      if (rule.space !== undefined) query = query.where('workflow_space', '=', rule.space);
      if (rule.exceptSpaces !== undefined && rule.exceptSpaces.length > 0)
        query = query.where('workflow_space', 'not in', [...rule.exceptSpaces]);
      const rows = await query.orderBy('finished_at').orderBy('id').limit(limit).execute();
      for (const row of rows)
        found.push({
          id: row.id,
          user: row.user_name,
          space: row.workflow_space,
          finishedAt: Number(row.finished_at),
          filesPurged: row.files_purged_at !== null,
        });
    }
    return found
      .sort((a, b) => a.finishedAt - b.finishedAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
      .slice(0, limit);
  }

  /**
   * Records that these jobs' files are gone (unless pinned meanwhile or already recorded) and drops their
   * result and input rows; returns the ids it marked, whose files the caller then removes.
   */
  async markFilesPurged(ids: readonly string[], now = this.ctx.clock()): Promise<string[]> {
    if (ids.length === 0) return [];
    return this.ctx.db.transaction().execute(async (trx) => {
      const marked = await trx
        .updateTable('jobs')
        .set({ files_purged_at: now })
        .where('id', 'in', [...ids])
        .where('pinned', '=', 0)
        .where('files_purged_at', 'is', null)
        .returning('id')
        .execute();
      const markedIds = marked.map((row) => row.id);
      if (markedIds.length > 0) {
        await trx.deleteFrom('results').where('job_id', 'in', markedIds).execute();
        await trx.deleteFrom('job_inputs').where('job_id', 'in', markedIds).execute();
      }
      return markedIds;
    });
  }

  /** Deletes these jobs' records (unless pinned meanwhile) with everything that hangs off them. */
  async deleteRecords(ids: readonly string[]): Promise<string[]> {
    if (ids.length === 0) return [];
    return this.ctx.db.transaction().execute(async (trx) => {
      let locked = trx
        .selectFrom('jobs')
        .select('id')
        .where('id', 'in', [...ids])
        .where('pinned', '=', 0);
      if (this.ctx.dialect === 'postgres') locked = locked.forUpdate();
      const doomed = (await locked.execute()).map((row) => row.id);
      if (doomed.length === 0) return [];
      for (const table of ['job_steps', 'applied_events', 'results', 'job_attempts', 'job_inputs'] as const)
        await trx.deleteFrom(table).where('job_id', 'in', doomed).execute();
      await trx.deleteFrom('jobs').where('id', 'in', doomed).execute();
      return doomed;
    });
  }

  /** Pins or unpins a job; the job after the change, or undefined when there is none. */
  async setPinned(id: string, pinned: boolean): Promise<JobRecord | undefined> {
    await this.ctx.db
      .updateTable('jobs')
      .set({ pinned: pinned ? 1 : 0 })
      .where('id', '=', id)
      .execute();
    return readJob(this.ctx.db, id);
  }

  /**
   * Runs `sweep` unless another server runs it now (PostgreSQL: a session advisory lock named after the
   * schema, held on one connection for the sweep's duration and released with it, also when the server
   * dies). SQLite has one server only. Resolves `{ran: false}` when another server holds the lock.
   */
  async exclusively<T>(sweep: () => Promise<T>): Promise<{ ran: true; value: T } | { ran: false }> {
    if (this.ctx.dialect !== 'postgres') return { ran: true, value: await sweep() };
    return this.ctx.db.connection().execute(async (connection) => {
      const key = sql`hashtext(current_schema() || '.steward_retention_sweep')`;
      const { rows } = await sql<{ got: boolean }>`SELECT pg_try_advisory_lock(${key}) AS got`.execute(
        connection,
      );
      if (rows[0]?.got !== true) return { ran: false as const };
      try {
        return { ran: true as const, value: await sweep() };
      } finally {
        await sql`SELECT pg_advisory_unlock(${key})`.execute(connection);
      }
    });
  }
}
