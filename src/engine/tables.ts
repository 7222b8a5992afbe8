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
  connect(): Promise<JobConnection>;
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

  async connect(): Promise<JobConnection> {
    return new JobConnection(await this.instance.connect());
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
 * Attaching a database and opening a connection to it are calls into DuckDB (each a turn of Node's thread
 * pool, and about 0.3 ms of CPU): time a job would wait for before its first query. So the host keeps one
 * database attached ahead, with a connection that already uses it (the spare), and a job takes it; the next
 * spare is attached after the job, in the same call that detaches the job's database. A job that finds none
 * (several start at once) attaches its own. All databases here are the same OS user's, as are all jobs.
 */
export class DuckDBHost {
  /**
   * The host's own connection, for DETACHing job databases when no spare is attached with it (see
   * `attachConnected`): a connection opened and closed for each cost more than the statement itself. No job
   * SQL ever runs on it; its statements run one at a time (`adminQueue`).
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
    if (this.closed) return Promise.reject(new Error('the DuckDB host is closed'));
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

  /**
   * Attaches the next spare in the background, unless one is ready or coming; `drop` (a job's database) is
   * detached first, in the same call. Returns whether it started one.
   */
  private prepareSpare(drop?: string): boolean {
    if (this.spare || this.closed) return false;
    const spare = this.attachConnected(undefined, drop).then(
      (made): Spare | undefined => {
        if (this.closed) {
          made.connection.closeSync();
          return undefined;
        }
        this.spareMade = made;
        return made;
      },
      () => undefined,
    );
    this.spare = spare;
    // A spare that could not be made leaves room for the next try (at the next job's end).
    void spare.then((made) => {
      if (!made && this.spare === spare) this.spare = undefined;
    });
    return true;
  }

  /**
   * A new job database, attached under a random name (so that a job's SQL cannot name a concurrent job's
   * database by guessing its id), with a connection that uses it — and, given the job's directory, resolves
   * relative paths there: one call into DuckDB (each is a turn of the thread pool and about 0.3 ms of CPU).
   */
  private async attachConnected(workDir?: string, drop?: string): Promise<Spare> {
    const name = quoteIdentifier(`job_${randomBytes(12).toString('hex')}`);
    const connection = await this.instance.connect();
    const statements = [
      ...(drop ? [`DETACH DATABASE IF EXISTS ${drop}`] : []),
      `ATTACH ':memory:' AS ${name}`,
      `USE ${name}`,
      ...(workDir === undefined ? [] : [searchPath(workDir)]),
    ];
    try {
      await connection.run(statements.join('; '));
    } catch (error) {
      connection.closeSync();
      // Any of them may have been done before a later one failed.
      for (const database of [drop, name])
        if (database) void this.runAdmin(`DETACH DATABASE IF EXISTS ${database}`).catch(() => {});
      throw error;
    }
    return { name, connection };
  }

  private async connectTo(name: string, workDir: string): Promise<DuckDBConnection> {
    if (this.closed) throw new Error('the DuckDB host is closed');
    const connection = await this.instance.connect();
    try {
      await connection.run(`USE ${name}; ${searchPath(workDir)}`);
    } catch (error) {
      connection.closeSync();
      throw error;
    }
    return connection;
  }

  async openJob(options: { workDir: string }): Promise<JobDatabase> {
    if (this.closed) throw new Error('the DuckDB host is closed');
    const { workDir } = options;
    const taken = this.spare;
    this.spare = undefined;
    const spare = taken ? await taken : undefined;
    if (spare && this.spareMade === spare) this.spareMade = undefined;
    // Without a spare (jobs starting together), the job's first connection is made with its database.
    const first = spare ?? (await this.attachConnected(workDir));
    const { name } = first;
    // The spare's connection is the job's first: only the job's directory is left to set on it, which its
    // first statement does in the same call.
    let ready: JobConnection | undefined = new JobConnection(
      first.connection,
      spare ? searchPath(workDir) : undefined,
    );
    const detach = (): Promise<void> => {
      ready?.close();
      ready = undefined;
      // Dropped without the job waiting (its outcome does not depend on it): in the same call that attaches
      // the next spare, or, when a spare is ready or coming, behind the host's other work.
      if (!this.prepareSpare(name))
        void this.runAdmin(`DETACH ${name}`)
          .catch(() => {})
          .then(() => this.prepareSpare());
      return Promise.resolve();
    };
    return {
      connect: async () => {
        const connection = ready;
        ready = undefined;
        return connection ?? new JobConnection(await this.connectTo(name, workDir));
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

  /**
   * Closes the instance once the statements it has queued (a job database's DETACH, the next spare's ATTACH)
   * have run: closing DuckDB under a statement in flight ends the process. A closed host starts nothing new.
   * Jobs still running on it must have ended first.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.settled();
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

/** The statement that makes a connection resolve relative paths in `dir`. */
function searchPath(dir: string): string {
  return `SET file_search_path = ${quoteLiteral(dir)}`;
}

/**
 * A connection to a job's database. A new one may still have the job's directory to set: its first
 * statement does that in the same call into DuckDB when it binds no parameters (each call is a turn of
 * Node's thread pool, and under load each turn waits for a core).
 */
export class JobConnection {
  constructor(
    private readonly connection: DuckDBConnection,
    private setup?: string,
  ) {}

  /**
   * Runs a statement whose single result cell is a row count (CTAS, COPY) and returns it. Without parameters
   * it is one call (its result is materialized, so the count is read without fetching chunks); with them it
   * is prepared directly, bound and run. DuckDB's `runAndReadAll` took five turns for either (statements
   * extracted, prepared, run, then two chunks fetched).
   */
  async count(
    sql: string,
    values?: Record<string, DuckDBValue>,
    types?: Record<string, DuckDBType>,
  ): Promise<number> {
    const setup = this.takeSetup();
    if (values && Object.keys(values).length > 0) {
      if (setup) await this.connection.run(setup);
      return countIn(await runPrepared(this.connection, sql, values, types));
    }
    return countIn(await this.connection.run(setup ? `${setup};\n${sql}` : sql));
  }

  /** The rows of any statement (for looking into a job's database). */
  async rows(sql: string): Promise<DuckDBValue[][]> {
    const setup = this.takeSetup();
    if (setup) await this.connection.run(setup);
    return (await this.connection.runAndReadAll(sql)).getRows();
  }

  /** Stops the statement running now. */
  interrupt(): void {
    this.connection.interrupt();
  }

  close(): void {
    this.connection.closeSync();
  }

  private takeSetup(): string | undefined {
    const setup = this.setup;
    this.setup = undefined;
    return setup;
  }
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
