import type { Kysely } from 'kysely';
import type { StoreDialect } from './index.js';

/**
 * Retention of ended jobs (server/retention.ts):
 * - `jobs.pinned`: 1 keeps the job, its files and its record, whatever the retention settings;
 * - `jobs.files_purged_at`: when the sweep removed the job's result files, logs and inputs (null while they
 *   are kept): the record says so instead of pointing at files that are gone;
 * - index `jobs_finished` (finished_at, id): the sweep's batches are ranges of it, oldest first, so a sweep
 *   costs the jobs it removes, not the table's size.
 */
export async function up(db: Kysely<unknown>, _dialect: StoreDialect): Promise<void> {
  await db.schema
    .alterTable('jobs')
    .addColumn('pinned', 'integer', (c) => c.notNull().defaultTo(0))
    .execute();
  await db.schema.alterTable('jobs').addColumn('files_purged_at', 'bigint').execute();
  await db.schema.createIndex('jobs_finished').on('jobs').columns(['finished_at', 'id']).execute();
}
