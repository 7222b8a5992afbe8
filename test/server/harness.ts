/**
 * A real server for tests: temp data directory, a real store (SQLite by default, or PostgreSQL in its own
 * schema), the embedded bus, requests through fastify's inject (or real HTTP after listen()).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { EmbeddedBus } from '../../src/bus/index.js';
import { z } from 'zod';
import type { CallOptions, CallResult } from '../../src/cli/client.js';
import { routePath } from '../../src/cli/client.js';
import {
  apiRoutes,
  ErrorResponse,
  type ApiRoute,
  type JobOffer,
  type JobStateEvent,
  type RouteName,
} from '../../src/protocol/index.js';
import { compileServerConfig, type StoreConfig } from '../../src/config/index.js';
import { createServer, type StewardServer } from '../../src/server/index.js';
import type { Backend, BackendHandle } from '../store/backends.js';
import { sqliteBackend } from '../store/backends.js';
import { until } from '../support/wait.js';

export const ADMIN_PASSWORD = 'admin-password-for-tests';

export const REPORT_WORKFLOW = `name: report
description: Sums a few numbers
params:
  region:
    type: string
    required: true
  limit:
    type: integer
    default: 10
steps:
  - id: numbers
    sql: SELECT range AS n FROM range(3)
  - id: total
    sql: SELECT sum(n) AS s FROM numbers
outputs: [total]
`;

export interface RawRequest {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  url: string;
  token?: string;
  body?: unknown;
  headers?: Record<string, string>;
  payload?: Buffer | string;
}

/** An answer as sent: the body parsed as JSON when it is JSON, unchecked (`errorOf` checks error bodies). */
export interface RawResponse {
  status: number;
  json: unknown;
  text: string;
  headers: Record<string, unknown>;
}

/** A route call from a test: the route's own params, query and body, plus the caller's token. */
export type HarnessCallOptions<N extends RouteName> = Pick<CallOptions<N>, 'params' | 'query' | 'body'> & {
  token?: string;
  headers?: Record<string, string>;
};
type HarnessCallArgs<N extends RouteName> =
  object extends CallOptions<N> ? [options?: HarnessCallOptions<N>] : [options: HarnessCallOptions<N>];
/** A JSON route answers with its body parsed by the route's schema; any other with the raw response. */
export type HarnessCallResult<N extends RouteName> =
  CallResult<N> extends Response ? RawResponse : CallResult<N>;

export interface Harness {
  server: StewardServer;
  bus: EmbeddedBus;
  dataDir: string;
  storeConfig: StoreConfig;
  /**
   * Calls route `name` of the route table (method and path from `apiRoutes`) and parses a JSON answer with the
   * route's response schema; any answer other than the route's success status throws with its body.
   */
  call<N extends RouteName>(name: N, ...args: HarnessCallArgs<N>): Promise<HarnessCallResult<N>>;
  /** The same call, for a refusal: the answer's status and its body parsed with `ErrorResponse`. */
  callError<N extends RouteName>(
    name: N,
    ...args: HarnessCallArgs<N>
  ): Promise<{ status: number; error: z.infer<typeof ErrorResponse>['error'] }>;
  /** A request as given (malformed input, headers, raw bodies); its JSON is `unknown`. */
  raw(options: RawRequest): Promise<RawResponse>;
  login(user: string, password: string): Promise<string>;
  adminToken(): Promise<string>;
  /** Creates a user (via the admin API) and returns a login token for them. */
  userToken(name: string, role?: 'admin' | 'user'): Promise<string>;
  /** Closes the server only (the data directory and bus survive: for restart tests). */
  stop(): Promise<void>;
  /** Starts a new server on the same data directory and store. */
  restart(extra?: Record<string, unknown>): Promise<void>;
  dispose(): Promise<void>;
}

export interface HarnessOptions {
  backend?: Backend;
  title?: string;
  config?: Record<string, unknown>;
  adminPassword?: string | undefined;
  /** The built portal to serve at `/` (default: the server's own, absent when running from src). */
  portalDir?: string;
  /** The server's and store's clock (default `Date.now`): expiry tests move it instead of waiting. */
  clock?: () => number;
  /** The schedule firing loop (default: on); schedule tests turn it off and call `fireSchedules`. */
  scheduler?: { enabled?: boolean; misfireGraceMs?: number };
}

export async function startHarness(options: HarnessOptions = {}): Promise<Harness> {
  const backend = options.backend ?? sqliteBackend;
  const handle: BackendHandle = await backend.create(options.title ?? 'server');
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'steward-server-'));
  const storeConfig: StoreConfig =
    backend.name === 'sqlite' ? { kind: 'sqlite', path: path.join(dataDir, 'steward.db') } : handle.config;
  let bus = new EmbeddedBus({});
  const logger = pino({ level: process.env.STEWARD_TEST_LOG ?? 'silent' });
  const make = (extra: Record<string, unknown> = {}): Promise<StewardServer> =>
    createServer({
      config: compileServerConfig({ dataDir, port: 0, store: storeConfig, ...options.config, ...extra }),
      bus,
      logger,
      adminPassword: 'adminPassword' in options ? options.adminPassword : ADMIN_PASSWORD,
      ...(options.portalDir !== undefined ? { portalDir: options.portalDir } : {}),
      ...(options.clock !== undefined ? { clock: options.clock } : {}),
      ...(options.scheduler !== undefined ? { scheduler: options.scheduler } : {}),
    });
  let server: StewardServer;
  try {
    server = await make();
  } catch (error) {
    await bus.close();
    rmSync(dataDir, { recursive: true, force: true });
    await handle.dispose();
    throw error;
  }
  const passwords = new Map<string, string>([['admin', ADMIN_PASSWORD]]);

  const harness: Harness = {
    get server() {
      return server;
    },
    get bus() {
      return bus;
    },
    dataDir,
    storeConfig,
    call(name, ...args) {
      return callRoute(harness, name, args[0] ?? {}, false) as never;
    },
    callError(name, ...args) {
      return callRoute(harness, name, args[0] ?? {}, true) as never;
    },
    async raw({ method, url, token, body, headers, payload }) {
      const response = await server.app.inject({
        method,
        url,
        headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
        ...(body !== undefined
          ? { payload: body as Record<string, unknown> }
          : payload !== undefined
            ? { payload }
            : {}),
      });
      let json: unknown;
      try {
        json = JSON.parse(response.body);
      } catch {
        json = undefined;
      }
      return { status: response.statusCode, json, text: response.body, headers: response.headers };
    },
    async login(user, password) {
      const response = await harness.raw({
        method: 'POST',
        url: '/api/auth/login',
        body: { user, password },
      });
      if (response.status !== 200) throw new Error(`login as ${user} failed: ${response.text}`);
      return bodyOf('login', response).token;
    },
    adminToken() {
      return harness.login('admin', ADMIN_PASSWORD);
    },
    async userToken(name, role = 'user') {
      if (!passwords.has(name)) {
        const password = `password-of-${name}`;
        await harness.call('createUser', {
          token: await harness.adminToken(),
          body: { name, password, role },
        });
        passwords.set(name, password);
      }
      return harness.login(name, passwords.get(name)!);
    },
    async stop() {
      await server.close();
    },
    async restart(extra) {
      await bus.close();
      bus = new EmbeddedBus({});
      server = await make(extra);
    },
    async dispose() {
      await server.close();
      await bus.close();
      rmSync(dataDir, { recursive: true, force: true });
      await handle.dispose();
    },
  };
  return harness;
}

/** The error of a refused answer, checked against the protocol's `ErrorResponse`. */
export function errorOf(response: RawResponse): z.infer<typeof ErrorResponse>['error'] {
  const parsed = ErrorResponse.safeParse(response.json);
  if (!parsed.success) throw new Error(`not an error answer (${response.status}): ${response.text}`);
  return parsed.data.error;
}

/** The per-field issues of a STEWARD_BAD_REQUEST answer (`error.details.issues`). */
export function issuesOf(response: RawResponse): Array<{ field: string } & Record<string, unknown>> {
  const issues = z
    .array(z.object({ field: z.string() }).passthrough())
    .safeParse(errorOf(response).details?.issues);
  if (!issues.success) throw new Error(`no issues in the answer: ${response.text}`);
  return issues.data;
}

/** A raw answer's body parsed with route `name`'s response schema (for tests that send raw requests). */
export function bodyOf<N extends RouteName>(name: N, response: RawResponse): CallResult<N> {
  const route: ApiRoute = apiRoutes[name];
  if (!route.response) throw new Error(`${name} has no JSON response`);
  const parsed = route.response.safeParse(response.json);
  if (!parsed.success)
    throw new Error(`${name}: the answer (${response.status}) does not match its schema: ${response.text}`);
  return parsed.data as CallResult<N>;
}

async function callRoute(
  harness: Harness,
  name: RouteName,
  options: {
    params?: Record<string, string>;
    query?: object;
    body?: unknown;
    token?: string;
    headers?: Record<string, string>;
  },
  refusal: boolean,
): Promise<unknown> {
  const route: ApiRoute = apiRoutes[name];
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(options.query ?? {}) as Array<
    [string, string | number | boolean | undefined]
  >)
    if (value !== undefined) query.set(key, String(value));
  const search = query.size > 0 ? `?${query.toString()}` : '';
  const response = await harness.raw({
    method: route.method,
    url: routePath(route, options.params) + search,
    ...(options.token !== undefined ? { token: options.token } : {}),
    ...(options.body !== undefined ? { body: options.body } : {}),
    ...(options.headers !== undefined ? { headers: options.headers } : {}),
  });
  const ok = response.status === (route.status ?? 200);
  if (refusal) {
    if (ok) throw new Error(`${name} succeeded (${response.status}) where a refusal was expected`);
    return { status: response.status, error: errorOf(response) };
  }
  if (!ok) throw new Error(`${name} answered ${response.status}: ${response.text}`);
  if (!route.response) return response;
  const parsed = route.response.safeParse(response.json);
  if (!parsed.success)
    throw new Error(`${name}: the answer does not match its schema: ${parsed.error.message}`);
  return parsed.data;
}

/** Waits until `check` returns a truthy value and returns it (the shared `until`, polling every 20 ms). */
export function eventually<T>(check: () => Promise<T> | T, timeoutMs = 10_000) {
  return until('the condition', check, timeoutMs, 20);
}

/** An agent's state event for an offer's attempt (agent `agent-1` unless `extra` names another). */
export function stateEvent(
  offer: JobOffer,
  seq: number,
  state: JobStateEvent['state'],
  extra: Partial<JobStateEvent> = {},
): JobStateEvent {
  return {
    v: 1,
    type: 'state',
    jobId: offer.jobId,
    attempt: offer.attempt,
    seq,
    time: Date.now(),
    agentId: 'agent-1',
    state,
    ...extra,
  };
}
