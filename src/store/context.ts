/**
 * What every store module shares: the database, its dialect, the clock and the change notifier. `Store`
 * builds one context when it opens and hands it to each aggregate's module (users, tokens, workflows, jobs,
 * events, …); the modules hold no connection or state of their own beyond caches of immutable rows.
 *
 * Invariant kept here: a job's row is read for a change only through `lockJobRow`, which on PostgreSQL
 * locks it (`SELECT … FOR UPDATE`) until the transaction ends. Two servers changing one job (a transition,
 * an event, a retry) take turns instead of working from a stale read. SQLite needs no row lock: its write
 * transactions are serialized by the database lock.
 */
import type { Kysely, Transaction } from 'kysely';
import type { ChangeNotifier } from './changes.js';
import type { StoreDialect } from './migrations/index.js';
import type { Database, JobsTable } from './schema.js';

export type Db = Kysely<Database>;
/** The database or a transaction on it: reads that may run inside a caller's transaction take either. */
export type Executor = Db | Transaction<Database>;
/** Epoch milliseconds now. */
export type Clock = () => number;

export interface StoreContext {
  readonly db: Db;
  readonly dialect: StoreDialect;
  /**
   * The store's time: the default for every time argument a caller leaves out, and what token expiry is
   * judged against. `Date.now` unless a test injects its own.
   */
  readonly clock: Clock;
  /** Announces committed job and step changes to the other servers (a no-op on SQLite). */
  readonly changes: ChangeNotifier;
}

/** Reads a job's row inside `trx`, locking it on PostgreSQL until the transaction ends (see above). */
export async function lockJobRow(
  ctx: StoreContext,
  trx: Transaction<Database>,
  id: string,
): Promise<JobsTable | undefined> {
  let query = trx.selectFrom('jobs').selectAll().where('id', '=', id);
  if (ctx.dialect === 'postgres') query = query.forUpdate();
  return query.executeTakeFirst();
}

/** Whether a failed insert collided with a primary key or unique index (PostgreSQL or SQLite). */
export function isUniqueViolation(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === '23505' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY' || code === 'SQLITE_CONSTRAINT_UNIQUE';
}

/** How many rows an insert with `ON CONFLICT DO NOTHING` wrote (0 or 1 for one row). */
export function insertedRows(result: { numInsertedOrUpdatedRows?: bigint }): number {
  return Number(result.numInsertedOrUpdatedRows ?? 0n);
}
