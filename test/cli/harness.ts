/**
 * Test harness for the CLI: the real `steward` command built from src (run as a child process through
 * bin/steward.js), and a small *test double of the server* — a real node:http server on port 0 that answers
 * only the routes a test registers, with the shapes documented in src/protocol/api.ts. The CLI under test is
 * never mocked; the double stands in for the server, which other work provides.
 */
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach } from 'vitest';
import type { Job, JobDetail, StepInfo } from '../../src/protocol/index.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/**
 * The CLI under test: the repository's own bin/steward.js over dist/, which the global test setup builds
 * once before any test file runs (test/global-setup.ts).
 */
export const cliBin = path.join(repoRoot, 'bin', 'steward.js');

/** A temp directory named after the test, so leftovers say which test made them. */
export async function tempDirFor(title: string): Promise<string> {
  const slug = title
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .slice(0, 40);
  return fs.mkdtemp(path.join(os.tmpdir(), `steward-cli-${slug}-`));
}

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface CliRunOptions {
  /** Extra environment; STEWARD_* from the outer environment never leak in. */
  env?: Record<string, string>;
  /** Written to stdin, which is then closed (stdin is never a terminal here). */
  input?: string;
  configHome: string;
  cwd?: string;
  timeoutMs?: number;
}

export function runCli(bin: string, args: readonly string[], options: CliRunOptions): Promise<CliRun> {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) if (!key.startsWith('STEWARD_')) env[key] = value;
  Object.assign(
    env,
    { XDG_CONFIG_HOME: options.configHome, HOME: options.configHome, NO_COLOR: '1' },
    options.env ?? {},
  );
  const child = spawn(process.execPath, [bin, ...args], {
    env,
    cwd: options.cwd ?? repoRoot,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (text: string) => (stdout += text));
  child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
  child.stdin.end(options.input ?? '');
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(
        new Error(
          `steward ${args.join(' ')} did not exit within ${options.timeoutMs ?? 20_000}ms\nstdout: ${stdout}\nstderr: ${stderr}`,
        ),
      );
    }, options.timeoutMs ?? 20_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

export interface RecordedRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  headers: http.IncomingHttpHeaders;
  body: string;
}

export type Handler = (request: RecordedRequest, response: http.ServerResponse) => void | Promise<void>;

/** The test double of the Steward server. */
export class ServerDouble {
  readonly requests: RecordedRequest[] = [];
  private readonly routes: { method: string; path: string | RegExp; handler: Handler }[] = [];
  private readonly server = http.createServer((request, response) => void this.dispatch(request, response));
  private readonly sockets = new Set<Socket>();
  url = '';

  static async start(): Promise<ServerDouble> {
    const double = new ServerDouble();
    double.server.on('connection', (socket) => {
      double.sockets.add(socket);
      socket.on('close', () => double.sockets.delete(socket));
    });
    await new Promise<void>((resolve) => double.server.listen(0, '127.0.0.1', resolve));
    double.url = `http://127.0.0.1:${(double.server.address() as AddressInfo).port}`;
    return double;
  }

  on(method: string, path: string | RegExp, handler: Handler): this {
    this.routes.push({ method, path, handler });
    return this;
  }

  /** Requests to one route, in order. */
  calls(method: string, path: string): RecordedRequest[] {
    return this.requests.filter((request) => request.method === method && request.path === path);
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async dispatch(request: http.IncomingMessage, response: http.ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    const url = new URL(request.url ?? '/', 'http://double');
    const recorded: RecordedRequest = {
      method: request.method ?? 'GET',
      path: url.pathname,
      query: url.searchParams,
      headers: request.headers,
      body: Buffer.concat(chunks).toString('utf8'),
    };
    this.requests.push(recorded);
    const route = this.routes.find(
      (candidate) =>
        candidate.method === recorded.method &&
        (typeof candidate.path === 'string'
          ? candidate.path === recorded.path
          : candidate.path.test(recorded.path)),
    );
    if (!route)
      return sendJson(response, 404, {
        error: { code: 'STEWARD_NOT_FOUND', message: `no route ${recorded.method} ${recorded.path}` },
      });
    await route.handler(recorded, response);
  }
}

export function sendJson(response: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  response.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
  });
  response.end(text);
}

export function sseEvent(event: string, data: unknown): string {
  return `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}

export function bearer(request: RecordedRequest): string | undefined {
  return /^Bearer (.+)$/.exec(request.headers.authorization ?? '')?.[1];
}

export function makeJob(overrides: Partial<Job> = {}): Job {
  return {
    id: '01JTESTJOB0000000000000001',
    user: 'alice',
    workflow: { space: 'alice', name: 'sales-report', version: 3 },
    params: {},
    labels: [],
    cluster: 'local',
    state: 'queued',
    attempt: 1,
    createdAt: '2026-11-22T10:00:00.000Z',
    startedAt: null,
    finishedAt: null,
    agentId: null,
    executor: null,
    error: null,
    schedule: null,
    ...overrides,
  };
}

export function makeStep(id: string, overrides: Partial<StepInfo> = {}): StepInfo {
  return {
    id,
    kind: 'sql',
    state: 'pending',
    startedAt: null,
    finishedAt: null,
    durationMs: null,
    rows: null,
    progress: null,
    message: null,
    ...overrides,
  };
}

export function makeDetail(
  job: Partial<Job> = {},
  steps: StepInfo[] = [],
  attempts?: JobDetail['attempts'],
): JobDetail {
  const base = makeJob(job);
  return {
    ...base,
    workflow: { ...base.workflow, pushedBy: base.user },
    steps,
    inputs: [],
    pinned: false,
    filesPurgedAt: null,
    attempts: attempts ?? [
      {
        attempt: base.attempt,
        state: base.state,
        agentId: base.agentId,
        startedAt: base.startedAt,
        finishedAt: base.finishedAt,
        error: base.error,
      },
    ],
  };
}

/** What `useServerDouble` gives each test: the double, a config directory, and the env pointing at both. */
export interface ServerDoubleSetup {
  server: ServerDouble;
  dir: string;
  env: Record<string, string>;
}

/**
 * A fresh server double and config directory for every test of the file (closed and removed after it),
 * with the environment that points the CLI at the double with `token`. Read the fields inside a test.
 */
export function useServerDouble(token: string): ServerDoubleSetup {
  const setup = {} as ServerDoubleSetup;
  beforeEach(async (context) => {
    setup.dir = await tempDirFor(context.task.name);
    setup.server = await ServerDouble.start();
    setup.env = { STEWARD_SERVER: setup.server.url, STEWARD_TOKEN: token };
  });
  afterEach(async () => {
    await setup.server.close();
    await fs.rm(setup.dir, { recursive: true, force: true });
  });
  return setup;
}
