import { sql, type Kysely } from 'kysely';
import type { StoreDialect } from './index.js';

/**
 * Attempts: a job lost with its agent or executor may run again as a new attempt (retry policy), and every
 * attempt stays visible with its agent, times, end state and error. `jobs.retries` holds a job's own retry
 * budget (null: the server's policy applies).
 *
 * Jobs that exist before this migration get one attempt row each, copied from the job, so every job has
 * its current attempt recorded.
 */
export async function up(db: Kysely<unknown>, _dialect: StoreDialect): Promise<void> {
  const time = 'bigint' as const;
  await db.schema.alterTable('jobs').addColumn('retries', 'integer').execute();
  await db.schema
    .createTable('job_attempts')
    .addColumn('job_id', 'text', (c) => c.notNull().references('jobs.id').onDelete('cascade'))
    .addColumn('attempt', 'integer', (c) => c.notNull())
    .addColumn('state', 'text', (c) => c.notNull())
    .addColumn('agent_id', 'text')
    .addColumn('offered_at', time, (c) => c.notNull())
    .addColumn('started_at', time)
    .addColumn('finished_at', time)
    .addColumn('error_code', 'text')
    .addColumn('error_message', 'text')
    .addPrimaryKeyConstraint('job_attempts_pk', ['job_id', 'attempt'])
    .execute();
  await sql`
    INSERT INTO job_attempts
      (job_id, attempt, state, agent_id, offered_at, started_at, finished_at, error_code, error_message)
    SELECT id, attempt, state, agent_id, created_at, started_at, finished_at, error_code, error_message
    FROM jobs`.execute(db);
}
