/**
 * Opening the database: a SQLite file (embedded, one server) or a PostgreSQL pool (several servers), as a
 * Kysely instance. Migrations and everything after are the store's business (`store.ts`).
 */
import { closeSync, mkdirSync, openSync } from 'node:fs';
import path from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { Kysely, PostgresDialect, SqliteDialect, type LogConfig } from 'kysely';
import pg from 'pg';
import type { CompiledStoreConfig as StoreConfig } from '../config/index.js';
import { StewardError } from '../protocol/index.js';
import { isUniqueViolation, type Db } from './context.js';
import type { StoreDialect } from './migrations/index.js';
import type { Database } from './schema.js';
import { WalFlusher, withCommitTracking } from './sqlite-durable.js';

export interface ConnectOptions {
  /** SQLite busy timeout in ms. Default 5000. */
  busyTimeoutMs?: number;
  /** PostgreSQL pool size. Default 10. */
  poolSize?: number;
  /**
   * Told of every failed query (`query`; not the unique-key collisions the store expects and handles) and
   * every connection the database refused or dropped (`connection`), for the metrics. Default: nobody.
   */
  onError?: (kind: StoreErrorKind, error: unknown) => void;
  /** Told the text of every statement sent (BEGIN and COMMIT included). Default: nobody. */
  onStatement?: (sql: string) => void;
}

export type StoreErrorKind = 'query' | 'connection';

export interface Connection {
  db: Db;
  dialect: StoreDialect;
  /** SQLite in WAL mode only: makes commits durable in groups. */
  flusher?: WalFlusher;
}

const INT8_OID = 20;

export async function connect(config: StoreConfig, options: ConnectOptions): Promise<Connection> {
  return config.kind === 'sqlite'
    ? connectSqlite(config.path ?? path.resolve('.steward', 'steward.db'), options)
    : connectPostgres(config.url, config.schema, options, config.password);
}

function connectSqlite(file: string, options: ConnectOptions): Connection {
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  // The store holds every password and token hash: it is 0600 from its first byte, whatever the umask.
  // SQLite gives the -wal and -shm it creates next to it the database file's mode.
  closeSync(openSync(file, 'a', 0o600));
  const database = new BetterSqlite3(file, { timeout: options.busyTimeoutMs ?? 5000 });
  // WAL + synchronous=NORMAL: a commit is written but not flushed; the flusher makes commits durable in
  // groups, off the event loop (see sqlite-durable.ts). A file system without WAL support keeps SQLite's
  // own durable commit instead. foreign_keys is per connection and off by default.
  const wal = database.pragma('journal_mode = WAL', { simple: true }) === 'wal';
  database.pragma(wal ? 'synchronous = NORMAL' : 'synchronous = FULL');
  database.pragma('foreign_keys = ON');
  const flusher = wal ? new WalFlusher(file) : undefined;
  return {
    db: new Kysely<Database>({
      dialect: new SqliteDialect({ database: withCommitTracking(database, flusher) }),
      log: queryErrorLog(options),
    }),
    dialect: 'sqlite',
    flusher,
  };
}

async function connectPostgres(
  url: string,
  schema: string | undefined,
  options: ConnectOptions,
  password?: string,
): Promise<Connection> {
  if (schema !== undefined) await createSchema(url, schema, password);
  const pool = new pg.Pool({
    connectionString: connectionStringWith(url, password),
    max: options.poolSize ?? 10,
    ...(schema !== undefined ? { options: `-c search_path=${schema}` } : {}),
    // Epoch-ms times are int8; they fit a JS number exactly, so read them as numbers rather than strings.
    types: { getTypeParser: int8AsNumber as typeof pg.types.getTypeParser },
  });
  const { onError } = options;
  // An idle client the server dropped (restart, failover) errors on the pool, not on a query.
  pool.on('error', (error) => onError?.('connection', error));
  // Kysely logs failed queries, not failed connects: count those on the way out of the pool.
  const counted = {
    connect: async () => {
      try {
        return await pool.connect();
      } catch (error) {
        onError?.('connection', error);
        throw error;
      }
    },
    end: () => pool.end(),
  };
  return {
    db: new Kysely<Database>({
      dialect: new PostgresDialect({ pool: counted }),
      log: queryErrorLog(options),
    }),
    dialect: 'postgres',
  };
}

/**
 * Kysely's log hook: every statement sent to `onStatement`, failed queries to `onError` (no hook at all when
 * neither is given).
 */
function queryErrorLog(options: ConnectOptions): LogConfig {
  const { onError, onStatement } = options;
  if (!onError && !onStatement) return [];
  return (event) => {
    onStatement?.(event.query.sql);
    if (event.level === 'error' && !isUniqueViolation(event.error)) onError?.('query', event.error);
  };
}

/**
 * The URL with the password from `store.passwordFile` in it. (pg's `password` option does not do: a
 * connection string's parsed fields replace the options, and a URL without a password parses as an empty one.)
 */
export function connectionStringWith(url: string, password: string | undefined): string {
  if (password === undefined) return url;
  const parsed = new URL(url);
  parsed.password = encodeURIComponent(password);
  if (parsed.password === '')
    throw new StewardError(
      'STEWARD_CONFIG_INVALID',
      'store.passwordFile: the store URL must name a host (postgres://user@host/db) to carry a password',
    );
  return parsed.toString();
}

/** The schema must exist before a pooled connection can put it on its search_path. */
async function createSchema(url: string, schema: string, password: string | undefined): Promise<void> {
  const client = new pg.Client({ connectionString: connectionStringWith(url, password) });
  await client.connect();
  try {
    await client.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdentifier(schema)}`);
  } catch (error) {
    // IF NOT EXISTS is not atomic: a server creating the same schema at this moment wins, and that is fine.
    if (!isUniqueViolation(error) && (error as { code?: unknown }).code !== '42P06') throw error;
  } finally {
    await client.end();
  }
}

function int8AsNumber(oid: number, format?: 'text' | 'binary'): (value: string) => unknown {
  if (oid === INT8_OID) return (value: string) => Number(value);
  return pg.types.getTypeParser(oid, format ?? 'text') as (value: string) => unknown;
}

function quoteIdentifier(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}
