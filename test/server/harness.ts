/* eslint-disable @typescript-eslint/no-explicit-any -- HTTP response bodies are checked by assertions, not by static types. */
/**
 * A real server for tests: temp data directory, a real store (SQLite by default, or PostgreSQL in its own
 * schema), the embedded bus, requests through fastify's inject (or real HTTP after listen()).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { EmbeddedBus } from '../../src/bus/index.js';
import type { JobOffer, JobStateEvent } from '../../src/protocol/index.js';
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

export interface Harness {
  server: StewardServer;
  bus: EmbeddedBus;
  dataDir: string;
  storeConfig: StoreConfig;
  request(options: {
    method: 'GET' | 'POST' | 'PUT' | 'DELETE';
    url: string;
    token?: string;
    body?: unknown;
    headers?: Record<string, string>;
    payload?: Buffer | string;
  }): Promise<{ status: number; json: any; text: string; headers: Record<string, unknown> }>;
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
    async request({ method, url, token, body, headers, payload }) {
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
      const response = await harness.request({
        method: 'POST',
        url: '/api/auth/login',
        body: { user, password },
      });
      if (response.status !== 200) throw new Error(`login as ${user} failed: ${response.text}`);
      return (response.json as { token: string }).token;
    },
    adminToken() {
      return harness.login('admin', ADMIN_PASSWORD);
    },
    async userToken(name, role = 'user') {
      if (!passwords.has(name)) {
        const password = `password-of-${name}`;
        const created = await harness.request({
          method: 'POST',
          url: '/api/users',
          token: await harness.adminToken(),
          body: { name, password, role },
        });
        if (created.status !== 201) throw new Error(`creating ${name} failed: ${created.text}`);
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
