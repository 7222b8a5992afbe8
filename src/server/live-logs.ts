/**
 * Live step logs. While a step runs, its executor sends what the step wrote in chunks
 * (`POST /api/exec/jobs/:id/logs/:step/:stream/chunks?offset=N`); they are appended to
 * `<sharedDir>/jobs/<job>/logs/<step>.<stream>.live`, which `GET /api/jobs/:id/logs/:step/:stream` serves
 * until the final upload (`.log`, the authority) replaces it. Each new piece is published to the job's SSE
 * listeners as a `log` event here, and announced to the other servers (PostgreSQL NOTIFY with the new size:
 * they read the bytes from the shared directory themselves, see remote.ts).
 *
 * Idempotent by offset: a chunk whose bytes are already stored is acknowledged without writing; one that
 * overlaps the end adds only what is new; one that starts past the end is refused with the size the server
 * has (`STEWARD_LOG_OFFSET_MISMATCH`), so the executor resends from there. Bounded: a chunk is at most
 * `MAX_LOG_CHUNK_BYTES`, read whole into memory, and a live log stops at the step log limit.
 */
import { open, stat } from 'node:fs/promises';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { StewardError } from '../protocol/index.js';
import type { Store } from '../store/index.js';
import { checkSegmentName } from './results.js';
import type { JobWatch, LiveLogChunk } from './watch.js';

/** Largest accepted chunk body. */
export const MAX_LOG_CHUNK_BYTES = 1024 * 1024;

export class LiveLogs {
  /** Per live file, the tail of its chain of appends: appends to one file never interleave. */
  private readonly chains = new Map<string, Promise<unknown>>();

  constructor(
    private readonly store: Store,
    private readonly sharedDir: string,
    private readonly watch: JobWatch,
    /** The step log limit: a live log never grows past it. */
    private readonly limitBytes: number,
    private readonly logger: Logger,
  ) {}

  liveFile(jobId: string, step: string, stream: 'stdout' | 'stderr'): string {
    return path.join(this.sharedDir, 'jobs', jobId, 'logs', `${step}.${stream}.live`);
  }

  private finalFile(jobId: string, step: string, stream: 'stdout' | 'stderr'): string {
    return path.join(this.sharedDir, 'jobs', jobId, 'logs', `${step}.${stream}.log`);
  }

  /** Appends one chunk at `offset`; returns the live log's size after it. */
  async append(
    jobId: string,
    step: string,
    stream: 'stdout' | 'stderr',
    offset: number,
    body: unknown,
    declaredLength: number | undefined,
  ): Promise<{ size: number }> {
    checkSegmentName(step, 'params.step');
    const bytes = await readBounded(body, declaredLength);
    if (offset + bytes.length > this.limitBytes)
      throw new StewardError(
        'STEWARD_PAYLOAD_TOO_LARGE',
        `a live log stops at the step log limit of ${this.limitBytes} bytes (the step's final log is uploaded when it ends)`,
        { details: { limit: this.limitBytes } },
      );
    const file = this.liveFile(jobId, step, stream);
    const previous = this.chains.get(file) ?? Promise.resolve();
    const run = previous.then(
      () => this.write(jobId, step, stream, file, offset, bytes),
      () => this.write(jobId, step, stream, file, offset, bytes),
    );
    this.chains.set(file, run);
    try {
      return await run;
    } finally {
      if (this.chains.get(file) === run) this.chains.delete(file);
    }
  }

  private async write(
    jobId: string,
    step: string,
    stream: 'stdout' | 'stderr',
    file: string,
    offset: number,
    bytes: Buffer,
  ): Promise<{ size: number }> {
    // The step ended and its final log is stored: a late chunk has nothing to add.
    const final = await stat(this.finalFile(jobId, step, stream)).catch(() => undefined);
    if (final) return { size: final.size };
    mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    const handle = await open(file, 'a+', 0o600);
    let size: number;
    let chunk: LiveLogChunk | undefined;
    try {
      size = (await handle.stat()).size;
      if (offset > size)
        throw new StewardError(
          'STEWARD_LOG_OFFSET_MISMATCH',
          `the live ${stream} log of step ${step} has ${size} bytes; a chunk at offset ${offset} would leave a gap (send from ${size})`,
          { details: { size } },
        );
      const fresh = bytes.subarray(size - offset);
      if (fresh.length > 0) {
        await handle.write(fresh, 0, fresh.length, size);
        chunk = { stepId: step, stream, offset: size, text: fresh.toString('utf8') };
        size += fresh.length;
      }
    } finally {
      await handle.close();
    }
    if (chunk) {
      this.watch.publishLog(jobId, chunk);
      await this.store.files
        .announceLog(jobId, { stepId: step, stream, offset: chunk.offset, size })
        .catch((error: unknown) =>
          this.logger.warn({ err: error, jobId }, 'could not announce a live log chunk to other servers'),
        );
    }
    return { size };
  }

  /**
   * Bytes [offset, end) of a step's log as another server announced them: from the live file, or the final
   * log if the step ended meanwhile (its head is the live log byte for byte). Undefined when neither has them.
   */
  async read(
    jobId: string,
    log: { stepId: string; stream: 'stdout' | 'stderr'; offset: number; size: number },
  ): Promise<LiveLogChunk | undefined> {
    if (checkSegmentNameSafe(log.stepId) === false) return undefined;
    const length = Math.min(log.size - log.offset, MAX_LOG_CHUNK_BYTES);
    if (!(length > 0) || !Number.isSafeInteger(log.offset) || log.offset < 0) return undefined;
    for (const file of [
      this.liveFile(jobId, log.stepId, log.stream),
      this.finalFile(jobId, log.stepId, log.stream),
    ]) {
      const handle = await open(file, 'r').catch(() => undefined);
      if (!handle) continue;
      try {
        const buffer = Buffer.alloc(length);
        const { bytesRead } = await handle.read(buffer, 0, length, log.offset);
        if (bytesRead < length) continue;
        return { stepId: log.stepId, stream: log.stream, offset: log.offset, text: buffer.toString('utf8') };
      } finally {
        await handle.close();
      }
    }
    return undefined;
  }
}

function checkSegmentNameSafe(name: string): boolean {
  try {
    checkSegmentName(name, 'step');
    return true;
  } catch {
    return false;
  }
}

/** The whole body, refused past MAX_LOG_CHUNK_BYTES (declared or counted). */
async function readBounded(body: unknown, declaredLength: number | undefined): Promise<Buffer> {
  if (typeof (body as { pipe?: unknown } | null)?.pipe !== 'function')
    throw new StewardError(
      'STEWARD_BAD_REQUEST',
      'expected a raw request body with Content-Type: application/octet-stream',
    );
  const stream = body as Readable;
  const tooLarge = (): StewardError =>
    new StewardError('STEWARD_PAYLOAD_TOO_LARGE', `a log chunk is at most ${MAX_LOG_CHUNK_BYTES} bytes`, {
      details: { limit: MAX_LOG_CHUNK_BYTES },
    });
  if (declaredLength !== undefined && declaredLength > MAX_LOG_CHUNK_BYTES) {
    stream.resume();
    throw tooLarge();
  }
  // A chunk over the cap is refused and the rest of the body read and dropped (not the connection reset),
  // so the executor gets the answer.
  return new Promise<Buffer>((resolve, reject) => {
    const parts: Buffer[] = [];
    let length = 0;
    let failed = false;
    stream.on('data', (part: Buffer) => {
      if (failed) return;
      length += part.length;
      if (length > MAX_LOG_CHUNK_BYTES) {
        failed = true;
        reject(tooLarge());
        return;
      }
      parts.push(part);
    });
    stream.on('end', () => {
      if (!failed) resolve(Buffer.concat(parts, length));
    });
    stream.on('error', reject);
  });
}
