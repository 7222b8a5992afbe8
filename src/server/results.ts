/**
 * Job results and logs on disk. Uploads stream to a temp file in the job's directory and are renamed into
 * place only when complete, so a reader never sees half a file. Layout:
 *   <sharedDir>/results/<jobId>/<name>.parquet|.csv   (tables)
 *   <sharedDir>/results/<jobId>/<name>                (files)
 *   <sharedDir>/jobs/<jobId>/logs/<step>.<stream>.log
 * `sharedDir` is the directory every server of an HA setup mounts (default the data dir); renames within it
 * are atomic for readers on any of them.
 * Previews are result-preview.ts's; reading stored logs in bounded pieces is result-logs.ts's.
 */
import { createWriteStream, mkdirSync } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Logger } from 'pino';
import { STEP_LOG_MARKER_MAX_BYTES, StepLogWriter } from '../engine/step-log.js';
import { StewardError } from '../protocol/index.js';
import type { ResultRecord, Store } from '../store/index.js';
import { listLogs, openLogSlice, type LogListing, type LogSlice, type LogSliceQuery } from './result-logs.js';
import { ResultPreviews, type PreviewResult } from './result-preview.js';
import { checkSegmentName } from './result-names.js';
import { newId } from './secrets.js';

export { checkSegmentName, contentDisposition } from './result-names.js';
export type { LogListing, LogSlice } from './result-logs.js';
export type { PreviewResult } from './result-preview.js';

const TABLE_FORMATS = new Set(['parquet', 'csv']);

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

export class ResultFiles {
  private readonly limits: ResultLimits;

  private readonly previews: ResultPreviews;

  constructor(
    private readonly store: Store,
    private readonly sharedDir: string,
    private readonly limitBytes: number,
    logger: Logger,
    limits: Partial<ResultLimits> = {},
  ) {
    this.limits = { ...DEFAULT_LIMITS, ...limits };
    this.previews = new ResultPreviews(
      { cellBytes: this.limits.previewCellBytes, responseBytes: this.limits.previewBytes },
      logger,
    );
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
    return this.previews.preview({ jobId, name, file, format, rows: result.rows }, limit, offset);
  }

  /**
   * Every stored log of a job with its size, and its first bytes as text while the listing's budget lasts
   * (never more than `maxBytes` of log text in all, read with bounded reads).
   */
  listLogs(jobId: string, maxBytes: number): Promise<LogListing[]> {
    return listLogs(this.logDir(jobId), maxBytes);
  }

  /**
   * Where a read of one stored log starts and ends: a byte range, or the start of its last `tail` lines
   * (found by reading backwards in 64 KiB blocks; a stored log is bounded by the step log cap).
   */
  logSlice(
    jobId: string,
    step: string,
    stream: 'stdout' | 'stderr',
    query: LogSliceQuery,
  ): Promise<LogSlice> {
    return openLogSlice(this.logDir(jobId), jobId, step, stream, query);
  }

  close(): Promise<void> {
    return this.previews.close();
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
    // What was written is what passed the counter: no stat of the file just renamed.
    return counter.bytes;
  }

  /** Checks the body and returns a pass-through that fails it past the upload limit (declared or counted). */
  private counter(body: unknown, declaredLength: number | undefined): Transform & { bytes: number } {
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
    const counter = Object.assign(
      new Transform({
        transform(chunk: Buffer, _encoding, callback) {
          counter.bytes += chunk.length;
          if (counter.bytes > limit)
            callback(
              new StewardError('STEWARD_PAYLOAD_TOO_LARGE', `upload exceeds the limit of ${limit} bytes`),
            );
          else callback(null, chunk);
        },
      }),
      { bytes: 0 },
    );
    return counter;
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
