/**
 * Job results and logs on disk. Uploads stream to a temp file in the job's directory and are renamed into
 * place only when complete, so a reader never sees half a file. Layout:
 *   <sharedDir>/results/<jobId>/<name>.parquet|.csv   (tables)
 *   <sharedDir>/results/<jobId>/<name>                (files)
 *   <sharedDir>/jobs/<jobId>/logs/<step>.<stream>.log
 * `sharedDir` is the directory every server of an HA setup mounts (default the data dir); renames within it
 * are atomic for readers on any of them.
 * Previews read Parquet/CSV with one lazily created in-memory DuckDB instance.
 */
import { createWriteStream, mkdirSync } from 'node:fs';
import { readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { DuckDBConnection, DuckDBInstance } from '@duckdb/node-api';
import type { Logger } from 'pino';
import { MAX_RESULT_NAME_BYTES, StewardError, plainNameProblem } from '../protocol/index.js';
import type { ResultRecord, Store } from '../store/index.js';
import { newId } from './secrets.js';

const TABLE_FORMATS = new Set(['parquet', 'csv']);

/** A result, step or file name that is safe as one path segment (the rule is `plainNameProblem`'s). */
export function checkSegmentName(name: string, what: string): void {
  const problem = plainNameProblem(name);
  if (problem !== undefined) {
    throw new StewardError(
      'STEWARD_BAD_REQUEST',
      `${what}: ${JSON.stringify(name)} ${problem}; it must be a plain name (no "/", no "..", not starting with ".", at most ${MAX_RESULT_NAME_BYTES} bytes)`,
      {
        details: { issues: [{ field: what, rule: 'plain_name', message: problem, value: name }] },
      },
    );
  }
}

/**
 * `Content-Disposition` for a download of any UTF-8 name (RFC 6266): `filename*` carries it exactly
 * (RFC 8187 encoding), `filename` an ASCII stand-in for old clients. A raw non-Latin-1 name is not a legal
 * header value at all (Node refuses it).
 */
export function contentDisposition(name: string): string {
  // encodeURIComponent throws on a lone surrogate: replace those as String#toWellFormed does (ES2024).
  const wellFormed = name.replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, '\uFFFD');
  const fallback = wellFormed.replace(/[^\x20-\x7e]|["\\%]/g, '_');
  const encoded = encodeURIComponent(wellFormed).replace(
    /['()*]/g,
    (char) => `%${char.charCodeAt(0).toString(16).toUpperCase()}`,
  );
  return `attachment; filename="${fallback}"; filename*=UTF-8''${encoded}`;
}

export interface PreviewResult {
  name: string;
  columns: { name: string; type: string }[];
  rows: Record<string, unknown>[];
  totalRows: number | null;
}

export class ResultFiles {
  private duckdb: Promise<{ instance: DuckDBInstance; connection: DuckDBConnection }> | undefined;

  constructor(
    private readonly store: Store,
    private readonly sharedDir: string,
    private readonly limitBytes: number,
    private readonly logger: Logger,
  ) {}

  resultDir(jobId: string): string {
    return path.join(this.sharedDir, 'results', jobId);
  }

  logDir(jobId: string): string {
    return path.join(this.sharedDir, 'jobs', jobId, 'logs');
  }

  async upload(
    jobId: string,
    name: string,
    query: { kind: 'table' | 'file'; format?: string | undefined; rows?: number | undefined },
    body: unknown,
    declaredLength: number | undefined,
  ): Promise<ResultRecord> {
    checkSegmentName(name, 'params.name');
    let fileName = name;
    let format: string | null = null;
    if (query.kind === 'table') {
      if (!query.format || !TABLE_FORMATS.has(query.format)) {
        throw new StewardError(
          'STEWARD_BAD_REQUEST',
          `query.format: a table result needs format "parquet" or "csv", got ${JSON.stringify(query.format ?? null)}`,
          {
            details: {
              issues: [
                {
                  field: 'query.format',
                  rule: 'table_format',
                  message: 'expected parquet or csv',
                  value: query.format ?? null,
                },
              ],
            },
          },
        );
      }
      format = query.format;
      fileName = `${name}.${format}`;
    }
    const dir = this.resultDir(jobId);
    const size = await this.receive(body, dir, fileName, declaredLength);
    return this.store.upsertResult({
      jobId,
      name,
      kind: query.kind,
      format,
      size,
      rows: query.rows ?? null,
      createdAt: Date.now(),
    });
  }

  async uploadLog(
    jobId: string,
    step: string,
    stream: 'stdout' | 'stderr',
    body: unknown,
    declaredLength: number | undefined,
  ): Promise<void> {
    checkSegmentName(step, 'params.step');
    await this.receive(body, this.logDir(jobId), `${step}.${stream}.log`, declaredLength);
  }

  /** The file behind a download name: a file result's name, or `NAME.csv` / `NAME.parquet` for tables. */
  async locate(
    jobId: string,
    requested: string,
  ): Promise<{ file: string; downloadName: string; contentType: string; result: ResultRecord }> {
    checkSegmentName(requested, 'params.name');
    const exact = await this.store.getResult(jobId, requested);
    if (exact?.kind === 'file') {
      return {
        file: path.join(this.resultDir(jobId), requested),
        downloadName: requested,
        contentType: 'application/octet-stream',
        result: exact,
      };
    }
    const dot = requested.lastIndexOf('.');
    const candidates: [string, string][] = [];
    if (exact?.kind === 'table') {
      // A bare table name downloads its Parquet form (or CSV when that is all there is).
      for (const format of ['parquet', 'csv'])
        if (exact.formats.includes(format)) candidates.push([requested, format]);
    } else if (dot > 0) {
      candidates.push([requested.slice(0, dot), requested.slice(dot + 1)]);
    }
    for (const [name, format] of candidates) {
      const table = exact ?? (await this.store.getResult(jobId, name));
      if (table?.kind === 'table' && table.formats.includes(format)) {
        return {
          file: path.join(this.resultDir(jobId), `${name}.${format}`),
          downloadName: `${name}.${format}`,
          contentType: format === 'csv' ? 'text/csv; charset=utf-8' : 'application/vnd.apache.parquet',
          result: table,
        };
      }
    }
    throw new StewardError('STEWARD_NOT_FOUND', `job ${jobId} has no result ${requested}`);
  }

  async preview(jobId: string, name: string, limit: number, offset: number): Promise<PreviewResult> {
    const result = await this.store.getResult(jobId, name);
    if (!result) throw new StewardError('STEWARD_NOT_FOUND', `job ${jobId} has no result ${name}`);
    if (result.kind !== 'table')
      throw new StewardError('STEWARD_BAD_REQUEST', `result ${name} is a file; only tables can be previewed`);
    const format = result.formats.includes('parquet') ? 'parquet' : 'csv';
    const file = path.join(this.resultDir(jobId), `${name}.${format}`);
    const source =
      format === 'parquet' ? `read_parquet(${sqlString(file)})` : `read_csv_auto(${sqlString(file)})`;
    const { connection } = await this.openDuckdb();
    const reader = await connection.runAndReadAll(
      `SELECT * FROM ${source} LIMIT ${Math.trunc(limit)} OFFSET ${Math.trunc(offset)}`,
    );
    const names = reader.columnNames();
    const types = reader.columnTypes();
    let totalRows = result.rows;
    if (totalRows === null) {
      const count = await connection.runAndReadAll(`SELECT count(*)::BIGINT AS n FROM ${source}`);
      totalRows = Number(count.getRowObjectsJS()[0]?.n ?? 0);
    }
    return {
      name,
      columns: names.map((column, i) => ({ name: column, type: types[i]?.toString() ?? 'UNKNOWN' })),
      rows: reader.getRowObjectsJson(),
      totalRows,
    };
  }

  async readLogs(jobId: string): Promise<{ stepId: string; stream: 'stdout' | 'stderr'; text: string }[]> {
    const dir = this.logDir(jobId);
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw error;
    }
    const logs: { stepId: string; stream: 'stdout' | 'stderr'; text: string }[] = [];
    for (const name of names.sort()) {
      const match = /^(.+)\.(stdout|stderr)\.log$/.exec(name);
      if (!match) continue;
      logs.push({
        stepId: match[1]!,
        stream: match[2] as 'stdout' | 'stderr',
        text: await readFile(path.join(dir, name), 'utf8'),
      });
    }
    return logs;
  }

  async close(): Promise<void> {
    const duckdb = this.duckdb;
    this.duckdb = undefined;
    if (!duckdb) return;
    try {
      const { instance, connection } = await duckdb;
      connection.closeSync();
      instance.closeSync();
    } catch (error) {
      this.logger.warn({ err: error }, 'closing DuckDB failed');
    }
  }

  private openDuckdb(): Promise<{ instance: DuckDBInstance; connection: DuckDBConnection }> {
    this.duckdb ??= (async () => {
      const { DuckDBInstance } = await import('@duckdb/node-api');
      const instance = await DuckDBInstance.create(':memory:', { threads: '2' });
      const connection = await instance.connect();
      return { instance, connection };
    })();
    this.duckdb.catch(() => (this.duckdb = undefined));
    return this.duckdb;
  }

  /** Streams `body` into `dir/fileName` through a temp file; returns the size. Enforces the upload limit. */
  private async receive(
    body: unknown,
    dir: string,
    fileName: string,
    declaredLength: number | undefined,
  ): Promise<number> {
    if (!isReadable(body)) {
      throw new StewardError(
        'STEWARD_BAD_REQUEST',
        'expected a raw request body with Content-Type: application/octet-stream',
      );
    }
    const limit = this.limitBytes;
    if (declaredLength !== undefined && declaredLength > limit) {
      body.resume();
      throw new StewardError(
        'STEWARD_PAYLOAD_TOO_LARGE',
        `upload of ${declaredLength} bytes exceeds the limit of ${limit} bytes`,
      );
    }
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const temp = path.join(dir, `.upload-${newId()}`);
    let size = 0;
    const counter = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        size += chunk.length;
        if (size > limit)
          callback(
            new StewardError('STEWARD_PAYLOAD_TOO_LARGE', `upload exceeds the limit of ${limit} bytes`),
          );
        else callback(null, chunk);
      },
    });
    try {
      await pipeline(body, counter, createWriteStream(temp, { mode: 0o600 }));
      await rename(temp, path.join(dir, fileName));
    } catch (error) {
      await rm(temp, { force: true });
      throw error;
    }
    return (await stat(path.join(dir, fileName))).size;
  }
}

function isReadable(value: unknown): value is Readable {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as Readable).pipe === 'function' &&
    typeof (value as Readable).resume === 'function'
  );
}

function sqlString(text: string): string {
  return `'${text.replace(/'/g, "''")}'`;
}
