import { sql, type Kysely } from 'kysely';
import type { StoreDialect } from './index.js';

/**
 * Spaces: every workflow lives in a space, and its key becomes (space, name, version).
 *
 * New tables:
 * - `spaces`: `personal` spaces (one per user, named after the user, `owner` = that user) and `shared`
 *   spaces created by admins (`owner` null).
 * - `space_members`: (space, kind, member, role); `kind` is `user` (a server user) or `group` (a local group
 *   name, or an LDAP group DN, which contains `=`), `role` is `viewer`, `editor` or `owner`.
 * - `groups`, `group_members`: local groups that admins manage.
 *
 * Changed tables:
 * - `workflows` and `workflow_assets` gain `space` in their primary key; `workflows` gains `deleted_at` and
 *   `deleted_by` (a deleted workflow's versions stay for the jobs that ran them, but cannot be run again).
 * - `jobs` gains `workflow_space`; its foreign key to the version it pinned becomes (space, name, version).
 *
 * Existing data: until now names were global and anybody could push a version of anybody's workflow. Every
 * existing version moves into the personal space of the user who pushed it, keeping its version number:
 * the first pusher's versions stay together in their space, a version pushed by someone else lands in that
 * person's own space (with a gap in its numbering rather than a renumbering, so `name@N` still means the
 * same content to whoever pushed it, and a job's pinned version is the same row as before). Each job points
 * at the space of the version it ran. Every existing user, and every pusher, gets a personal space.
 */
export async function up(db: Kysely<unknown>, dialect: StoreDialect): Promise<void> {
  const time = 'bigint' as const;

  await db.schema
    .createTable('spaces')
    .addColumn('name', 'text', (c) => c.primaryKey())
    .addColumn('kind', 'text', (c) => c.notNull())
    .addColumn('owner', 'text')
    .addColumn('description', 'text', (c) => c.notNull().defaultTo(''))
    .addColumn('created_by', 'text', (c) => c.notNull())
    .addColumn('created_at', time, (c) => c.notNull())
    .execute();

  await db.schema
    .createTable('space_members')
    .addColumn('space', 'text', (c) => c.notNull().references('spaces.name').onDelete('cascade'))
    .addColumn('kind', 'text', (c) => c.notNull())
    .addColumn('member', 'text', (c) => c.notNull())
    .addColumn('role', 'text', (c) => c.notNull())
    .addColumn('added_by', 'text', (c) => c.notNull())
    .addColumn('added_at', time, (c) => c.notNull())
    .addPrimaryKeyConstraint('space_members_pk', ['space', 'kind', 'member'])
    .execute();
  await db.schema
    .createIndex('space_members_member')
    .on('space_members')
    .columns(['kind', 'member'])
    .execute();

  await db.schema
    .createTable('groups')
    .addColumn('name', 'text', (c) => c.primaryKey())
    .addColumn('description', 'text', (c) => c.notNull().defaultTo(''))
    .addColumn('created_by', 'text', (c) => c.notNull())
    .addColumn('created_at', time, (c) => c.notNull())
    .execute();

  await db.schema
    .createTable('group_members')
    .addColumn('group_name', 'text', (c) => c.notNull().references('groups.name').onDelete('cascade'))
    .addColumn('user_name', 'text', (c) => c.notNull())
    .addColumn('added_by', 'text', (c) => c.notNull())
    .addColumn('added_at', time, (c) => c.notNull())
    .addPrimaryKeyConstraint('group_members_pk', ['group_name', 'user_name'])
    .execute();
  await db.schema.createIndex('group_members_user').on('group_members').column('user_name').execute();

  // Personal spaces for every user and every pusher (a pusher's user row may be gone; their versions stay).
  const now = Date.now();
  await sql`
    INSERT INTO spaces (name, kind, owner, description, created_by, created_at)
    SELECT n, 'personal', n, '', 'system', ${now}
    FROM (SELECT name AS n FROM users UNION SELECT created_by AS n FROM workflows) AS everyone`.execute(db);

  if (dialect === 'postgres') await migratePostgres(db);
  else await migrateSqlite(db);
}

async function migratePostgres(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE jobs DROP CONSTRAINT jobs_workflow_fk`.execute(db);
  await sql`ALTER TABLE workflow_assets DROP CONSTRAINT workflow_assets_fk`.execute(db);
  await sql`ALTER TABLE workflow_assets DROP CONSTRAINT workflow_assets_pk`.execute(db);
  await sql`ALTER TABLE workflows DROP CONSTRAINT workflows_pk`.execute(db);

  await sql`ALTER TABLE workflows ADD COLUMN space text`.execute(db);
  await sql`ALTER TABLE workflows ADD COLUMN deleted_at bigint`.execute(db);
  await sql`ALTER TABLE workflows ADD COLUMN deleted_by text`.execute(db);
  await sql`UPDATE workflows SET space = created_by`.execute(db);
  await sql`ALTER TABLE workflows ALTER COLUMN space SET NOT NULL`.execute(db);
  await sql`ALTER TABLE workflows ADD CONSTRAINT workflows_pk PRIMARY KEY (space, name, version)`.execute(db);

  // Until now (name, version) was unique, so each asset row and job finds exactly one version.
  await sql`ALTER TABLE workflow_assets ADD COLUMN space text`.execute(db);
  await sql`
    UPDATE workflow_assets a SET space = w.space
    FROM workflows w WHERE w.name = a.name AND w.version = a.version`.execute(db);
  await sql`ALTER TABLE workflow_assets ALTER COLUMN space SET NOT NULL`.execute(db);
  await sql`
    ALTER TABLE workflow_assets ADD CONSTRAINT workflow_assets_pk PRIMARY KEY (space, name, version, path)`.execute(
    db,
  );
  await sql`
    ALTER TABLE workflow_assets ADD CONSTRAINT workflow_assets_fk FOREIGN KEY (space, name, version)
    REFERENCES workflows (space, name, version) ON DELETE CASCADE`.execute(db);

  await sql`ALTER TABLE jobs ADD COLUMN workflow_space text`.execute(db);
  await sql`
    UPDATE jobs j SET workflow_space = w.space
    FROM workflows w WHERE w.name = j.workflow_name AND w.version = j.workflow_version`.execute(db);
  await sql`ALTER TABLE jobs ALTER COLUMN workflow_space SET NOT NULL`.execute(db);
  await sql`
    ALTER TABLE jobs ADD CONSTRAINT jobs_workflow_fk FOREIGN KEY (workflow_space, workflow_name, workflow_version)
    REFERENCES workflows (space, name, version)`.execute(db);
}

/**
 * SQLite cannot change a primary key or a foreign key in place: the tables are rebuilt (create, copy, drop,
 * rename), which the migration runner allows by switching foreign keys off around the migration and running
 * `foreign_key_check` before committing. `jobs` is rebuilt from its own stored DDL with only the foreign key
 * clause replaced, so the columns other migrations added are kept as they are.
 */
async function migrateSqlite(db: Kysely<unknown>): Promise<void> {
  const time = 'bigint' as const;
  await db.schema
    .createTable('workflows_0008')
    .addColumn('space', 'text', (c) => c.notNull())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('version', 'integer', (c) => c.notNull())
    .addColumn('source', 'text', (c) => c.notNull())
    .addColumn('format', 'text', (c) => c.notNull())
    .addColumn('digest', 'text', (c) => c.notNull())
    .addColumn('description', 'text', (c) => c.notNull())
    .addColumn('params_json', 'text', (c) => c.notNull())
    .addColumn('steps_json', 'text', (c) => c.notNull())
    .addColumn('created_by', 'text', (c) => c.notNull())
    .addColumn('created_at', time, (c) => c.notNull())
    .addColumn('deleted_at', time)
    .addColumn('deleted_by', 'text')
    .addPrimaryKeyConstraint('workflows_pk', ['space', 'name', 'version'])
    .execute();
  await sql`
    INSERT INTO workflows_0008 (space, name, version, source, format, digest, description, params_json,
                                steps_json, created_by, created_at, deleted_at, deleted_by)
    SELECT created_by, name, version, source, format, digest, description, params_json, steps_json,
           created_by, created_at, NULL, NULL
    FROM workflows`.execute(db);

  await db.schema
    .createTable('workflow_assets_0008')
    .addColumn('space', 'text', (c) => c.notNull())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('version', 'integer', (c) => c.notNull())
    .addColumn('path', 'text', (c) => c.notNull())
    .addColumn('digest', 'text', (c) => c.notNull())
    .addColumn('size', time, (c) => c.notNull())
    .addPrimaryKeyConstraint('workflow_assets_pk', ['space', 'name', 'version', 'path'])
    .addForeignKeyConstraint(
      'workflow_assets_fk',
      ['space', 'name', 'version'],
      'workflows',
      ['space', 'name', 'version'],
      (c) => c.onDelete('cascade'),
    )
    .execute();
  await sql`
    INSERT INTO workflow_assets_0008 (space, name, version, path, digest, size)
    SELECT w.space, a.name, a.version, a.path, a.digest, a.size
    FROM workflow_assets a JOIN workflows_0008 w ON w.name = a.name AND w.version = a.version`.execute(db);

  await sql`ALTER TABLE jobs ADD COLUMN workflow_space text`.execute(db);
  await sql`
    UPDATE jobs SET workflow_space = (
      SELECT w.space FROM workflows_0008 w
      WHERE w.name = jobs.workflow_name AND w.version = jobs.workflow_version)`.execute(db);

  const { rows: stored } = await sql<{ sql: string }>`
    SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'jobs'`.execute(db);
  const oldFk =
    /constraint "jobs_workflow_fk" foreign key \("workflow_name", "workflow_version"\) references "workflows" \("name", "version"\)/i;
  const ddl = stored[0]?.sql;
  if (!ddl || !oldFk.test(ddl) || !/^create table "jobs" \(/i.test(ddl))
    throw new Error(
      'migration 0008: the jobs table does not have the expected definition; not rebuilding it',
    );
  const newDdl = ddl
    .replace(/^create table "jobs" \(/i, 'create table "jobs_0008" (')
    .replace(
      oldFk,
      'constraint "jobs_workflow_fk" foreign key ("workflow_space", "workflow_name", "workflow_version") references "workflows" ("space", "name", "version")',
    );
  const { rows: indexes } = await sql<{ sql: string }>`
    SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'jobs' AND sql IS NOT NULL`.execute(db);
  await sql.raw(newDdl).execute(db);
  await sql`INSERT INTO jobs_0008 SELECT * FROM jobs`.execute(db);

  await sql`DROP TABLE jobs`.execute(db);
  await sql`DROP TABLE workflow_assets`.execute(db);
  await sql`DROP TABLE workflows`.execute(db);
  await sql`ALTER TABLE workflows_0008 RENAME TO workflows`.execute(db);
  await sql`ALTER TABLE workflow_assets_0008 RENAME TO workflow_assets`.execute(db);
  await sql`ALTER TABLE jobs_0008 RENAME TO jobs`.execute(db);
  for (const index of indexes) await sql.raw(index.sql).execute(db);
}
