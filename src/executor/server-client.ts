/**
 * The executor's only channel to the server: HTTP with the job-scoped token of one job. It can fetch that
 * job's workflow and assets and upload that job's results and logs — nothing else.
 *
 * With several servers behind a load balancer, one may die or restart under a request. Transient failures
 * (connection refused/reset, 502/503/504 from the proxy) are retried with capped, jittered backoff for up to
 * `retryForMs`, so the request lands on another server. Retrying is safe because every request is
 * idempotent: reads, and uploads that replace the same named file (a temp file renamed into place) and
 * upsert the same result row.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ParamValue } from '../protocol/index.js';
import { StewardError, type ErrorCode } from '../protocol/index.js';

export interface JobWorkflow {
  jobId: string;
  attempt: number;
  user: string;
  source: string;
  format: 'yaml' | 'json';
  params: Record<string, ParamValue>;
  assets: { path: string; size: number; digest: string }[];
  /** Limits the server sets for the run. */
  limits: { stepLogBytes: number };
  /** Files given for `file` params. */
  inputs: { param: string; name: string; size: number; sha256: string }[];
}

/** What the server said to a live log chunk (see `appendLog`). */
export type AppendLogOutcome =
  | { kind: 'stored'; size: number }
  /** The server has `size` bytes: send from there. */
  | { kind: 'mismatch'; size: number }
  /** Not worth sending more of this stream (past the limit) or of any (an older server, a dead token). */
  | { kind: 'refused'; status: number };

export interface ServerClientOptions {
  /** How long transient failures are retried before the request fails. Default 30000 ms. */
  retryForMs?: number;
  /** First pause between attempts, doubled each time. Default 100 ms. */
  initialBackoffMs?: number;
  /** Longest pause between attempts. Default 2000 ms. */
  maxBackoffMs?: number;
}

/** Pauses before asking again for an attempt another agent holds (see `workflow`). */
const CLAIM_RECHECK_MS = [200, 400, 800, 1600, 3200];

/** Statuses a proxy or a stopping server answers while another server could serve the request. */
const RETRYABLE_STATUSES = new Set([502, 503, 504]);

export class ServerClient {
  private readonly base: string;
  private readonly retryForMs: number;
  private readonly initialBackoffMs: number;
  private readonly maxBackoffMs: number;

  constructor(
    serverUrl: string,
    private readonly jobId: string,
    private readonly token: string,
    options: ServerClientOptions = {},
  ) {
    this.base = `${serverUrl.replace(/\/+$/, '')}/api/exec/jobs/${encodeURIComponent(jobId)}`;
    this.retryForMs = options.retryForMs ?? 30_000;
    this.initialBackoffMs = options.initialBackoffMs ?? 100;
    this.maxBackoffMs = options.maxBackoffMs ?? 2000;
  }

  /**
   * Fetches the job's workflow. With `agentId`, the fetch claims the job's attempt for that agent (with
   * `claim: 'event'`, checks that the agent's `loading` event claimed it, waiting while the server has not
   * applied that event yet); another agent's claim fails it with STEWARD_ATTEMPT_CLAIMED.
   */
  async workflow(agentId?: string, claim: 'fetch' | 'event' = 'fetch'): Promise<JobWorkflow> {
    const search = new URLSearchParams(agentId === undefined ? {} : { agent: agentId });
    if (agentId !== undefined && claim === 'event') search.set('claim', 'event');
    const query = agentId === undefined ? '' : `?${search.toString()}`;
    let refusal: StewardError | undefined;
    for (let attempt = 0; ; attempt++) {
      try {
        const response = await this.request('GET', `/workflow${query}`);
        return (await response.json()) as JobWorkflow;
      } catch (error) {
        // Asked again after a refusal, the attempt is gone (the server gave it up for a new one while
        // another agent held it): it was never this agent's, so the refusal stands.
        if (refusal && error instanceof StewardError && error.code === 'STEWARD_UNAUTHENTICATED')
          throw refusal;
        // The holder may have just handed the attempt back (its executor died loading it): the hand-back
        // event that frees the claim can reach the server a moment after this fetch. Ask again a few times
        // before giving the offer up; a holder that still loads it keeps it.
        const pause = CLAIM_RECHECK_MS[attempt];
        if (
          !(error instanceof StewardError) ||
          error.code !== 'STEWARD_ATTEMPT_CLAIMED' ||
          pause === undefined
        )
          throw error;
        refusal = error;
        await new Promise((resolve) => setTimeout(resolve, pause));
      }
    }
  }

  /**
   * A JSON call to another of the job's executor routes (`path` below `/api/exec/jobs/<id>`), with the
   * job token and the same retries; the parsed answer, or undefined for 204.
   */
  async json(method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown): Promise<unknown> {
    const text = body === undefined ? undefined : JSON.stringify(body);
    const response = await this.request(method, path, {
      ...(text === undefined
        ? {}
        : { body: () => text as never, headers: { 'content-type': 'application/json' } }),
    });
    return response.status === 204 ? undefined : await response.json();
  }

  /** Downloads an asset and checks its digest, so a corrupted transfer never reaches a step. */
  async downloadAsset(digest: string, target: string): Promise<void> {
    const response = await this.request('GET', `/assets/${digest}`);
    const hash = createHash('sha256');
    const body = Readable.fromWeb(response.body as never);
    body.on('data', (chunk: Buffer) => hash.update(chunk));
    await pipeline(body, createWriteStream(target, { flags: 'wx', mode: 0o600 }));
    const actual = hash.digest('hex');
    if (actual !== digest)
      throw new StewardError('STEWARD_INTERNAL', `asset ${target} digest mismatch (${actual} != ${digest})`);
  }

  /**
   * Fetches the job's input file for `param` into `target` (created, must not exist), checking its size and
   * sha256 against what the server announced.
   */
  async downloadInput(
    param: string,
    target: string,
    expected: { size: number; sha256: string },
  ): Promise<void> {
    const response = await this.request('GET', `/inputs/${encodeURIComponent(param)}`);
    const hash = createHash('sha256');
    let size = 0;
    const body = Readable.fromWeb(response.body as never);
    body.on('data', (chunk: Buffer) => {
      hash.update(chunk);
      size += chunk.length;
    });
    await pipeline(body, createWriteStream(target, { flags: 'wx', mode: 0o600 }));
    const actual = hash.digest('hex');
    if (actual !== expected.sha256 || size !== expected.size)
      throw new StewardError(
        'STEWARD_INTERNAL',
        `input ${param}: got ${size} bytes with sha256 ${actual}, expected ${expected.size} bytes with ${expected.sha256}`,
      );
  }

  /**
   * Sends one piece of a running step's log at `offset`. One try, a few seconds at most: live logs are best
   * effort (the final upload is the authority), and a slow server must not hold the step's shipper.
   */
  async appendLog(
    stepId: string,
    stream: 'stdout' | 'stderr',
    offset: number,
    bytes: Buffer,
  ): Promise<AppendLogOutcome> {
    const response = await fetch(
      `${this.base}/logs/${encodeURIComponent(stepId)}/${stream}/chunks?offset=${offset}`,
      {
        method: 'POST',
        headers: {
          authorization: `Bearer ${this.token}`,
          'content-type': 'application/octet-stream',
        },
        body: bytes,
        signal: AbortSignal.timeout(10_000),
      },
    );
    const body = (await response.json().catch(() => ({}))) as {
      size?: unknown;
      error?: { details?: { size?: unknown } };
    };
    if (response.ok && typeof body.size === 'number') return { kind: 'stored', size: body.size };
    const known = body.error?.details?.size;
    if (response.status === 409 && typeof known === 'number') return { kind: 'mismatch', size: known };
    if ([401, 404, 413].includes(response.status)) return { kind: 'refused', status: response.status };
    throw new Error(`live log chunk answered ${response.status}`);
  }

  async uploadResult(
    name: string,
    file: string,
    query: { kind: 'table' | 'file'; format?: string; rows?: number },
  ): Promise<void> {
    const params = new URLSearchParams({ kind: query.kind });
    if (query.format) params.set('format', query.format);
    if (query.rows !== undefined) params.set('rows', String(query.rows));
    await this.upload(
      `/results/${encodeURIComponent(name)}?${params.toString()}`,
      file,
      'STEWARD_RESULT_UPLOAD_FAILED',
    );
  }

  async uploadLog(stepId: string, stream: 'stdout' | 'stderr', file: string): Promise<void> {
    await this.upload(`/logs/${encodeURIComponent(stepId)}/${stream}`, file, 'STEWARD_RESULT_UPLOAD_FAILED');
  }

  private async upload(pathAndQuery: string, file: string, code: ErrorCode): Promise<void> {
    const { size } = await stat(file);
    await this.request('PUT', pathAndQuery, {
      // A fresh stream per attempt: a retried upload sends the whole file again.
      body: () => Readable.toWeb(createReadStream(file)) as never,
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) },
      duplex: 'half',
      code,
    });
  }

  private async request(
    method: string,
    pathAndQuery: string,
    init: { body?: () => never; headers?: Record<string, string>; duplex?: 'half'; code?: ErrorCode } = {},
  ): Promise<Response> {
    const giveUpAt = Date.now() + this.retryForMs;
    let backoff = this.initialBackoffMs;
    let response: Response;
    for (let attempt = 1; ; attempt++) {
      let failure: string;
      let cause: unknown;
      try {
        response = await fetch(this.base + pathAndQuery, {
          method,
          headers: { authorization: `Bearer ${this.token}`, ...init.headers },
          ...(init.body ? { body: init.body(), duplex: init.duplex } : {}),
        });
        if (!RETRYABLE_STATUSES.has(response.status)) break;
        failure = `${method} ${pathAndQuery.split('?')[0]} answered ${response.status}`;
        await response.body?.cancel().catch(() => undefined);
      } catch (error) {
        if (!isTransientNetworkError(error)) {
          throw new StewardError(
            'STEWARD_SERVER_UNREACHABLE',
            `cannot reach the server for job ${this.jobId}: ${describeNetworkError(error)}`,
            { cause: error },
          );
        }
        failure = describeNetworkError(error);
        cause = error;
      }
      const pause = Math.min(backoff, this.maxBackoffMs) * (0.5 + Math.random() / 2);
      if (Date.now() + pause > giveUpAt) {
        throw new StewardError(
          'STEWARD_SERVER_UNREACHABLE',
          `cannot reach the server for job ${this.jobId} after ${attempt} attempt(s) in ${Math.round(this.retryForMs / 1000)}s: ${failure}`,
          { cause },
        );
      }
      await new Promise((resolve) => setTimeout(resolve, pause));
      backoff *= 2;
    }
    if (!response.ok) {
      let message = `${method} ${pathAndQuery.split('?')[0]} answered ${response.status}`;
      let code: ErrorCode = init.code ?? 'STEWARD_INTERNAL';
      try {
        const body = (await response.json()) as { error?: { code?: ErrorCode; message?: string } };
        if (body.error?.message) message += `: ${body.error.message}`;
        if (response.status === 401 || response.status === 404 || response.status === 409)
          code = body.error?.code ?? code;
      } catch {
        // Not JSON: keep the status line.
      }
      throw new StewardError(code, message, { details: { status: response.status } });
    }
    return response;
  }
}

/** Error codes of a connection that failed or broke before an answer: another server may answer. */
const TRANSIENT_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_CLOSED',
]);

/** fetch() reports network failures as `TypeError: fetch failed` with the system error as `cause`. */
function networkCode(error: unknown): string | undefined {
  for (let current: unknown = error, depth = 0; current && depth < 4; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

function isTransientNetworkError(error: unknown): boolean {
  const code = networkCode(error);
  return code !== undefined && TRANSIENT_CODES.has(code);
}

function describeNetworkError(error: unknown): string {
  const code = networkCode(error);
  const message = (error as Error).message;
  return code && !message.includes(code) ? `${message} (${code})` : message;
}
