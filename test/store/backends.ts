/**
 * The two store backends every store test runs against: SQLite in a temp directory and PostgreSQL in a
 * fresh schema named after the test, dropped afterwards.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import type { StoreConfig } from '../../src/config/index.js';
import { openStore, type NewJob, type NewWorkflowVersion, type Store } from '../../src/store/index.js';
import { until } from '../support/wait.js';

export const POSTGRES_URL =
  process.env.STEWARD_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

export interface BackendHandle {
  config: StoreConfig;
  /** A directory the test may use (and that holds the SQLite file). */
  dir: string;
  dispose(): Promise<void>;
}

export interface Backend {
  name: 'sqlite' | 'postgres';
  create(title: string): Promise<BackendHandle>;
}

function namespace(title: string): string {
  const slug = title
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '_')
    .replace(/^_+|_+$/g, '')
    .slice(0, 40);
  return `t_${slug}_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
}

export const sqliteBackend: Backend = {
  name: 'sqlite',
  async create(title) {
    const dir = mkdtempSync(path.join(os.tmpdir(), `steward-${namespace(title).slice(0, 30)}-`));
    return {
      config: { kind: 'sqlite', path: path.join(dir, 'steward.db') },
      dir,
      async dispose() {
        rmSync(dir, { recursive: true, force: true });
      },
    };
  },
};

export const postgresBackend: Backend = {
  name: 'postgres',
  async create(title) {
    const schema = namespace(title);
    const dir = mkdtempSync(path.join(os.tmpdir(), `steward-${schema.slice(0, 30)}-`));
    return {
      config: { kind: 'postgres', url: POSTGRES_URL, schema },
      dir,
      async dispose() {
        const client = new pg.Client({ connectionString: POSTGRES_URL });
        await client.connect();
        try {
          await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
        } finally {
          await client.end();
        }
        rmSync(dir, { recursive: true, force: true });
      },
    };
  },
};

export const backends: Backend[] = [sqliteBackend, postgresBackend];

/**
 * A private PostgreSQL database for one test (several servers or stores share it the way an HA setup shares
 * one database), dropped afterwards with whatever connections are still open.
 */
export async function createPrivateDatabase(
  title: string,
): Promise<{ url: string; dispose(): Promise<void> }> {
  const name = namespace(title).slice(0, 63);
  const admin = new pg.Client({ connectionString: POSTGRES_URL });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE "${name}"`);
  } finally {
    await admin.end();
  }
  const url = new URL(POSTGRES_URL);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async dispose() {
      const client = new pg.Client({ connectionString: POSTGRES_URL });
      await client.connect();
      try {
        // Closed pools finish disconnecting asynchronously: wait for them rather than kill them (a killed
        // client raises an uncaught error in the test process). FORCE only for what truly leaked.
        const dropped = await until(
          'the database to drop',
          async () => {
            try {
              await client.query(`DROP DATABASE IF EXISTS "${name}"`);
              return true;
            } catch (error) {
              // 55006: still in use by a closing pool.
              if ((error as { code?: string }).code !== '55006') throw error;
              return false;
            }
          },
          5000,
        ).catch((error: unknown) => {
          if (error instanceof Error && error.message.startsWith('timed out')) return false;
          throw error;
        });
        if (!dropped) await client.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      } finally {
        await client.end();
      }
    },
  };
}

/** Opens a store on a fresh backend for one test; the backend is disposed of when the store cannot open. */
export async function openBackendStore(
  backend: Backend,
  title: string,
  options?: Parameters<typeof openStore>[1],
): Promise<{ handle: BackendHandle; store: Store }> {
  const handle = await backend.create(title);
  try {
    return { handle, store: await openStore(handle.config, options) };
  } catch (error) {
    await handle.dispose();
    throw error;
  }
}

/**
 * The user `alice` and one workflow of hers (digest `d1`): what most store tests need before a job. By
 * default `wf` with one SQL step `a`, the user created at 1 and the workflow at 2.
 */
export async function seedAliceWorkflow(
  store: Store,
  options: { name?: string; steps?: NewWorkflowVersion['steps']; userAt?: number; workflowAt?: number } = {},
): Promise<void> {
  const name = options.name ?? 'wf';
  await store.createUser({ name: 'alice', role: 'user', passwordHash: null, createdAt: options.userAt ?? 1 });
  await store.insertWorkflowVersion({
    space: 'alice',
    name,
    source: `name: ${name}`,
    format: 'yaml',
    digest: 'd1',
    description: '',
    params: [],
    steps: options.steps ?? [{ id: 'a', kind: 'sql', needs: [] }],
    assets: [],
    createdBy: 'alice',
    createdAt: options.workflowAt ?? 2,
  });
}

/** A new job of alice's `wf` (version 1, digest `d1`, one SQL step `a`, created at 1), with `changes`. */
export function aliceJob(id: string, changes: Partial<NewJob> = {}): NewJob {
  return {
    id,
    user: 'alice',
    workflow: { space: 'alice', name: 'wf', version: 1, digest: 'd1' },
    params: {},
    labels: [],
    timeoutMs: null,
    jobTokenHash: 'h',
    createdAt: 1,
    steps: [{ id: 'a', kind: 'sql' }],
    loadDeadline: null,
    ...changes,
  };
}
