import type { Kysely } from 'kysely';
import type { StoreDialect } from './index.js';

/**
 * Where a user comes from: `local` (password kept here) or `ldap` (created at first LDAP login, no local
 * password, re-checked against the directory).
 */
export async function up(db: Kysely<unknown>, _dialect: StoreDialect): Promise<void> {
  await db.schema
    .alterTable('users')
    .addColumn('source', 'text', (c) => c.notNull().defaultTo('local'))
    .execute();
}
