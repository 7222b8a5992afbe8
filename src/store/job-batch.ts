/**
 * A batch of submitted jobs stored in one transaction (`POST /api/jobs/batch`): their rows, first attempts,
 * steps and audit entries as multi-row inserts, and one change notice for all. A job whose idempotency key
 * its user already used is not inserted again: the job stored with that key is returned (`created: false`).
 * Two servers racing on one key: the unique index fails this transaction, and the batch is stored job by
 * job instead (`JobStore.insertJobOnce` decides each).
 */
import type { Transaction } from 'kysely';
import { insertAuditRows, type NewAuditRecord } from './audit.js';
import { isUniqueViolation, type StoreContext } from './context.js';
import { toJob, type JobRecord } from './job-records.js';
import { firstAttemptRow, newJobRow, pendingStepRows, type JobStore, type NewJob } from './jobs.js';
import type { Database, JobsTable } from './schema.js';

/** Rows per INSERT: a job row has 30 columns, and SQLite allows 32,766 parameters per statement. */
const ROWS_PER_INSERT = 500;

export interface BatchJob {
  job: NewJob;
  /** Written with the job, in its transaction; not written when the job existed already. */
  audit?: NewAuditRecord;
}

export interface StoredBatchJob {
  job: JobRecord;
  /** False: the user's idempotency key named a job stored before (which is returned). */
  created: boolean;
}

export async function insertJobBatch(
  ctx: StoreContext,
  jobs: JobStore,
  batch: readonly BatchJob[],
): Promise<StoredBatchJob[]> {
  if (batch.length === 0) return [];
  if (batch.some(({ job }) => job.tick)) throw new Error('a scheduled job is stored on its own');
  const existing = await existingByKey(ctx, batch);
  const fresh = batch.filter(({ job }) => !existing.has(keyOf(job)));
  try {
    await ctx.db.transaction().execute((trx) => insertRows(ctx, trx, fresh));
  } catch (error) {
    if (!isUniqueViolation(error) || !batch.some(({ job }) => job.submitKey)) throw error;
    return insertOneByOne(ctx, jobs, batch);
  }
  return batch.map(({ job }) => {
    const found = existing.get(keyOf(job));
    return found ? { job: found, created: false } : { job: toJob(newJobRow(job)), created: true };
  });
}

async function insertRows(
  ctx: StoreContext,
  trx: Transaction<Database>,
  batch: readonly BatchJob[],
): Promise<void> {
  const jobRows: JobsTable[] = batch.map(({ job }) => newJobRow(job));
  for (const rows of chunks(jobRows)) await trx.insertInto('jobs').values(rows).execute();
  for (const rows of chunks(batch.map(({ job }) => firstAttemptRow(job))))
    await trx.insertInto('job_attempts').values(rows).execute();
  for (const rows of chunks(batch.flatMap(({ job }) => pendingStepRows(job))))
    await trx.insertInto('job_steps').values(rows).execute();
  const audit = batch.flatMap(({ audit }) => (audit ? [audit] : []));
  for (const rows of chunks(audit)) await insertAuditRows(trx, rows);
  await ctx.changes.notifyMany(
    trx,
    batch.map(({ job }) => job.id),
  );
}

/** The jobs already stored under the batch's idempotency keys, by `user \0 key`. */
async function existingByKey(ctx: StoreContext, batch: readonly BatchJob[]): Promise<Map<string, JobRecord>> {
  const found = new Map<string, JobRecord>();
  const keysByUser = new Map<string, string[]>();
  for (const { job } of batch)
    if (job.submitKey) keysByUser.set(job.user, [...(keysByUser.get(job.user) ?? []), job.submitKey]);
  for (const [user, keys] of keysByUser)
    for (const part of chunks(keys)) {
      const rows = await ctx.db
        .selectFrom('jobs')
        .selectAll()
        .where('user_name', '=', user)
        .where('submit_key', 'in', part)
        .execute();
      for (const row of rows) found.set(`${user}\0${row.submit_key}`, toJob(row));
    }
  return found;
}

function keyOf(job: NewJob): string {
  return job.submitKey ? `${job.user}\0${job.submitKey}` : '';
}

async function insertOneByOne(
  ctx: StoreContext,
  jobs: JobStore,
  batch: readonly BatchJob[],
): Promise<StoredBatchJob[]> {
  const stored: StoredBatchJob[] = [];
  for (const { job, audit } of batch) {
    const result = await jobs.insertJobOnce(job);
    if (result.created && audit) await insertAuditRows(ctx.db, [audit]);
    stored.push(result);
  }
  return stored;
}

function chunks<T>(items: readonly T[]): T[][] {
  const parts: T[][] = [];
  for (let i = 0; i < items.length; i += ROWS_PER_INSERT) parts.push(items.slice(i, i + ROWS_PER_INSERT));
  return parts;
}
