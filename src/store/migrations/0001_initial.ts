import type { Kysely } from 'kysely';
import type { StoreDialect } from './index.js';

/** The initial schema. Migrations are append-only: never edit this file once released, add 0002_…. */
export async function up(db: Kysely<unknown>, dialect: StoreDialect): Promise<void> {
  // Epoch-ms values overflow 32-bit integers, so every time column is a bigint (INTEGER in SQLite is 64-bit).
  const time = 'bigint' as const;

  await db.schema
    .createTable('users')
    .addColumn('name', 'text', (c) => c.primaryKey())
    .addColumn('role', 'text', (c) => c.notNull())
    .addColumn('password_hash', 'text')
    .addColumn('disabled', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('created_at', time, (c) => c.notNull())
    .execute();

  await db.schema
    .createTable('api_tokens')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('user_name', 'text', (c) => c.notNull().references('users.name').onDelete('cascade'))
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('kind', 'text', (c) => c.notNull())
    .addColumn('token_hash', 'text', (c) => c.notNull().unique())
    .addColumn('created_at', time, (c) => c.notNull())
    .addColumn('expires_at', time)
    .addColumn('last_used_at', time)
    .addColumn('revoked', 'integer', (c) => c.notNull().defaultTo(0))
    .execute();
  await db.schema.createIndex('api_tokens_user').on('api_tokens').columns(['user_name', 'kind']).execute();

  await db.schema
    .createTable('workflows')
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
    .addPrimaryKeyConstraint('workflows_pk', ['name', 'version'])
    .execute();

  await db.schema
    .createTable('workflow_assets')
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('version', 'integer', (c) => c.notNull())
    .addColumn('path', 'text', (c) => c.notNull())
    .addColumn('digest', 'text', (c) => c.notNull())
    .addColumn('size', time, (c) => c.notNull())
    .addPrimaryKeyConstraint('workflow_assets_pk', ['name', 'version', 'path'])
    .addForeignKeyConstraint(
      'workflow_assets_fk',
      ['name', 'version'],
      'workflows',
      ['name', 'version'],
      (c) => c.onDelete('cascade'),
    )
    .execute();

  await db.schema
    .createTable('jobs')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('user_name', 'text', (c) => c.notNull().references('users.name'))
    .addColumn('workflow_name', 'text', (c) => c.notNull())
    .addColumn('workflow_version', 'integer', (c) => c.notNull())
    .addColumn('workflow_digest', 'text', (c) => c.notNull())
    .addColumn('params_json', 'text', (c) => c.notNull())
    .addColumn('labels_json', 'text', (c) => c.notNull())
    .addColumn('state', 'text', (c) => c.notNull())
    .addColumn('attempt', 'integer', (c) => c.notNull())
    .addColumn('agent_id', 'text')
    .addColumn('executor_json', 'text')
    .addColumn('error_code', 'text')
    .addColumn('error_message', 'text')
    .addColumn('timeout_ms', time)
    .addColumn('job_token_hash', 'text', (c) => c.notNull())
    .addColumn('load_deadline', time)
    .addColumn('cancel_requested', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('created_at', time, (c) => c.notNull())
    .addColumn('started_at', time)
    .addColumn('finished_at', time)
    .addColumn('updated_at', time, (c) => c.notNull())
    .addForeignKeyConstraint('jobs_workflow_fk', ['workflow_name', 'workflow_version'], 'workflows', [
      'name',
      'version',
    ])
    .execute();
  await db.schema.createIndex('jobs_user').on('jobs').columns(['user_name', 'id']).execute();
  await db.schema.createIndex('jobs_state').on('jobs').columns(['state', 'load_deadline']).execute();

  await db.schema
    .createTable('job_steps')
    .addColumn('job_id', 'text', (c) => c.notNull().references('jobs.id').onDelete('cascade'))
    .addColumn('step_id', 'text', (c) => c.notNull())
    .addColumn('kind', 'text', (c) => c.notNull())
    .addColumn('position', 'integer', (c) => c.notNull())
    .addColumn('state', 'text', (c) => c.notNull())
    .addColumn('started_at', time)
    .addColumn('finished_at', time)
    .addColumn('duration_ms', 'double precision')
    .addColumn('rows', time)
    .addColumn('progress', 'double precision')
    .addColumn('message', 'text')
    .addPrimaryKeyConstraint('job_steps_pk', ['job_id', 'step_id'])
    .execute();

  await db.schema
    .createTable('applied_events')
    .addColumn('job_id', 'text', (c) => c.notNull().references('jobs.id').onDelete('cascade'))
    .addColumn('attempt', 'integer', (c) => c.notNull())
    .addColumn('seq', 'integer', (c) => c.notNull())
    .addColumn('applied_at', time, (c) => c.notNull())
    .addPrimaryKeyConstraint('applied_events_pk', ['job_id', 'attempt', 'seq'])
    .execute();

  await db.schema
    .createTable('results')
    .addColumn('job_id', 'text', (c) => c.notNull().references('jobs.id').onDelete('cascade'))
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('kind', 'text', (c) => c.notNull())
    .addColumn('formats_json', 'text', (c) => c.notNull())
    .addColumn('size', time, (c) => c.notNull())
    .addColumn('rows', time)
    .addColumn('created_at', time, (c) => c.notNull())
    .addPrimaryKeyConstraint('results_pk', ['job_id', 'name'])
    .execute();

  await db.schema
    .createTable('audit')
    .addColumn('id', dialect === 'postgres' ? 'bigserial' : 'integer', (c) =>
      dialect === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement(),
    )
    .addColumn('time', time, (c) => c.notNull())
    .addColumn('actor', 'text', (c) => c.notNull())
    .addColumn('action', 'text', (c) => c.notNull())
    .addColumn('target', 'text')
    .addColumn('source', 'text')
    .addColumn('detail_json', 'text')
    .execute();
  await db.schema.createIndex('audit_actor').on('audit').columns(['actor', 'id']).execute();

  await db.schema
    .createTable('agents')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('labels_json', 'text', (c) => c.notNull())
    .addColumn('isolation', 'text', (c) => c.notNull())
    .addColumn('capacity_json', 'text', (c) => c.notNull())
    .addColumn('executors_json', 'text', (c) => c.notNull())
    .addColumn('last_seen', time, (c) => c.notNull())
    .execute();
}
