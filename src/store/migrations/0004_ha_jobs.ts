import { sql, type Kysely } from 'kysely';
import type { StoreDialect } from './index.js';

/**
 * Jobs for several servers.
 *
 * `submit_key`: the client's idempotency key of a submission, unique per user: a `POST /api/jobs` retried after its answer
 * was lost (the server died, the connection broke behind a load balancer) finds the job it already created
 * instead of creating a second one. Null for submissions without a key (any number of them).
 *
 * `offer_published_at`: when the bus confirmed the current attempt's offer. A job `offered` without it for
 * long was left by a server that died between recording the offer and publishing it; another server offers
 * it again (as a new attempt, since the first offer may have gone out after all).
 */
export async function up(db: Kysely<unknown>, _dialect: StoreDialect): Promise<void> {
  await db.schema.alterTable('jobs').addColumn('submit_key', 'text').execute();
  await db.schema.alterTable('jobs').addColumn('offer_published_at', 'bigint').execute();
  // Offers of jobs that exist already went out under the old code (it failed the job when publishing did
  // not): count them as published, or the first sweep would offer them all again.
  await sql`UPDATE jobs SET offer_published_at = updated_at WHERE state <> 'queued'`.execute(db);
  await db.schema
    .createIndex('jobs_user_submit_key')
    .unique()
    .on('jobs')
    .columns(['user_name', 'submit_key'])
    .execute();
}
