/**
 * The per-job DuckDB database: read steps and sql steps each create one table named by the step id;
 * write steps and exports COPY a table to a file. Values are always bound as parameters; the only place
 * DuckDB cannot bind is a COPY target and its options, which are quoted as SQL literals.
 */
import { randomBytes } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import {
  BIGINT,
  BOOLEAN,
  DATE,
  DOUBLE,
  DuckDBInstance,
  VARCHAR,
  dateValue,
  type DuckDBConnection,
  type DuckDBMaterializedResult,
  type DuckDBType,
  type DuckDBValue,
} from '@duckdb/node-api';
import type { ParamValue } from '../protocol/index.js';
import type { ParamSpec, ParamType, TableFormat } from './types.js';

export interface JobDatabaseOptions {
  tempDir: string;
  workDir: string;
  memoryLimit: string;
  threads: number;
}

export function quoteIdentifier(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

export function quoteLiteral(value: string): string {
  if (value.includes('\0')) throw new Error('value contains a NUL character');
  return `'${value.replaceAll("'", "''")}'`;
}

function literal(value: ParamValue): string {
  if (typeof value === 'boolean') return value ? 'true' : 'false';
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new Error(`option value ${value} is not a finite number`);
    return String(value);
  }
  return quoteLiteral(value);
}

const duckTypes: Record<ParamType, DuckDBType> = {
  string: VARCHAR,
  enum: VARCHAR,
  integer: BIGINT,
  number: DOUBLE,
  boolean: BOOLEAN,
  date: DATE,
  // A file param's value in a step is the file's absolute path.
  file: VARCHAR,
};

function toDuckValue(type: ParamType, value: ParamValue | undefined): DuckDBValue {
  if (value === undefined) return null;
  if (type === 'date' && typeof value === 'string') {
    const [year, month, day] = value.split('-').map(Number);
    return dateValue({ year: year!, month: month!, day: day! });
  }
  if (type === 'integer' && typeof value === 'number') return BigInt(value);
  return value;
}

/** Binds exactly the named params a query uses, with their declared types (dates as DATE, not text). */
export function bindParams(
  names: readonly string[],
  specs: readonly ParamSpec[],
  params: Record<string, ParamValue>,
): { values: Record<string, DuckDBValue>; types: Record<string, DuckDBType> } {
  const values: Record<string, DuckDBValue> = {};
  const types: Record<string, DuckDBType> = {};
  for (const name of names) {
    const type = specs.find((spec) => spec.name === name)?.type ?? 'string';
    values[name] = toDuckValue(type, params[name]);
    types[name] = duckTypes[type];
  }
  return { values, types };
}

/** Where a job's tables live: connections to them, and the end of them. */
export interface JobDatabase {
  /** A connection whose unqualified names are the job's tables and whose relative paths are the job's. */
  connect(): Promise<DuckDBConnection>;
  /**
   * Drops the job's tables. Every connection must be closed first. A host's job database is dropped in the
   * background, behind the host's queued statements (`DuckDBHost.settled` waits for it).
   */
  close(): Promise<void>;
}

/**
 * A job database with a DuckDB instance of its own: a file in the job's temp dir. Opening and closing one
 * costs tens of milliseconds (the instance starts its threads; closing checkpoints and fsyncs the file), so
 * the executor uses a DuckDBHost instead; this is for a job run on its own (tests, local runs).
 */
class OwnJobDatabase implements JobDatabase {
  private constructor(private readonly instance: DuckDBInstance) {}

  static async open(options: JobDatabaseOptions): Promise<JobDatabase> {
    const dbPath = path.join(options.tempDir, 'job.duckdb');
    const spillDir = path.join(options.tempDir, 'duckdb-tmp');
    await mkdir(spillDir, { recursive: true, mode: 0o700 });
    const instance = await DuckDBInstance.create(dbPath, {
      threads: String(options.threads),
      memory_limit: options.memoryLimit,
      temp_directory: spillDir,
      autoinstall_known_extensions: 'false',
      // Relative file names inside SQL (`FROM 'data/x.csv'`) resolve in the job directory, not the
      // executor's working directory.
      file_search_path: options.workDir,
    });
    return new OwnJobDatabase(instance);
  }

  connect(): Promise<DuckDBConnection> {
    return this.instance.connect();
  }

  close(): Promise<void> {
    this.instance.closeSync();
    return Promise.resolve();
  }
}

export function openJobDatabase(options: JobDatabaseOptions): Promise<JobDatabase> {
  return OwnJobDatabase.open(options);
}

export interface DuckDBHostOptions {
  /** Spill directory for every job of the host (private to the executor's user). */
  spillDir: string;
  memoryLimit: string;
  threads: number;
}

/**
 * One warm DuckDB instance shared by the jobs of an executor (one OS user). Each job gets its own
 * in-memory database attached under a random name: its own catalog, so its tables never meet another job's,
 * dropped whole when the job ends. Connections of a job `USE` its database and resolve relative paths in its
 * job directory (both per connection). Tables larger than memory spill to the host's spill directory, which
 * is the user's private temp dir; no job table is written anywhere else, and nothing needs to be durable: the
 * tables are gone when the job is. This saves a per-job instance start and a checkpoint + fsync per job.
 * `memory_limit` and `threads` bound the executor as a whole, which is what the cgroup limits bound too.
 *
 * Attaching a database and opening a connection to it are a few statements of DuckDB's (each a turn of
 * Node's thread pool): milliseconds a job would wait for before its first query. So the host keeps one
 * database attached ahead, with a connection that already uses it (the spare), and a job takes it; the next
 * spare is attached when a job's database is detached, after the job. A job that finds none (several start
 * at once) attaches its own as before. All databases here are the same OS user's, as are all jobs.
 */
export class DuckDBHost {
  /**
   * The host's own connection, for ATTACH and DETACH of job databases: a connection opened and closed for
   * each of them cost more than the statement itself (about 0.5 ms of CPU per job). No job SQL ever runs
   * on it; its statements run one at a time (`adminQueue`).
   */
  private admin: DuckDBConnection | undefined;
  private adminQueue: Promise<unknown> = Promise.resolve();
  /** A job database attached ahead, with a connection using it; undefined when none is ready or coming. */
  private spare: Promise<Spare | undefined> | undefined;
  /** The spare once made and until taken, so that closing the host can close its connection. */
  private spareMade: Spare | undefined;
  private closed = false;

  private constructor(private readonly instance: DuckDBInstance) {}

  private runAdmin(sql: string): Promise<void> {
    const run = this.adminQueue.then(async () => {
      this.admin ??= await this.instance.connect();
      await this.admin.run(sql);
    });
    this.adminQueue = run.catch(() => undefined);
    return run;
  }

  /**
   * Without options the host has DuckDB's defaults and no spill directory, and touches no file: for a
   * pre-started executor, which starts it before it knows its user and calls `configure` once it does.
   */
  static async create(options?: DuckDBHostOptions): Promise<DuckDBHost> {
    if (options) await mkdir(options.spillDir, { recursive: true, mode: 0o700 });
    const instance = await DuckDBInstance.create(':memory:', {
      autoinstall_known_extensions: 'false',
      ...(options
        ? {
            threads: String(options.threads),
            memory_limit: options.memoryLimit,
            temp_directory: options.spillDir,
          }
        : {}),
    });
    const host = new DuckDBHost(instance);
    if (options) host.prepareSpare();
    return host;
  }

  /** Sets the limits and the spill directory; before any job runs on the host. */
  async configure(options: DuckDBHostOptions): Promise<void> {
    await mkdir(options.spillDir, { recursive: true, mode: 0o700 });
    const connection = await this.instance.connect();
    try {
      await connection.run(
        `SET threads = ${Math.max(1, Math.floor(options.threads))}; SET memory_limit = ${quoteLiteral(options.memoryLimit)}; SET temp_directory = ${quoteLiteral(options.spillDir)}`,
      );
    } finally {
      connection.closeSync();
    }
    this.prepareSpare();
  }

  /** Attaches the next spare in the background, unless one is ready or coming. */
  private prepareSpare(): void {
    if (this.spare || this.closed) return;
    const spare = this.attach().then(
      async (name): Promise<Spare | undefined> => {
        try {
          const connection = await this.connectTo(name);
          if (this.closed) {
            connection.closeSync();
            return undefined;
          }
          this.spareMade = { name, connection };
          return this.spareMade;
        } catch {
          void this.runAdmin(`DETACH ${name}`).catch(() => {});
          return undefined;
        }
      },
      () => undefined,
    );
    this.spare = spare;
    // A spare that could not be made leaves room for the next try (at the next job's end).
    void spare.then((made) => {
      if (!made && this.spare === spare) this.spare = undefined;
    });
  }

  private async attach(): Promise<string> {
    // Random, so that a job's SQL cannot name a concurrent job's database by guessing its id.
    const name = quoteIdentifier(`job_${randomBytes(12).toString('hex')}`);
    await this.runAdmin(`ATTACH ':memory:' AS ${name}`);
    return name;
  }

  private async connectTo(name: string, workDir?: string): Promise<DuckDBConnection> {
    const connection = await this.instance.connect();
    try {
      await connection.run(
        workDir === undefined ? `USE ${name}` : `USE ${name}; SET file_search_path = ${workDir}`,
      );
    } catch (error) {
      connection.closeSync();
      throw error;
    }
    return connection;
  }

  async openJob(options: { workDir: string }): Promise<JobDatabase> {
    const workDir = quoteLiteral(options.workDir);
    const taken = this.spare;
    this.spare = undefined;
    const spare = taken ? await taken : undefined;
    if (spare && this.spareMade === spare) this.spareMade = undefined;
    const name = spare?.name ?? (await this.attach());
    // The spare's connection is the job's first: only the job's directory is left to set on it.
    let ready: DuckDBConnection | undefined = spare?.connection;
    const detach = (): Promise<void> => {
      ready?.closeSync();
      ready = undefined;
      // Dropped behind the host's other work, not waited for by the job: its outcome does not depend on it.
      // The next spare follows it.
      void this.runAdmin(`DETACH ${name}`)
        .catch(() => {})
        .then(() => this.prepareSpare());
      return Promise.resolve();
    };
    return {
      connect: async () => {
        const connection = ready;
        ready = undefined;
        if (!connection) return this.connectTo(name, workDir);
        try {
          await connection.run(`SET file_search_path = ${workDir}`);
        } catch (error) {
          connection.closeSync();
          throw error;
        }
        return connection;
      },
      close: detach,
    };
  }

  /** Resolves once the host's queued ATTACH and DETACH statements have run (tests, orderly shutdown). */
  async settled(): Promise<void> {
    for (let queue = this.adminQueue; ; queue = this.adminQueue) {
      await queue;
      await this.spare;
      if (queue === this.adminQueue) return;
    }
  }

  close(): void {
    this.closed = true;
    this.spareMade?.connection.closeSync();
    this.spareMade = undefined;
    this.admin?.closeSync();
    this.admin = undefined;
    this.instance.closeSync();
  }
}

interface Spare {
  name: string;
  connection: DuckDBConnection;
}

/**
 * Runs a statement whose single result cell is a row count (CTAS, COPY) and returns it. Each asynchronous
 * call into DuckDB is a turn of Node's thread pool, and under load each turn waits for a core: a statement
 * without parameters is one call (its result is materialized, so the count is read without fetching
 * chunks); one with parameters is prepared directly, bound and run. DuckDB's `runAndReadAll` took five turns
 * for either (statements extracted, prepared, run, then two chunks fetched).
 */
export async function runCounting(
  connection: DuckDBConnection,
  sql: string,
  values?: Record<string, DuckDBValue>,
  types?: Record<string, DuckDBType>,
): Promise<number> {
  const result =
    values && Object.keys(values).length > 0
      ? await runPrepared(connection, sql, values, types)
      : await connection.run(sql);
  return countIn(result);
}

async function runPrepared(
  connection: DuckDBConnection,
  sql: string,
  values: Record<string, DuckDBValue>,
  types: Record<string, DuckDBType> | undefined,
): Promise<DuckDBMaterializedResult> {
  const prepared = await connection.prepare(sql);
  try {
    prepared.bind(values, types);
    return await prepared.run();
  } finally {
    prepared.destroySync();
  }
}

/** The first cell of a materialized result as a count (0 when there is none, or it is not a number). */
function countIn(result: DuckDBMaterializedResult): number {
  if (result.chunkCount === 0) return 0;
  const chunk = result.getChunk(0);
  if (chunk.rowCount === 0 || chunk.columnCount === 0) return 0;
  const cell = chunk.getRowValues(0)[0];
  return typeof cell === 'bigint' || typeof cell === 'number' ? Number(cell) : 0;
}

/** SQL that creates table `id` from a file; the path and reader options are bound parameters. */
export function readStatement(
  id: string,
  format: TableFormat,
  options: Record<string, ParamValue>,
): { sql: string; values: Record<string, DuckDBValue> } {
  const values: Record<string, DuckDBValue> = {};
  const named: string[] = [];
  const merged: Record<string, ParamValue> = { ...options };
  if (format === 'tsv' && merged.delim === undefined && merged.sep === undefined) merged.delim = '\t';
  if (format === 'ndjson' && merged.format === undefined) merged.format = 'newline_delimited';
  for (const [name, value] of Object.entries(merged)) {
    values[`option_${name}`] = value;
    named.push(`${name} = $option_${name}`);
  }
  const reader =
    format === 'parquet'
      ? 'read_parquet'
      : format === 'json' || format === 'ndjson'
        ? 'read_json'
        : 'read_csv';
  const args = ['$path', ...named].join(', ');
  return { sql: `CREATE TABLE ${quoteIdentifier(id)} AS SELECT * FROM ${reader}(${args})`, values };
}

/** SQL that copies a table to a file (`target` already absolute). */
export function copyStatement(
  table: string,
  target: string,
  format: TableFormat,
  options: Record<string, ParamValue> = {},
): string {
  const merged: Record<string, ParamValue> = {};
  switch (format) {
    case 'csv':
      Object.assign(merged, { format: 'csv', header: true });
      break;
    case 'tsv':
      Object.assign(merged, { format: 'csv', header: true, delimiter: '\t' });
      break;
    case 'parquet':
      Object.assign(merged, { format: 'parquet' });
      break;
    case 'json':
      Object.assign(merged, { format: 'json', array: true });
      break;
    case 'ndjson':
      Object.assign(merged, { format: 'json' });
      break;
  }
  Object.assign(merged, options);
  // Option names are validated identifiers; values cannot be bound in COPY, so they are literals.
  const list = Object.entries(merged)
    .map(([name, value]) =>
      name === 'format' && typeof value === 'string' && /^[a-z]+$/.test(value)
        ? `format ${value}`
        : `${name} ${literal(value)}`,
    )
    .join(', ');
  return `COPY ${quoteIdentifier(table)} TO ${quoteLiteral(target)} (${list})`;
}
