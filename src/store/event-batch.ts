/**
 * An agent's event batch applied in one transaction: `Store.applyEvents(events)`, what the server's event
 * consumer calls for each group commit (and `Store.applyEvent` for one event).
 *
 * Invariants (as for one event at a time, see `events.ts`): every job the batch names is locked before
 * anything of it is read for a change (one `SELECT … FOR UPDATE`, in id order so two servers locking
 * overlapping batches cannot deadlock); each (job, attempt, seq) is recorded in `applied_events` in the same
 * transaction as its effect, and an event seen before (on any server, or earlier in this batch) changes
 * nothing. What it costs: one statement to lock and read the batch's jobs, one to record all its events,
 * then only the events' effects; a job's row is carried from one event of the batch to the next instead of
 * being read again.
 */
import type { Transaction } from 'kysely';
import type { JobEvent } from '../protocol/index.js';
import type { StoreContext } from './context.js';
import type { AppliedEvent } from './events.js';
import type { Database, JobsTable } from './schema.js';

/** Most rows per statement (SQLite allows 32,766 parameters; an `applied_events` row has 4). */
const ROWS_PER_STATEMENT = 1000;

/**
 * Applies one event whose job is locked and whose (job, attempt, seq) was new: returns what it did and the
 * job's row after it (undefined when the row did not change).
 */
export type ApplyLockedEvent = (
  trx: Transaction<Database>,
  event: JobEvent,
  row: JobsTable,
) => Promise<{ applied: AppliedEvent; row?: JobsTable }>;

export async function applyEventBatch(
  ctx: StoreContext,
  trx: Transaction<Database>,
  events: readonly JobEvent[],
  now: number,
  apply: ApplyLockedEvent,
): Promise<AppliedEvent[]> {
  const rows = await lockJobRows(ctx, trx, [...new Set(events.map((event) => event.jobId))]);
  // Events for unknown jobs cannot be recorded (foreign key); they are harmless and dropped.
  const known = events.filter((event) => rows.has(event.jobId));
  const fresh = await recordEvents(trx, known, now);
  const results: AppliedEvent[] = [];
  for (const event of events) {
    const row = rows.get(event.jobId);
    const key = eventKey(event);
    // The first copy of an event takes the record; a second copy in the same batch is a duplicate.
    if (!row || !fresh.delete(key)) {
      results.push({ applied: false });
      continue;
    }
    const outcome = await apply(trx, event, row);
    if (outcome.row) rows.set(event.jobId, outcome.row);
    results.push(outcome.applied);
  }
  return results;
}

/** Reads and (on PostgreSQL) locks the jobs' rows until the transaction ends, in id order. */
async function lockJobRows(
  ctx: StoreContext,
  trx: Transaction<Database>,
  ids: readonly string[],
): Promise<Map<string, JobsTable>> {
  const rows = new Map<string, JobsTable>();
  for (let i = 0; i < ids.length; i += ROWS_PER_STATEMENT) {
    let query = trx
      .selectFrom('jobs')
      .selectAll()
      .where('id', 'in', ids.slice(i, i + ROWS_PER_STATEMENT))
      .orderBy('id');
    if (ctx.dialect === 'postgres') query = query.forUpdate();
    for (const row of await query.execute()) rows.set(row.id, row);
  }
  return rows;
}

/** Records the events in `applied_events`; returns the keys of those recorded now (not seen before). */
async function recordEvents(
  trx: Transaction<Database>,
  events: readonly JobEvent[],
  now: number,
): Promise<Set<string>> {
  const recorded = new Set<string>();
  for (let i = 0; i < events.length; i += ROWS_PER_STATEMENT) {
    const part = events.slice(i, i + ROWS_PER_STATEMENT);
    const inserted = await trx
      .insertInto('applied_events')
      .values(part.map((e) => ({ job_id: e.jobId, attempt: e.attempt, seq: e.seq, applied_at: now })))
      .onConflict((oc) => oc.columns(['job_id', 'attempt', 'seq']).doNothing())
      .returning(['job_id', 'attempt', 'seq'])
      .execute();
    for (const row of inserted) recorded.add(`${row.job_id}\0${row.attempt}\0${row.seq}`);
  }
  return recorded;
}

function eventKey(event: JobEvent): string {
  return `${event.jobId}\0${event.attempt}\0${event.seq}`;
}
