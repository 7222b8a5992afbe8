/**
 * Files for `file` params. A user uploads a file (`POST /api/uploads`); it is streamed to a temp file in
 * `<sharedDir>/uploads/`, hashed (sha256) and counted against `uploads.maxBytes` on the way, and renamed
 * into place when complete. A submission naming the upload's id for a file param reserves it (one
 * conditional UPDATE: only its owner, only once, only unexpired), and once the job exists the file is
 * renamed to `<sharedDir>/jobs/<job>/inputs/<param>` and becomes the job's input row. Uploads nobody used
 * expire (`uploads.ttl`). The executor fetches inputs with its job token (`GET /api/exec/jobs/:id/inputs/:param`).
 *
 * Another user's upload id gets the same "not found" as an id that does not exist: the API never says
 * whether someone else's upload exists.
 */
import { createHash } from 'node:crypto';
import { createWriteStream, mkdirSync } from 'node:fs';
import { link, mkdir, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Logger } from 'pino';
import type { ParamSpec } from '../engine/index.js';
import { StewardError, safeFileName, type ParamValue } from '../protocol/index.js';
import type { JobInputRecord, Store, UploadRecord } from '../store/index.js';
import { newId } from './secrets.js';

export interface UploadLimits {
  /** Largest accepted file. */
  maxBytes: number;
  /** How long an unused upload is kept. */
  ttlMs: number;
}

/** What a submission reserved: the uploads by param, and the params with each upload id replaced by its name. */
export interface ReservedInputs {
  jobId: string;
  params: Record<string, ParamValue>;
  uploads: { param: string; upload: UploadRecord }[];
}

const UPLOAD_ID = /^upl_[A-Za-z0-9_-]{16,64}$/;

/** How often expired uploads are removed. */
const SWEEP_INTERVAL_MS = 10 * 60_000;

export class UploadService {
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly store: Store,
    private readonly sharedDir: string,
    private readonly limits: UploadLimits,
    private readonly logger: Logger,
  ) {}

  get maxBytes(): number {
    return this.limits.maxBytes;
  }

  private uploadFile(id: string): string {
    return path.join(this.sharedDir, 'uploads', id);
  }

  /** Where a job's input for `param` is stored (param names are plain identifiers). */
  inputFile(jobId: string, param: string): string {
    return path.join(this.sharedDir, 'jobs', jobId, 'inputs', param);
  }

  /** Removes expired uploads every few minutes (and once now). Idempotent. */
  start(): void {
    if (this.timer) return;
    const sweep = (): void => {
      this.sweep().catch((error: unknown) => this.logger.warn({ err: error }, 'upload sweep failed'));
    };
    sweep();
    this.timer = setInterval(sweep, SWEEP_INTERVAL_MS);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Streams `body` to disk (bounded, hashed) and records it as `owner`'s upload. */
  async create(
    owner: string,
    rawName: string,
    body: unknown,
    declaredLength: number | undefined,
  ): Promise<UploadRecord> {
    if (!isReadable(body))
      throw new StewardError(
        'STEWARD_BAD_REQUEST',
        'expected the file as the raw request body with Content-Type: application/octet-stream',
      );
    const limit = this.limits.maxBytes;
    if (declaredLength !== undefined && declaredLength > limit) {
      body.resume();
      throw tooLarge(limit, declaredLength);
    }
    const id = `upl_${newId(18)}`;
    const dir = path.join(this.sharedDir, 'uploads');
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const temp = path.join(dir, `.upload-${id}`);
    const hash = createHash('sha256');
    let size = 0;
    const counter = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        size += chunk.length;
        if (size > limit) return callback(tooLarge(limit));
        hash.update(chunk);
        callback(null, chunk);
      },
    });
    // The request is piped, not part of the pipeline: over the limit, the rest of it is read and dropped so
    // the client gets the 413 instead of a reset connection.
    const stored = pipeline(counter, createWriteStream(temp, { mode: 0o600, flags: 'wx' }));
    body.on('error', (error) => counter.destroy(error));
    body.pipe(counter);
    try {
      await stored;
      await rename(temp, this.uploadFile(id));
    } catch (error) {
      body.unpipe(counter);
      body.resume();
      await rm(temp, { force: true });
      throw error;
    }
    const now = Date.now();
    const upload: UploadRecord = {
      id,
      owner,
      name: safeFileName(rawName),
      size,
      sha256: hash.digest('hex'),
      createdAt: now,
      expiresAt: now + this.limits.ttlMs,
      jobId: null,
    };
    try {
      await this.store.files.insertUpload(upload);
    } catch (error) {
      await rm(this.uploadFile(id), { force: true });
      throw error;
    }
    return upload;
  }

  /**
   * For each `file` param given a value, reserves the caller's upload of that id for job `jobId` and checks
   * it against the param's `accept` and `maxSize`. Returns the params with each id replaced by the file's
   * name. On any failure, what was reserved is released and the error names the param (`details.param`).
   */
  async reserve(
    owner: string,
    jobId: string,
    specs: readonly ParamSpec[],
    params: Record<string, ParamValue>,
  ): Promise<ReservedInputs> {
    const reserved: ReservedInputs = { jobId, params: { ...params }, uploads: [] };
    const files = specs.filter((spec) => spec.type === 'file' && params[spec.name] !== undefined);
    if (files.length === 0) return reserved;
    try {
      const now = Date.now();
      for (const spec of files) {
        const id = String(params[spec.name]);
        const upload = UPLOAD_ID.test(id) ? await this.store.files.getUpload(id) : undefined;
        // Someone else's upload, a used one and no upload at all look the same.
        if (!upload || upload.owner !== owner || upload.jobId !== null || upload.expiresAt <= now)
          throw paramError(
            'STEWARD_NOT_FOUND',
            spec.name,
            `params.${spec.name}: no upload ${JSON.stringify(id)} (upload the file first with POST /api/uploads; an upload is used by one job and expires unused)`,
          );
        checkAccepted(spec, upload);
        if (!(await this.store.files.reserveUpload(id, owner, jobId, now)))
          throw paramError(
            'STEWARD_NOT_FOUND',
            spec.name,
            `params.${spec.name}: no upload ${JSON.stringify(id)}`,
          );
        reserved.uploads.push({ param: spec.name, upload });
        reserved.params[spec.name] = upload.name;
      }
    } catch (error) {
      await this.release(jobId);
      throw error;
    }
    return reserved;
  }

  /** Frees what a submission reserved (it failed, or it was a retry answered with an existing job). */
  async release(jobId: string): Promise<void> {
    await this.store.files.releaseUploads(jobId);
  }

  /** Moves the reserved uploads into the job's inputs. Called after the job row exists, before its offer. */
  async attach(reserved: ReservedInputs): Promise<JobInputRecord[]> {
    const inputs: JobInputRecord[] = [];
    for (const { param, upload } of reserved.uploads) {
      const target = this.inputFile(reserved.jobId, param);
      await mkdir(path.dirname(target), { recursive: true, mode: 0o700 });
      await rename(this.uploadFile(upload.id), target);
      inputs.push(await this.store.files.consumeUpload(upload, reserved.jobId, param, Date.now()));
    }
    return inputs;
  }

  listInputs(jobId: string): Promise<JobInputRecord[]> {
    return this.store.files.listJobInputs(jobId);
  }

  /** A job's stored input for `param`, or STEWARD_NOT_FOUND. */
  async locateInput(jobId: string, param: string): Promise<{ file: string; input: JobInputRecord }> {
    const input = await this.store.files.getJobInput(jobId, param);
    if (!input) throw new StewardError('STEWARD_NOT_FOUND', `job ${jobId} has no input file for ${param}`);
    return { file: this.inputFile(jobId, param), input };
  }

  /**
   * For running a job again with the same files: makes each stored input of `fromJobId` a fresh upload of
   * `owner` (a hard link, no copy) and returns param → upload id, to pass as those params' values to
   * `JobService.submit`, which then moves them into the new job like any upload.
   */
  async stageRerunInputs(owner: string, fromJobId: string): Promise<Record<string, string>> {
    const staged: Record<string, string> = {};
    const now = Date.now();
    mkdirSync(path.join(this.sharedDir, 'uploads'), { recursive: true, mode: 0o700 });
    for (const input of await this.listInputs(fromJobId)) {
      const id = `upl_${newId(18)}`;
      await link(this.inputFile(fromJobId, input.param), this.uploadFile(id));
      await this.store.files.insertUpload({
        id,
        owner,
        name: input.name,
        size: input.size,
        sha256: input.sha256,
        createdAt: now,
        expiresAt: now + this.limits.ttlMs,
        jobId: null,
      });
      staged[input.param] = id;
    }
    return staged;
  }

  /** Deletes expired uploads (rows, then files). Returns how many. */
  async sweep(now = Date.now()): Promise<number> {
    const expired = await this.store.files.takeExpiredUploads(now);
    for (const upload of expired) await rm(this.uploadFile(upload.id), { force: true });
    return expired.length;
  }
}

function checkAccepted(spec: ParamSpec, upload: UploadRecord): void {
  if (spec.maxSize !== undefined && upload.size > spec.maxSize)
    throw paramError(
      'STEWARD_PARAMS_INVALID',
      spec.name,
      `params.${spec.name}: the file is ${upload.size} bytes, over this param's maxSize of ${spec.maxSize}`,
    );
  if (spec.accept !== undefined) {
    const lower = upload.name.toLowerCase();
    if (!spec.accept.some((ext) => lower.endsWith(ext)))
      throw paramError(
        'STEWARD_PARAMS_INVALID',
        spec.name,
        `params.${spec.name}: expected a file ending in ${spec.accept.join(', ')}, got ${JSON.stringify(upload.name)}`,
      );
  }
}

function paramError(
  code: 'STEWARD_NOT_FOUND' | 'STEWARD_PARAMS_INVALID',
  param: string,
  message: string,
): StewardError {
  return new StewardError(code, message, {
    details: { param, issues: [{ path: `params.${param}`, message }] },
  });
}

function tooLarge(limit: number, declared?: number): StewardError {
  return new StewardError(
    'STEWARD_PAYLOAD_TOO_LARGE',
    `${declared === undefined ? 'the upload' : `an upload of ${declared} bytes`} exceeds the server's limit of ${limit} bytes (uploads.maxBytes)`,
    { details: { limit } },
  );
}

function isReadable(body: unknown): body is Readable {
  return typeof (body as { pipe?: unknown } | null)?.pipe === 'function';
}
