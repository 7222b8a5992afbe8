/**
 * Uploads for `file` params and the inputs jobs were given (migration 0011), and the notice that a live log
 * grew (PostgreSQL). The files themselves live in the shared directory (server/uploads.ts); this module
 * only reads and writes rows.
 */
import { sql, type Kysely } from 'kysely';
import type { JobChangeNotice } from './changes.js';
import type { Database } from './schema.js';

export interface UploadRecord {
  id: string;
  owner: string;
  name: string;
  size: number;
  sha256: string;
  createdAt: number;
  expiresAt: number;
  /** The job a submission reserved it for; null while free. */
  jobId: string | null;
}

export interface JobInputRecord {
  jobId: string;
  param: string;
  name: string;
  size: number;
  sha256: string;
  createdAt: number;
}

function toUpload(row: Database['uploads']): UploadRecord {
  return {
    id: row.id,
    owner: row.owner,
    name: row.name,
    size: row.size,
    sha256: row.sha256,
    createdAt: row.created_at,
    expiresAt: row.expires_at,
    jobId: row.job_id,
  };
}

function toInput(row: Database['job_inputs']): JobInputRecord {
  return {
    jobId: row.job_id,
    param: row.param,
    name: row.name,
    size: row.size,
    sha256: row.sha256,
    createdAt: row.created_at,
  };
}

export class JobFileStore {
  constructor(
    private readonly db: Kysely<Database>,
    /** The store's NOTIFY channel (PostgreSQL) and instance id, for live log notices. */
    private readonly changeChannel: string | undefined,
    private readonly origin: string,
  ) {}

  async insertUpload(upload: UploadRecord): Promise<void> {
    await this.db
      .insertInto('uploads')
      .values({
        id: upload.id,
        owner: upload.owner,
        name: upload.name,
        size: upload.size,
        sha256: upload.sha256,
        created_at: upload.createdAt,
        expires_at: upload.expiresAt,
        job_id: upload.jobId,
      })
      .execute();
  }

  async getUpload(id: string): Promise<UploadRecord | undefined> {
    const row = await this.db.selectFrom('uploads').selectAll().where('id', '=', id).executeTakeFirst();
    return row && toUpload(row);
  }

  /**
   * Reserves a free, unexpired upload of `owner` for a job: one conditional UPDATE, so two submissions
   * naming the same upload (on any servers) cannot both get it. False when it is not there for them.
   */
  async reserveUpload(id: string, owner: string, jobId: string, now: number): Promise<boolean> {
    const result = await this.db
      .updateTable('uploads')
      .set({ job_id: jobId })
      .where('id', '=', id)
      .where('owner', '=', owner)
      .where('job_id', 'is', null)
      .where('expires_at', '>', now)
      .executeTakeFirst();
    return Number(result.numUpdatedRows) === 1;
  }

  /** Frees the uploads a submission reserved and did not use (the submission failed). */
  async releaseUploads(jobId: string): Promise<void> {
    await this.db.updateTable('uploads').set({ job_id: null }).where('job_id', '=', jobId).execute();
  }

  /** The reserved upload becomes the job's input: one transaction (row gone, input row there). */
  async consumeUpload(
    upload: UploadRecord,
    jobId: string,
    param: string,
    now: number,
  ): Promise<JobInputRecord> {
    const input: JobInputRecord = {
      jobId,
      param,
      name: upload.name,
      size: upload.size,
      sha256: upload.sha256,
      createdAt: now,
    };
    await this.db.transaction().execute(async (trx) => {
      await trx.deleteFrom('uploads').where('id', '=', upload.id).execute();
      await trx
        .insertInto('job_inputs')
        .values({
          job_id: jobId,
          param,
          name: input.name,
          size: input.size,
          sha256: input.sha256,
          created_at: now,
        })
        .execute();
    });
    return input;
  }

  async listJobInputs(jobId: string): Promise<JobInputRecord[]> {
    const rows = await this.db
      .selectFrom('job_inputs')
      .selectAll()
      .where('job_id', '=', jobId)
      .orderBy('param')
      .execute();
    return rows.map(toInput);
  }

  async getJobInput(jobId: string, param: string): Promise<JobInputRecord | undefined> {
    const row = await this.db
      .selectFrom('job_inputs')
      .selectAll()
      .where('job_id', '=', jobId)
      .where('param', '=', param)
      .executeTakeFirst();
    return row && toInput(row);
  }

  /** Deletes the rows of uploads past their expiry and returns them (their files are the caller's). */
  async takeExpiredUploads(now: number, limit = 500): Promise<UploadRecord[]> {
    const rows = await this.db
      .selectFrom('uploads')
      .selectAll()
      .where('expires_at', '<=', now)
      .limit(limit)
      .execute();
    if (rows.length === 0) return [];
    await this.db
      .deleteFrom('uploads')
      .where(
        'id',
        'in',
        rows.map((row) => row.id),
      )
      .where('expires_at', '<=', now)
      .execute();
    return rows.map(toUpload);
  }

  /**
   * Tells the other servers (PostgreSQL) that a live step log grew: its bytes [offset, size) are in the
   * shared directory now. A no-op on SQLite, where one server hears everything itself.
   */
  async announceLog(
    jobId: string,
    log: { stepId: string; stream: 'stdout' | 'stderr'; offset: number; size: number },
  ): Promise<void> {
    if (this.changeChannel === undefined) return;
    const notice: JobChangeNotice = { origin: this.origin, jobId, log };
    await sql`SELECT pg_notify(${this.changeChannel}, ${JSON.stringify(notice)})`.execute(this.db);
  }
}
