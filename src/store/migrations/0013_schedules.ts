import type { Kysely } from 'kysely';
import type { StoreDialect } from './index.js';

/**
 * Schedules (issue 16): a workflow ref run with fixed params on a cron expression in a time zone, as its
 * owner. `next_due_at` is the next tick not yet handled: a server claims a tick by moving it forward with a
 * conditional UPDATE in the transaction that inserts the tick's job, so several servers fire each tick once
 * and a crash before the commit leaves the tick due. `queued_due_at` is a tick held back by the `queue`
 * overlap policy until the schedule's running job ends.
 *
 * `jobs.schedule`: the id of the schedule that fired the job; null for jobs submitted by hand.
 */
export async function up(db: Kysely<unknown>, _dialect: StoreDialect): Promise<void> {
  const time = 'bigint' as const;
  await db.schema
    .createTable('schedules')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('owner', 'text', (c) => c.notNull())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('workflow_ref', 'text', (c) => c.notNull())
    .addColumn('params_json', 'text', (c) => c.notNull())
    .addColumn('labels_json', 'text', (c) => c.notNull())
    .addColumn('cron', 'text', (c) => c.notNull())
    .addColumn('time_zone', 'text', (c) => c.notNull())
    .addColumn('misfire', 'text', (c) => c.notNull())
    .addColumn('overlap', 'text', (c) => c.notNull())
    .addColumn('paused', 'integer', (c) => c.notNull())
    .addColumn('paused_reason', 'text')
    .addColumn('next_due_at', time)
    .addColumn('queued_due_at', time)
    .addColumn('last_fired_at', time)
    .addColumn('last_job_id', 'text')
    .addColumn('last_error_code', 'text')
    .addColumn('last_error_message', 'text')
    .addColumn('created_at', time, (c) => c.notNull())
    .addColumn('updated_at', time, (c) => c.notNull())
    .execute();
  await db.schema
    .createIndex('schedules_owner_name')
    .on('schedules')
    .columns(['owner', 'name'])
    .unique()
    .execute();
  await db.schema.createIndex('schedules_due').on('schedules').columns(['paused', 'next_due_at']).execute();
  await db.schema.alterTable('jobs').addColumn('schedule', 'text').execute();
  await db.schema.createIndex('jobs_schedule_state').on('jobs').columns(['schedule', 'state']).execute();
}
