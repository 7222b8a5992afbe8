import type { Kysely } from 'kysely';
import type { StoreDialect } from './index.js';

/**
 * Failed logins, for the login throttle (server/throttle.ts). In the database rather than in each server's
 * memory so that several servers on one PostgreSQL database throttle together: guesses spread over the
 * servers of an HA setup count as one.
 *
 * One row per failure and key: `key` is `u:<lowercased user name>` or `s:<source address>`, `time` the
 * failure's epoch ms. Rows older than the throttle's window mean nothing and are deleted as new failures come
 * in. `(key, time)` serves the per-key check; `time` alone the pruning.
 */
export async function up(db: Kysely<unknown>, _dialect: StoreDialect): Promise<void> {
  await db.schema
    .createTable('login_failures')
    .addColumn('key', 'text', (c) => c.notNull())
    .addColumn('time', 'bigint', (c) => c.notNull())
    .execute();
  await db.schema
    .createIndex('login_failures_key_time')
    .on('login_failures')
    .columns(['key', 'time'])
    .execute();
  await db.schema.createIndex('login_failures_time').on('login_failures').column('time').execute();
}
