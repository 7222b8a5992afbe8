/** The result files a job uploaded (tables and files), one row per name; the bytes live in the shared dir. */
import type { Transaction } from 'kysely';
import type { StoreContext } from './context.js';
import type { Database } from './schema.js';

export interface ResultRecord {
  jobId: string;
  name: string;
  kind: 'table' | 'file';
  formats: string[];
  size: number;
  rows: number | null;
  createdAt: number;
}

/** One upload of a result: a table arrives once per format (`parquet`, `csv`), a file once. */
export interface ResultUpload {
  jobId: string;
  name: string;
  kind: 'table' | 'file';
  format: string | null;
  size: number;
  rows: number | null;
  createdAt: number;
}

function toResult(row: Database['results']): ResultRecord {
  return {
    jobId: row.job_id,
    name: row.name,
    kind: row.kind,
    formats: JSON.parse(row.formats_json) as string[],
    size: row.size,
    rows: row.rows,
    createdAt: row.created_at,
  };
}

export class ResultStore {
  constructor(private readonly ctx: StoreContext) {}

  /**
   * Records an uploaded result file. For tables, formats accumulate (`parquet`, `csv`), in whichever order
   * they arrive, and two formats of one table may arrive at once: the row is inserted if it is new, and
   * otherwise merged under its lock (on PostgreSQL the second insert waits for the first to commit and then
   * does nothing; SQLite runs one transaction at a time).
   */
  async upsertResult(result: ResultUpload): Promise<ResultRecord> {
    return this.ctx.db.transaction().execute(async (trx) => {
      const inserted = await trx
        .insertInto('results')
        .values({
          job_id: result.jobId,
          name: result.name,
          kind: result.kind,
          formats_json: JSON.stringify(result.format ? [result.format] : []),
          size: result.size,
          rows: result.rows,
          created_at: result.createdAt,
        })
        .onConflict((conflict) => conflict.columns(['job_id', 'name']).doNothing())
        .executeTakeFirst();
      if (Number(inserted.numInsertedOrUpdatedRows ?? 0) === 0) {
        let existing = trx
          .selectFrom('results')
          .selectAll()
          .where('job_id', '=', result.jobId)
          .where('name', '=', result.name);
        if (this.ctx.dialect === 'postgres') existing = existing.forUpdate();
        await addFormat(trx, await existing.executeTakeFirstOrThrow(), result);
      }
      const row = await trx
        .selectFrom('results')
        .selectAll()
        .where('job_id', '=', result.jobId)
        .where('name', '=', result.name)
        .executeTakeFirstOrThrow();
      return toResult(row);
    });
  }

  async listResults(jobId: string): Promise<ResultRecord[]> {
    const rows = await this.ctx.db
      .selectFrom('results')
      .selectAll()
      .where('job_id', '=', jobId)
      .orderBy('name')
      .execute();
    return rows.map(toResult);
  }

  async getResult(jobId: string, name: string): Promise<ResultRecord | undefined> {
    const row = await this.ctx.db
      .selectFrom('results')
      .selectAll()
      .where('job_id', '=', jobId)
      .where('name', '=', name)
      .executeTakeFirst();
    return row && toResult(row);
  }
}

/** A further upload of a stored result: its format joins the others. */
async function addFormat(
  trx: Transaction<Database>,
  existing: Database['results'],
  result: ResultUpload,
): Promise<void> {
  const formats = new Set(JSON.parse(existing.formats_json) as string[]);
  if (result.format) formats.add(result.format);
  // For tables `size` is the Parquet file's size when there is one: that is what a download costs.
  const size =
    existing.kind === 'table' && result.format !== 'parquet' && formats.has('parquet')
      ? existing.size
      : result.size;
  await trx
    .updateTable('results')
    .set({
      kind: result.kind,
      formats_json: JSON.stringify([...formats].sort()),
      size,
      rows: result.rows ?? existing.rows,
    })
    .where('job_id', '=', result.jobId)
    .where('name', '=', result.name)
    .execute();
}
