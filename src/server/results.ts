/**
 * Job results and logs on disk. Uploads stream to a temp file in the job's directory and are renamed into
 * place only when complete, so a reader never sees half a file. Layout:
 *   <sharedDir>/results/<jobId>/<name>.parquet|.csv   (tables)
 *   <sharedDir>/results/<jobId>/<name>                (files)
 *   <sharedDir>/jobs/<jobId>/logs/<step>.<stream>.log
 * `sharedDir` is the directory every server of an HA setup mounts (default the data dir); renames within it
 * are atomic for readers on any of them.
 * Previews read Parquet/CSV with one lazily created in-memory DuckDB instance, a few rows at a time, with
 * every value cut to the cell cap in SQL and the response cut to its byte cap (both said in the response).
 * Logs are stored bounded (head, marker, tail: see src/engine/step-log.ts) whatever the executor sent, and
 * are read in bounded pieces: a listing inlines at most `maxBytes` of text, and one log streams from disk.
 */
import { createWriteStream, mkdirSync } from 'node:fs';
import { open, readdir, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { DuckDBConnection, DuckDBInstance } from '@duckdb/node-api';
import type { Logger } from 'pino';
import { STEP_LOG_MARKER_MAX_BYTES, StepLogWriter } from '../engine/step-log.js';
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
  const wellFormed = name.replace(
    /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g,
    '\uFFFD',
  );
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
  truncated: boolean;
  truncatedCells: { row: number; column: string }[];
  omittedRows: number;
  limits: { cellBytes: number; responseBytes: number };
}

export interface ResultLimits {
  /** Cap of one stored step log stream. */
  stepLogBytes: number;
  /** Cap of one preview value. */
  previewCellBytes: number;
  /** Cap of one preview response's rows. */
  previewBytes: number;
}

const DEFAULT_LIMITS: ResultLimits = {
  stepLogBytes: 32 * 1024 * 1024,
  previewCellBytes: 8 * 1024,
  previewBytes: 1024 * 1024,
};

export interface LogListing {
  stepId: string;
  stream: 'stdout' | 'stderr';
  text: string;
  size: number;
  truncated: boolean;
}

/**
 * One read of a stored log: the file opened (so an upload replacing it meanwhile cannot shift the range;
 * the caller closes it, or streams it with `autoClose`), where the read starts and ends (end exclusive).
 */
export interface LogSlice {
  handle: FileHandle;
  size: number;
  start: number;
  end: number;
}

/** Memory of the server's preview DuckDB instance (shared by concurrent previews). */
const PREVIEW_MEMORY = '256MB';

/**
 * A column is not read for a preview when, in a row group the page touches, its values average more than
 * this (its chunk holds few, very large values: reading one means decoding a page that large).
 */
const PREVIEW_UNREAD_VALUE_BYTES = 4 * 1024 * 1024;

/** A stored log (`.log`), or what arrived of it while its step runs (`.live`, see live-logs.ts). */
const LOG_NAME = /^(.+)\.(stdout|stderr)\.(log|live)$/;

/** Types whose JSON form is short whatever the value: sent as they are. */
const SHORT_TYPES =
  /^(BOOLEAN|TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|UHUGEINT|FLOAT|DOUBLE|DECIMAL\(\d+,\d+\)|DATE|TIME|TIME WITH TIME ZONE|TIMESTAMP(_S|_MS|_NS| WITH TIME ZONE)?|INTERVAL|UUID)$/;

export class ResultFiles {
  private duckdb: Promise<{ instance: DuckDBInstance; connection: DuckDBConnection }> | undefined;

  private readonly limits: ResultLimits;

  constructor(
    private readonly store: Store,
    private readonly sharedDir: string,
    private readonly limitBytes: number,
    private readonly logger: Logger,
    limits: Partial<ResultLimits> = {},
  ) {
    this.limits = { ...DEFAULT_LIMITS, ...limits };
  }

  /** Cap of one stored step log stream; executors learn it with their job. */
  get stepLogLimitBytes(): number {
    return this.limits.stepLogBytes;
  }

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
    const dir = this.logDir(jobId);
    const counter = this.counter(body, declaredLength);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const temp = path.join(dir, `.upload-${newId()}`);
    // Stored bounded whatever the executor sent: it runs the user's code, so nothing it says is trusted.
    // An executor's own marker fits in the allowance, so a log it capped is stored as it is.
    const writer = await StepLogWriter.create(temp, this.limits.stepLogBytes + STEP_LOG_MARKER_MAX_BYTES);
    try {
      await pipeline(body as Readable, counter, writer);
      await writer.finish();
      await rename(temp, path.join(dir, `${step}.${stream}.log`));
      // The final log replaces what arrived live while the step ran (live-logs.ts).
      await rm(path.join(dir, `${step}.${stream}.live`), { force: true });
    } catch (error) {
      await writer.discard();
      throw error;
    }
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
    const described = (
      await connection.runAndReadAll(`DESCRIBE SELECT * FROM ${source}`)
    ).getRowObjectsJson();
    const columns = described.map((row) => ({
      name: row.column_name as string,
      type: row.column_type as string,
    }));
    const { previewCellBytes: cellBytes, previewBytes: responseBytes } = this.limits;
    let totalRows = result.rows;
    if (totalRows === null) {
      const count = await connection.runAndReadAll(`SELECT count(*)::BIGINT AS n FROM ${source}`);
      totalRows = Number(count.getRowObjectsJS()[0]?.n ?? 0);
    }
    const wanted = Math.max(0, Math.min(Math.trunc(limit), totalRows - Math.trunc(offset)));
    // Columns whose values in these rows are too large to read at all (DuckDB decodes a Parquet page whole:
    // a 200 MB value is 200 MB of memory however little of it is sent): sent as null and listed as cut.
    const unread =
      format === 'parquet'
        ? await oversizedColumns(connection, file, Math.trunc(offset), wanted)
        : new Set<string>();
    // Every value is cut in SQL, so no long value ever reaches JavaScript: text to cellBytes + 1 characters
    // (cut to bytes below); other long values (lists, structs, blobs…) are sent as their cut text form.
    const projections: string[] = [];
    const plans: { name: string; kind: 'short' | 'text' | 'other' | 'unread'; at: number }[] = [];
    columns.forEach((column, index) => {
      const ref = quoteIdentifier(column.name);
      const at = projections.length;
      if (unread.has(column.name)) {
        projections.push(`NULL AS c${index}`);
        plans.push({ name: column.name, kind: 'unread', at });
      } else if (SHORT_TYPES.test(column.type)) {
        projections.push(`${ref} AS c${index}`);
        plans.push({ name: column.name, kind: 'short', at });
      } else if (column.type === 'VARCHAR' || column.type === 'JSON') {
        projections.push(`left(${ref}::VARCHAR, ${cellBytes + 1}) AS c${index}`);
        plans.push({ name: column.name, kind: 'text', at });
      } else {
        const text = `CAST(${ref} AS VARCHAR)`;
        projections.push(
          `CASE WHEN strlen(${text}) <= ${cellBytes} THEN ${ref} END AS c${index}`,
          `CASE WHEN strlen(${text}) > ${cellBytes} THEN left(${text}, ${cellBytes + 1}) END AS x${index}`,
        );
        plans.push({ name: column.name, kind: 'other', at });
      }
    });
    // A page's values are at most (cellBytes + 1) characters each: fetch few enough rows that one page holds
    // about eight responses' worth, so memory stays bounded for wide tables of long values too.
    const perRow = Math.max(1, columns.length) * 4 * (cellBytes + 1);
    const pageRows = Math.max(1, Math.min(512, Math.floor((8 * responseBytes) / perRow)));
    const rows: Record<string, unknown>[] = [];
    const truncatedCells: { row: number; column: string }[] = [];
    let used = 2;
    let full = false;
    while (!full && rows.length < wanted && projections.length > 0) {
      const page = await connection
        .runAndReadAll(
          `SELECT ${projections.join(', ')} FROM ${source} LIMIT ${Math.min(pageRows, wanted - rows.length)} OFFSET ${Math.trunc(offset) + rows.length}`,
        )
        .catch((error: Error) => {
          // The preview instance has a memory limit: a value too large for it fails the query, not the server.
          if (/out of memory/i.test(error.message))
            throw new StewardError(
              'STEWARD_PREVIEW_TOO_LARGE',
              `result ${name} of job ${jobId} holds values too large to preview (over the server's ${PREVIEW_MEMORY} of preview memory); download it instead`,
            );
          throw error;
        });
      const values = page.getRowsJson();
      if (values.length === 0) break;
      for (const value of values) {
        const rowIndex = rows.length;
        const row: Record<string, unknown> = {};
        const cut: string[] = [];
        for (const plan of plans) {
          let cell: unknown = value[plan.at];
          let wasCut = false;
          if (plan.kind === 'text' && typeof cell === 'string') {
            [cell, wasCut] = cutText(cell, cellBytes);
          } else if (plan.kind === 'unread') {
            wasCut = true;
          } else if (plan.kind === 'other') {
            const long = value[plan.at + 1];
            if (typeof long === 'string') [cell, wasCut] = [cutText(long, cellBytes)[0], true];
          }
          row[plan.name] = cell;
          if (wasCut) cut.push(plan.name);
        }
        let size = Buffer.byteLength(JSON.stringify(row)) + 1;
        if (used + size > responseBytes) {
          if (rows.length > 0) {
            full = true;
            break;
          }
          // The first row alone is over the cap: cut its values until it fits, rather than send nothing.
          size = shrinkRow(row, cut, responseBytes - used);
        }
        used += size;
        rows.push(row);
        for (const column of cut) truncatedCells.push({ row: rowIndex, column });
      }
    }
    const omittedRows = wanted - rows.length;
    return {
      name,
      columns,
      rows,
      totalRows,
      truncated: truncatedCells.length > 0 || omittedRows > 0,
      truncatedCells,
      omittedRows,
      limits: { cellBytes, responseBytes },
    };
  }

  /**
   * Every stored log of a job with its size, and its first bytes as text while the listing's budget lasts
   * (never more than `maxBytes` of log text in all, read with bounded reads).
   */
  async listLogs(jobId: string, maxBytes: number): Promise<LogListing[]> {
    const dir = this.logDir(jobId);
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw error;
    }
    const logs: LogListing[] = [];
    let budget = maxBytes;
    const present = new Set(names);
    for (const name of names.sort()) {
      const match = LOG_NAME.exec(name);
      if (!match) continue;
      // A live log whose final log is there already is about to be removed.
      if (match[3] === 'live' && present.has(`${match[1]}.${match[2]}.log`)) continue;
      const handle = await open(path.join(dir, name), 'r').catch(() => undefined);
      if (!handle) continue;
      try {
        const { size } = await handle.stat();
        const length = Math.min(size, budget);
        let text = '';
        let sent = 0;
        if (length > 0) {
          const buffer = Buffer.alloc(length);
          const { bytesRead } = await handle.read(buffer, 0, length, 0);
          sent = bytesRead < size ? utf8Boundary(buffer, bytesRead) : bytesRead;
          text = buffer.toString('utf8', 0, sent);
          // The budget is of the response: control characters take up to six bytes in JSON.
          for (let encoded = jsonTextBytes(text); encoded > budget; encoded = jsonTextBytes(text)) {
            sent = utf8Boundary(buffer, Math.floor((sent * budget) / encoded));
            text = buffer.toString('utf8', 0, sent);
          }
          budget -= jsonTextBytes(text);
        }
        logs.push({
          stepId: match[1]!,
          stream: match[2] as 'stdout' | 'stderr',
          text,
          size,
          truncated: sent < size,
        });
      } finally {
        await handle.close();
      }
    }
    return logs;
  }

  /**
   * Where a read of one stored log starts and ends: a byte range, or the start of its last `tail` lines
   * (found by reading backwards in 64 KiB blocks; a stored log is bounded by the step log cap).
   */
  async logSlice(
    jobId: string,
    step: string,
    stream: 'stdout' | 'stderr',
    query: { offset?: number | undefined; limit?: number | undefined; tail?: number | undefined },
  ): Promise<LogSlice> {
    checkSegmentName(step, 'params.step');
    if (query.tail !== undefined && query.offset !== undefined) {
      throw new StewardError(
        'STEWARD_BAD_REQUEST',
        'query: give either tail (lines) or offset (bytes), not both',
        {
          details: {
            issues: [
              { field: 'query.tail', rule: 'exclusive', message: 'tail excludes offset', value: query.tail },
            ],
          },
        },
      );
    }
    const base = path.join(this.logDir(jobId), `${step}.${stream}`);
    // The final log once the step ended; while it runs, what has arrived of it so far.
    const openLog = (suffix: string) =>
      open(`${base}.${suffix}`, 'r').catch((error: NodeJS.ErrnoException) => {
        if (error.code === 'ENOENT') return undefined;
        throw error;
      });
    const handle = (await openLog('log')) ?? (await openLog('live'));
    if (!handle)
      throw new StewardError('STEWARD_NOT_FOUND', `job ${jobId} has no ${stream} log for step ${step}`);
    try {
      const { size } = await handle.stat();
      let start = Math.min(query.offset ?? 0, size);
      if (query.tail !== undefined) start = await tailStart(handle, size, query.tail);
      const end = query.limit === undefined ? size : Math.min(size, start + query.limit);
      return { handle, size, start, end };
    } catch (error) {
      await handle.close();
      throw error;
    }
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
      // Bounded: previews share this instance, and a result's values are whatever a user's job wrote.
      const instance = await DuckDBInstance.create(':memory:', {
        threads: '2',
        memory_limit: PREVIEW_MEMORY,
      });
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
    const counter = this.counter(body, declaredLength);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const temp = path.join(dir, `.upload-${newId()}`);
    try {
      await pipeline(body as Readable, counter, createWriteStream(temp, { mode: 0o600 }));
      await rename(temp, path.join(dir, fileName));
    } catch (error) {
      await rm(temp, { force: true });
      throw error;
    }
    return (await stat(path.join(dir, fileName))).size;
  }

  /** Checks the body and returns a pass-through that fails it past the upload limit (declared or counted). */
  private counter(body: unknown, declaredLength: number | undefined): Transform {
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
    return counter;
  }
}

/** The text of a value cut to `maxBytes` of UTF-8 (whole characters), and whether it was cut. */
function cutText(text: string, maxBytes: number): [string, boolean] {
  // At most 3 bytes per UTF-16 unit: shorter texts need no encoding to know they fit.
  if (text.length * 3 <= maxBytes) return [text, false];
  const bytes = Buffer.from(text);
  if (bytes.length <= maxBytes) return [text, false];
  return [bytes.toString('utf8', 0, utf8Boundary(bytes, maxBytes)), true];
}

/** The largest length <= `length` that does not end inside a UTF-8 character of `bytes`. */
function utf8Boundary(bytes: Buffer, length: number): number {
  let end = Math.min(length, bytes.length);
  if (end === bytes.length) return end;
  // bytes[end] is the first byte left out: if it continues a character, that character goes too.
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--;
  return end;
}

/**
 * Top-level columns of a Parquet file whose values, in the row groups holding rows [offset, offset + count),
 * average more than PREVIEW_UNREAD_VALUE_BYTES (from the file's metadata; nothing of the data is read).
 */
async function oversizedColumns(
  connection: DuckDBConnection,
  file: string,
  offset: number,
  count: number,
): Promise<Set<string>> {
  const oversized = new Set<string>();
  if (count <= 0) return oversized;
  const metadata = (
    await connection.runAndReadAll(
      `SELECT row_group_id::BIGINT AS rg, row_group_num_rows::BIGINT AS n, path_in_schema AS path, total_uncompressed_size::BIGINT AS size FROM parquet_metadata(${sqlString(file)}) ORDER BY row_group_id`,
    )
  ).getRowObjectsJS();
  const groups = new Map<number, { rows: number; sizes: Map<string, number> }>();
  for (const entry of metadata) {
    const id = Number(entry.rg);
    const group = groups.get(id) ?? { rows: Number(entry.n), sizes: new Map<string, number>() };
    // Leaves of nested columns are "column, list, element": they count for their top-level column.
    const column = (entry.path as string).split(', ')[0]!;
    group.sizes.set(column, (group.sizes.get(column) ?? 0) + Number(entry.size));
    groups.set(id, group);
  }
  let start = 0;
  for (const [, group] of [...groups].sort((a, b) => a[0] - b[0])) {
    const end = start + group.rows;
    if (end > offset && start < offset + count) {
      for (const [column, size] of group.sizes)
        if (size / Math.max(1, group.rows) > PREVIEW_UNREAD_VALUE_BYTES) oversized.add(column);
    }
    start = end;
  }
  return oversized;
}

/** Bytes of a string's JSON form, quotes left out. */
function jsonTextBytes(text: string): number {
  return Buffer.byteLength(JSON.stringify(text)) - 2;
}

/** Cuts a row's text values (longest first) until its JSON fits `budget`; returns its size. */
function shrinkRow(row: Record<string, unknown>, cut: string[], budget: number): number {
  let size = Buffer.byteLength(JSON.stringify(row)) + 1;
  const names = Object.keys(row)
    .filter((key) => typeof row[key] === 'string')
    .sort((a, b) => (row[b] as string).length - (row[a] as string).length);
  for (const key of names) {
    if (size <= budget) break;
    const value = row[key] as string;
    const over = size - budget;
    const keep = Math.max(0, Buffer.byteLength(value) - over);
    row[key] = cutText(value, keep)[0];
    if (!cut.includes(key)) cut.push(key);
    size = Buffer.byteLength(JSON.stringify(row)) + 1;
  }
  return size;
}

/** Start of the last `lines` lines of a file (a final newline ends the last line, it does not start one). */
async function tailStart(handle: FileHandle, size: number, lines: number): Promise<number> {
  const block = Buffer.allocUnsafe(64 * 1024);
  let end = size;
  let seen = 0;
  let skipFinal = true;
  while (end > 0) {
    const start = Math.max(0, end - block.length);
    const { bytesRead } = await handle.read(block, 0, end - start, start);
    for (let i = bytesRead - 1; i >= 0; i--) {
      if (block[i] !== 0x0a) {
        skipFinal = false;
        continue;
      }
      if (skipFinal) {
        skipFinal = false;
        continue;
      }
      seen++;
      if (seen === lines) return start + i + 1;
    }
    end = start;
  }
  return 0;
}

function quoteIdentifier(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
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
