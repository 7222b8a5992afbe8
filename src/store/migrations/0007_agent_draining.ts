import type { Kysely } from 'kysely';
import type { StoreDialect } from './index.js';

/**
 * `agents.draining`: 1 while the agent reports (in its heartbeats) that an administrator drained it: it
 * takes no new jobs and finishes the ones it has. Shown in the agent registry.
 */
export async function up(db: Kysely<unknown>, _dialect: StoreDialect): Promise<void> {
  await db.schema
    .alterTable('agents')
    .addColumn('draining', 'integer', (c) => c.notNull().defaultTo(0))
    .execute();
}
