import type { Kysely } from 'kysely';
import type { StoreDialect } from './index.js';

/**
 * Attempt claims. `jobs.claimed_by`: the agent whose executor first fetched the current attempt's workflow.
 * Only that agent may load and run the attempt: another agent that got the same offer (the broker redelivers
 * an offer taken back in a connection drop, possibly to a different agent) is refused at the fetch. Null
 * until the first fetch, and again for every new attempt (which has a new token and a new claim).
 */
export async function up(db: Kysely<unknown>, _dialect: StoreDialect): Promise<void> {
  await db.schema.alterTable('jobs').addColumn('claimed_by', 'text').execute();
}
