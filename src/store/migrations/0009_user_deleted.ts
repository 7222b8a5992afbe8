import type { Kysely } from 'kysely';
import type { StoreDialect } from './index.js';

/**
 * `users.deleted_at`: when an admin deleted the user (null = not deleted). A deleted user's row stays, with
 * no password and no tokens, so its past jobs and audit entries keep naming it and the name cannot be
 * created again to inherit that history.
 */
export async function up(db: Kysely<unknown>, _dialect: StoreDialect): Promise<void> {
  await db.schema.alterTable('users').addColumn('deleted_at', 'bigint').execute();
}
