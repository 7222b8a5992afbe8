/**
 * The engine's public contract. The engine is a library: it knows nothing of the bus, the server or the
 * agent. The executor hosts it; the server uses only parsing and validation.
 */
import type { ErrorInfo, ParamDefinition, ParamValue, StepEvent } from '../protocol/index.js';
import type { DaskWorkerPlacement } from './dask/placement.js';
import type { DuckDBHost } from './tables.js';

/** A declared param (the protocol's `ParamDefinition`: the store keeps and the API shows the same shape). */
export type ParamSpec = ParamDefinition;
export type { ParamType } from '../protocol/index.js';

export type StepKind = 'read' | 'sql' | 'write' | 'shell' | 'python' | 'command';

/** What every step has, whatever its kind. */
interface StepCommon {
  id: string;
  /** Every step this one depends on: explicit `needs` plus tables it references, resolved before the run. */
  needs: string[];
  /** Steps whose tables this step reads (subset of needs). */
  tables: string[];
  timeoutMs?: number;
}

export interface ReadStep extends StepCommon {
  kind: 'read';
  spec: ReadStepSpec;
}

export interface SqlStep extends StepCommon {
  kind: 'sql';
  spec: SqlStepSpec;
}

export interface WriteStep extends StepCommon {
  kind: 'write';
  spec: WriteStepSpec;
}

export interface ShellStep extends StepCommon {
  kind: 'shell';
  spec: ScriptStepSpec;
}

export interface PythonStep extends StepCommon {
  kind: 'python';
  spec: PythonStepSpec;
}

export type ScriptStep = ShellStep | PythonStep;

export interface CommandStep extends StepCommon {
  kind: 'command';
  spec: CommandStepSpec;
}

/** A step that runs a program in its own process group (`shell`, `python`, `command`). */
export type ProcessStep = ScriptStep | CommandStep;

/** One validated step; `kind` says which definition `spec` holds. */
export type StepSpec = ReadStep | SqlStep | WriteStep | ProcessStep;

export interface Workflow {
  name: string;
  description: string;
  params: ParamSpec[];
  steps: StepSpec[];
  /** Step ids whose results are published (tables as Parquet + CSV, files as-is). */
  outputs: string[];
  /** Relative paths of asset files the workflow ships with (copied into the job directory). */
  assets: string[];
  /** The cluster its jobs run on unless the submit names one (`cluster:`); undefined: the server's default. */
  cluster?: string | undefined;
  format: 'yaml' | 'json';
  source: string;
}

/** One validation problem; `path` is dotted (`steps.2.sql`), `line` is 1-based where the source has one. */
export interface ValidationIssue {
  path: string;
  message: string;
  line?: number;
}

export interface RunOptions {
  /** Resolved parameter values (see resolveParams). */
  params: Record<string, ParamValue>;
  /** The job directory: assets are here, relative paths resolve here, scripts run here. */
  workDir: string;
  /** Job temp directory: the DuckDB database and its temp_directory live here. */
  tempDir: string;
  duckdb: { memoryLimit: string; threads: number };
  /**
   * A warm DuckDB instance to hold the job's tables (see DuckDBHost). Default: an instance of the job's own,
   * in `tempDir`, with the `duckdb` settings.
   */
  duckdbHost?: Promise<DuckDBHost>;
  /** Base environment for script and command steps (the executor's clean environment). */
  env: Record<string, string>;
  signal: AbortSignal;
  onEvent: (event: StepEvent) => void;
  /** Interpreter for `python` steps; default `python3`. */
  python?: string;
  /**
   * Interpreter of `python` steps that declare `dask:`, and of their Dask scheduler and workers: the Python
   * that has `distributed`. Default `/usr/bin/python3` (Debian's python3-distributed).
   */
  daskPython?: string;
  /** Where `dask:` steps' workers run. Default: all on this machine (`LocalWorkerPlacement`). */
  daskPlacement?: DaskWorkerPlacement;
  /** Longest wait for a step's Dask scheduler and workers to be up. Default 120000 ms. */
  daskStartTimeoutMs?: number;
  /**
   * Address a `dask:` step's scheduler listens on: one the workers' machines reach (the agent's
   * `dask.schedulerHost`). Default 127.0.0.1 (every worker on this machine).
   */
  daskSchedulerHost?: string;
  /** Interpreter for `shell` steps; default `/bin/bash` (falls back to `/bin/sh`). */
  shell?: string;
  /** Overall job time limit. Default: none. */
  timeoutMs?: number;
  /** Most steps running at once. Default: the number of steps (every independent step in parallel). */
  concurrency?: number;
  /** Time between SIGTERM and SIGKILL when a step's process group is stopped. Default 3000 ms. */
  killGraceMs?: number;
  /**
   * Runs around each step's synchronous `spawn` (the fork happens inside): the executor uses it to have
   * every step born inside its job's cgroup. It must call `start` exactly once and return its result.
   */
  spawnWrapper?: SpawnWrapper;
  /**
   * Cap of each stored step log stream: a longer stdout or stderr keeps its first and last half of this,
   * with a marker line between (see step-log.ts). Default 32 MiB (`DEFAULT_STEP_LOG_LIMIT_BYTES`).
   */
  logLimitBytes?: number;
  /**
   * Called as a script step starts, with the files its stdout and stderr are being written to (bounded, see
   * step-log.ts: the first half of the limit is written straight to the file as it arrives, so it can be read
   * while the step runs). The function it may return is called once the step's logs are complete.
   */
  onStepLogs?: (logs: { stepId: string; stdoutPath: string; stderrPath: string }) => (() => void) | void;
}

export type SpawnWrapper = <T>(start: () => T) => T;

export type RunOutput =
  | { name: string; kind: 'table'; rows: number; parquetPath: string; csvPath: string }
  | { name: string; kind: 'file'; path: string; size: number };

export interface StepLog {
  stepId: string;
  stream: 'stdout' | 'stderr';
  path: string;
}

export interface RunResult {
  state: 'succeeded' | 'failed' | 'canceled';
  error?: ErrorInfo;
  outputs: RunOutput[];
  logs: StepLog[];
}

/** File formats of `read` and `write` steps. */
export type TableFormat = 'csv' | 'tsv' | 'parquet' | 'json' | 'ndjson';

/** `StepSpec.spec` of a `read` step. `path` may hold `${param}` placeholders. */
export interface ReadStepSpec {
  path: string;
  format: TableFormat;
  /** Reader options (`header`, `delim`, …) passed by name to DuckDB's reader; values are bound. */
  options: Record<string, ParamValue>;
}

/** `StepSpec.spec` of a `sql` step. */
export interface SqlStepSpec {
  sql: string;
  /** `$name` params the query uses (bound by name at run time). */
  params: string[];
}

/** `StepSpec.spec` of a `write` step. */
export interface WriteStepSpec {
  table: string;
  path: string;
  format: TableFormat;
  options: Record<string, ParamValue>;
}

/** What `shell`, `python` and `command` steps share: their environment and input tables. */
export interface ProcessStepInputs {
  env: Record<string, string>;
  inputs: string[];
  inputFormat: 'csv' | 'parquet';
}

/** `StepSpec.spec` of `shell` and `python` steps. */
export interface ScriptStepSpec extends ProcessStepInputs {
  /** The script text. */
  script: string;
}

/** `StepSpec.spec` of a `python` step. */
export interface PythonStepSpec extends ScriptStepSpec {
  /** A Dask cluster for the step: started before it, stopped when it ends. */
  dask?: DaskRequest;
}

/** A step's `dask:` request, validated. */
export interface DaskRequest {
  /** Worker processes (1–64). */
  workers: number;
  /** Threads per worker (1–64). Default 1. */
  threads: number;
  /** Dask's memory limit per worker, in bytes. Default 1 GiB. */
  memoryBytes: number;
}

/** `StepSpec.spec` of a `command` step. */
export interface CommandStepSpec extends ProcessStepInputs {
  /** argv; each element may hold `${param}` placeholders. */
  command: string[];
}

/** What `describeWorkflow` returns (for listings). */
export interface WorkflowDescription {
  description: string;
  params: ParamSpec[];
  steps: { id: string; kind: StepKind; needs: string[] }[];
}
