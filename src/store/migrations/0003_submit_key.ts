import type { Kysely } from 'kysely';
import type { StoreDialect } from './index.js';

/**
 * The client's idempotency key of a submission, unique per user: a `POST /api/jobs` retried after its answer
 * was lost (the server died, the connection broke behind a load balancer) finds the job it already created
 * instead of creating a second one. Null for submissions without a key (any number of them).
 */
export async function up(db: Kysely<unknown>, _dialect: StoreDialect): Promise<void> {
  await db.schema.alterTable('jobs').addColumn('submit_key', 'text').execute();
  await db.schema
    .createIndex('jobs_user_submit_key')
    .unique()
    .on('jobs')
    .columns(['user_name', 'submit_key'])
    .execute();
}
