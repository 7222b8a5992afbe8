import type { Kysely } from 'kysely';
import type { StoreDialect } from './index.js';

/**
 * Files for `file` params.
 * - `uploads`: a file a user uploaded (`POST /api/uploads`), waiting to be used by a job. Owned by its
 *   uploader; `job_id` is set when a submission reserves it; the row is deleted once the file became the
 *   job's input, or when it expires unused.
 * - `job_inputs`: the files a job was given, one per file param (the file lives in the shared directory).
 */
export async function up(db: Kysely<unknown>, _dialect: StoreDialect): Promise<void> {
  const time = 'bigint' as const;
  await db.schema
    .createTable('uploads')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('owner', 'text', (c) => c.notNull())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('size', 'bigint', (c) => c.notNull())
    .addColumn('sha256', 'text', (c) => c.notNull())
    .addColumn('created_at', time, (c) => c.notNull())
    .addColumn('expires_at', time, (c) => c.notNull())
    .addColumn('job_id', 'text')
    .execute();
  await db.schema.createIndex('uploads_expires').on('uploads').column('expires_at').execute();

  await db.schema
    .createTable('job_inputs')
    .addColumn('job_id', 'text', (c) => c.notNull())
    .addColumn('param', 'text', (c) => c.notNull())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('size', 'bigint', (c) => c.notNull())
    .addColumn('sha256', 'text', (c) => c.notNull())
    .addColumn('created_at', time, (c) => c.notNull())
    .addPrimaryKeyConstraint('job_inputs_pk', ['job_id', 'param'])
    .execute();
}
