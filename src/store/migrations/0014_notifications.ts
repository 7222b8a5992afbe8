import type { Kysely } from 'kysely';
import type { StoreDialect } from './index.js';

/**
 * Job-end notifications.
 * - `notification_rules`: a user's rule: when (failure, success, always), an optional schedule scope, and a
 *   channel (webhook URL with its HMAC secret, or an email address).
 * - `notification_deliveries`: the outbox. A job's terminal transition inserts one row per matching rule in
 *   its own transaction, so a delivery exists exactly when the job's end was committed. Dispatchers claim a
 *   due row by moving `next_attempt_at` past a lease with a new `claim_token` (a conditional update), send,
 *   and finish it under that token; a claim whose server died comes due again when its lease runs out.
 */
export async function up(db: Kysely<unknown>, _dialect: StoreDialect): Promise<void> {
  const time = 'bigint' as const;
  await db.schema
    .createTable('notification_rules')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('user_name', 'text', (c) => c.notNull())
    .addColumn('schedule', 'text')
    .addColumn('when', 'text', (c) => c.notNull())
    .addColumn('channel', 'text', (c) => c.notNull())
    .addColumn('target', 'text', (c) => c.notNull())
    .addColumn('secret', 'text')
    .addColumn('created_at', time, (c) => c.notNull())
    .execute();
  await db.schema
    .createIndex('notification_rules_user')
    .on('notification_rules')
    .column('user_name')
    .execute();

  await db.schema
    .createTable('notification_deliveries')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('rule_id', 'text', (c) => c.notNull())
    .addColumn('user_name', 'text', (c) => c.notNull())
    .addColumn('job_id', 'text', (c) => c.notNull())
    .addColumn('job_attempt', 'integer', (c) => c.notNull())
    .addColumn('job_state', 'text', (c) => c.notNull())
    .addColumn('channel', 'text', (c) => c.notNull())
    .addColumn('state', 'text', (c) => c.notNull())
    .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('next_attempt_at', time)
    .addColumn('claim_token', 'text')
    .addColumn('last_error', 'text')
    .addColumn('created_at', time, (c) => c.notNull())
    .addColumn('delivered_at', time)
    .addColumn('updated_at', time, (c) => c.notNull())
    .addUniqueConstraint('notification_deliveries_once', ['rule_id', 'job_id', 'job_attempt'])
    .execute();
  await db.schema
    .createIndex('notification_deliveries_due')
    .on('notification_deliveries')
    .columns(['state', 'next_attempt_at'])
    .execute();
  await db.schema
    .createIndex('notification_deliveries_user')
    .on('notification_deliveries')
    .columns(['user_name', 'created_at'])
    .execute();
}
