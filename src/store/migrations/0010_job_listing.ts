import type { Kysely } from 'kysely';
import type { StoreDialect } from './index.js';

/**
 * Indexes for paged listings, newest first (store/listings.ts): every jobs page is one range of
 * (created_at, id) — per user for users, across users for admins — so a page costs the same on page 1 and
 * page 500, with 100 jobs or 10 million. `audit_target` serves the audit log's new `target` filter.
 */
export async function up(db: Kysely<unknown>, _dialect: StoreDialect): Promise<void> {
  await db.schema.createIndex('jobs_created').on('jobs').columns(['created_at', 'id']).execute();
  await db.schema
    .createIndex('jobs_user_created')
    .on('jobs')
    .columns(['user_name', 'created_at', 'id'])
    .execute();
  await db.schema.createIndex('audit_target').on('audit').columns(['target', 'id']).execute();
}
