/**
 * Numbered, append-only migrations, applied in order at open and recorded in `steward_migrations`. The same
 * schema-builder code runs on SQLite and PostgreSQL (the dialect is passed for the few differences, such as
 * auto-increment keys).
 *
 * All pending migrations run in one transaction (both databases have transactional DDL); on PostgreSQL the
 * transaction first takes an advisory lock named after the schema, so several servers starting at once
 * apply each migration exactly once. We keep our own bookkeeping table rather than Kysely's Migrator
 * because the Migrator introspects every schema of the database, which races with schemas being dropped.
 */
import { sql, type Kysely } from 'kysely';
import * as m0001 from './0001_initial.js';
import * as m0002 from './0002_user_source.js';
import * as m0003 from './0003_job_attempts.js';
import * as m0004 from './0004_ha_jobs.js';
import * as m0005 from './0005_attempt_claims.js';
import * as m0006 from './0006_login_failures.js';
import * as m0007 from './0007_agent_draining.js';
import * as m0008 from './0008_spaces.js';
import * as m0009 from './0009_user_deleted.js';
import * as m0010 from './0010_job_listing.js';
import * as m0011 from './0011_job_files.js';
import * as m0012 from './0012_clusters.js';
import * as m0013 from './0013_schedules.js';
import * as m0014 from './0014_notifications.js';
import * as m0015 from './0015_retention.js';

export type StoreDialect = 'sqlite' | 'postgres';

interface NumberedMigration {
  up(db: Kysely<unknown>, dialect: StoreDialect): Promise<void>;
}

/** In application order. Never edit or remove an entry once released; append new ones. */
const migrations: readonly (readonly [string, NumberedMigration])[] = [
  ['0001_initial', m0001],
  ['0002_user_source', m0002],
  ['0003_job_attempts', m0003],
  ['0004_ha_jobs', m0004],
  ['0005_attempt_claims', m0005],
  ['0006_login_failures', m0006],
  ['0007_agent_draining', m0007],
  ['0008_spaces', m0008],
  ['0009_user_deleted', m0009],
  ['0010_job_listing', m0010],
  ['0011_job_files', m0011],
  ['0012_clusters', m0012],
  ['0013_schedules', m0013],
  ['0014_notifications', m0014],
  ['0015_retention', m0015],
];

interface MigrationTables {
  steward_migrations: { name: string; applied_at: number };
}

/** Applies every migration not yet recorded; returns the names it applied. */
export async function migrateToLatest(
  db: Kysely<unknown>,
  dialect: StoreDialect,
  until?: string,
): Promise<string[]> {
  if (dialect === 'postgres') return migrateInTransaction(db, dialect, until);
  // SQLite changes a primary or foreign key only by rebuilding the table (0008), which foreign keys
  // forbid; they can only be switched off outside a transaction. The transaction checks them itself
  // (`foreign_key_check`) before committing, so nothing inconsistent is ever committed.
  await sql`PRAGMA foreign_keys = OFF`.execute(db);
  try {
    return await migrateInTransaction(db, dialect, until);
  } finally {
    await sql`PRAGMA foreign_keys = ON`.execute(db);
  }
}

async function migrateInTransaction(
  db: Kysely<unknown>,
  dialect: StoreDialect,
  until: string | undefined,
): Promise<string[]> {
  return (db as Kysely<MigrationTables>).transaction().execute(async (trx) => {
    if (dialect === 'postgres') {
      await sql`SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.steward_migrations'))`.execute(
        trx,
      );
    }
    await trx.schema
      .createTable('steward_migrations')
      .ifNotExists()
      .addColumn('name', 'text', (c) => c.primaryKey())
      .addColumn('applied_at', 'bigint', (c) => c.notNull())
      .execute();
    const applied = new Set(
      (await trx.selectFrom('steward_migrations').select('name').execute()).map((row) => row.name),
    );
    const done: string[] = [];
    for (const [name, migration] of migrations) {
      if (applied.has(name)) continue;
      await migration.up(trx as unknown as Kysely<unknown>, dialect);
      await trx.insertInto('steward_migrations').values({ name, applied_at: Date.now() }).execute();
      done.push(name);
      if (name === until) break;
    }
    if (dialect === 'sqlite' && done.length > 0) {
      const { rows } = await sql<Record<string, unknown>>`PRAGMA foreign_key_check`.execute(trx);
      if (rows.length > 0)
        throw new Error(
          `migrations left rows whose foreign keys point nowhere: ${JSON.stringify(rows.slice(0, 5))}`,
        );
    }
    return done;
  });
}

/** The names of every migration this release knows, in application order. */
export const migrationNames: readonly string[] = migrations.map(([name]) => name);
