/**
 * The executor's only channel to the server: HTTP with the job-scoped token of one job. It can fetch that
 * job's workflow and assets and upload that job's results and logs — nothing else.
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
}

export class ServerClient {
  private readonly base: string;

  constructor(
    serverUrl: string,
    private readonly jobId: string,
    private readonly token: string,
  ) {
    this.base = `${serverUrl.replace(/\/+$/, '')}/api/exec/jobs/${encodeURIComponent(jobId)}`;
  }

  async workflow(): Promise<JobWorkflow> {
    const response = await this.request('GET', '/workflow');
    return (await response.json()) as JobWorkflow;
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
      body: Readable.toWeb(createReadStream(file)) as never,
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) },
      duplex: 'half',
      code,
    });
  }

  private async request(
    method: string,
    pathAndQuery: string,
    init: { body?: never; headers?: Record<string, string>; duplex?: 'half'; code?: ErrorCode } = {},
  ): Promise<Response> {
    let response: Response;
    try {
      response = await fetch(this.base + pathAndQuery, {
        method,
        headers: { authorization: `Bearer ${this.token}`, ...init.headers },
        ...(init.body ? { body: init.body, duplex: init.duplex } : {}),
      });
    } catch (error) {
      throw new StewardError(
        'STEWARD_SERVER_UNREACHABLE',
        `cannot reach the server for job ${this.jobId}: ${(error as Error).message}`,
        { cause: error },
      );
    }
    if (!response.ok) {
      let message = `${method} ${pathAndQuery.split('?')[0]} answered ${response.status}`;
      let code: ErrorCode = init.code ?? 'STEWARD_INTERNAL';
      try {
        const body = (await response.json()) as { error?: { code?: ErrorCode; message?: string } };
        if (body.error?.message) message += `: ${body.error.message}`;
        if (response.status === 401 || response.status === 404) code = body.error?.code ?? code;
      } catch {
        // Not JSON: keep the status line.
      }
      throw new StewardError(code, message, { details: { status: response.status } });
    }
    return response;
  }
}
