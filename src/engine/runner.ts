/**
 * Runs a validated workflow: starts every step whose dependencies succeeded (up to `concurrency` at once),
 * stops at the first failure (running steps are canceled, unstarted ones skipped), then publishes outputs.
 * Never throws for step failures: the outcome is in the RunResult.
 */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { formatExactDuration, StewardError, type ErrorInfo, type StepEvent } from '../protocol/index.js';
import { substitute } from './params.js';
import { checkExit, defaultShell, stepEnvironment } from './process-step.js';
import { DEFAULT_DASK_PYTHON, startStepCluster } from './dask/index.js';
import { checkedOutputs, linkOrCopy } from './outputs.js';
import { runProcess, type ProcessSpec } from './processes.js';
import { checkInputFile, stepError, withoutStatement } from './step-errors.js';
import {
  bindParams,
  copyStatement,
  openJobDatabase,
  quoteIdentifier,
  readStatement,
  type JobConnection,
  type JobDatabase,
} from './tables.js';
import type { ProcessStep, RunOptions, RunOutput, RunResult, StepLog, StepSpec, Workflow } from './types.js';

type StepOutcome =
  | { state: 'succeeded'; rows?: number; file?: string }
  | { state: 'failed'; error: ErrorInfo }
  | { state: 'canceled' };

/** Why a running step was told to stop. */
type StopReason = { kind: 'timeout'; ms: number } | { kind: 'job-stopped' };

class StepStopped extends Error {}

export async function runWorkflow(workflow: Workflow, options: RunOptions): Promise<RunResult> {
  return new JobRun(workflow, options).run();
}

class JobRun {
  private readonly stewardDir: string;
  private readonly logs: StepLog[] = [];
  private readonly states = new Map<
    string,
    'pending' | 'running' | 'succeeded' | 'failed' | 'canceled' | 'skipped'
  >();
  private readonly stepResults = new Map<string, { rows?: number; file?: string }>();
  /** Aborted when the job stops (cancel, first failure, job timeout): running steps and exports stop. */
  private readonly stop = new AbortController();
  private firstError: ErrorInfo | undefined;
  private canceled = false;
  private database: Promise<JobDatabase> | undefined;
  private readonly exports = new Map<string, Promise<string>>();
  private paramsFileWritten: Promise<string> | undefined;
  private readonly subdirs = new Map<string, Promise<string>>();
  /** Output tables being exported or exported, by step id (see `exportResult`). */
  private readonly resultExports = new Map<string, Promise<{ parquetPath: string; csvPath: string }>>();
  /** Connections of the job's database between two statements (see `withConnection`). */
  private readonly idleConnections: JobConnection[] = [];
  /** Set once the run is over: a statement ending after that closes its connection. */
  private closing = false;

  constructor(
    private readonly workflow: Workflow,
    private readonly options: RunOptions,
  ) {
    this.stewardDir = path.join(options.workDir, '.steward');
  }

  private emit(event: Omit<StepEvent, 'time'>): void {
    try {
      this.options.onEvent({ ...event, time: Date.now() });
    } catch {
      // A listener that throws must not break the run.
    }
  }

  private db(): Promise<JobDatabase> {
    const { duckdbHost } = this.options;
    this.database ??= duckdbHost
      ? duckdbHost.then((host) => host.openJob({ workDir: this.options.workDir }))
      : openJobDatabase({
          tempDir: this.options.tempDir,
          workDir: this.options.workDir,
          memoryLimit: this.options.duckdb.memoryLimit,
          threads: this.options.duckdb.threads,
        });
    return this.database;
  }

  async run(): Promise<RunResult> {
    const { signal } = this.options;
    const onCancel = () => {
      if (this.firstError) return;
      this.canceled = true;
      this.stop.abort();
    };
    signal.addEventListener('abort', onCancel, { once: true });
    const jobTimer =
      this.options.timeoutMs !== undefined
        ? setTimeout(() => {
            const running = [...this.states]
              .filter(([, state]) => state === 'running')
              .map(([id]) => `"${id}"`);
            this.fail({
              code: 'STEWARD_STEP_TIMEOUT',
              message: `job exceeded its time limit of ${formatExactDuration(this.options.timeoutMs!)}${running.length > 0 ? ` while step ${running.join(', ')} was running` : ''}`,
            });
          }, this.options.timeoutMs)
        : undefined;
    let outputs: RunOutput[] = [];
    try {
      if (signal.aborted) onCancel();
      await this.schedule();
      if (!this.firstError && !this.canceled) outputs = await this.publish();
    } catch (error) {
      if (!this.firstError && !this.canceled) {
        // A StewardError keeps its code (a result name refused while publishing); anything else is the step's.
        this.firstError =
          error instanceof StewardError
            ? { code: error.code, message: error.message }
            : {
                code: 'STEWARD_STEP_FAILED',
                message: error instanceof Error ? error.message : String(error),
              };
      }
    } finally {
      if (jobTimer) clearTimeout(jobTimer);
      signal.removeEventListener('abort', onCancel);
      // A job that failed or stopped may still be exporting a table (interrupted by now): its connection
      // must be back before the database goes.
      await Promise.allSettled(this.resultExports.values());
      this.closeIdleConnections();
      if (this.database) {
        try {
          await (await this.database).close();
        } catch {
          // Opening failed: nothing to close.
        }
      }
    }
    const logs = this.logs;
    if (this.firstError) return { state: 'failed', error: this.firstError, outputs: [], logs };
    if (this.canceled)
      return {
        state: 'canceled',
        error: { code: 'STEWARD_JOB_CANCELED', message: 'job canceled' },
        outputs: [],
        logs,
      };
    return { state: 'succeeded', outputs, logs };
  }

  private fail(error: ErrorInfo): void {
    if (this.firstError || this.canceled) return;
    this.firstError = error;
    this.stop.abort();
  }

  /**
   * `.steward/<name>`, created on first use: a job that needs no script, export or table output (most small
   * ones) does not pay for making and removing directories it never uses.
   */
  private subdir(name: 'logs' | 'out' | 'in' | 'scripts' | 'tables' | 'results'): Promise<string> {
    let made = this.subdirs.get(name);
    if (!made) {
      const dir = path.join(this.stewardDir, name);
      made = mkdir(dir, { recursive: true, mode: 0o700 }).then(() => dir);
      made.catch(() => this.subdirs.delete(name));
      this.subdirs.set(name, made);
    }
    return made;
  }

  /** `.steward/params.json` for script steps (`STEWARD_PARAMS_FILE`), written when the first one runs. */
  private paramsFile(): Promise<string> {
    this.paramsFileWritten ??= mkdir(this.stewardDir, { recursive: true, mode: 0o700 }).then(async () => {
      const file = path.join(this.stewardDir, 'params.json');
      await writeFile(file, JSON.stringify(this.options.params, null, 2), { mode: 0o600 });
      return file;
    });
    return this.paramsFileWritten;
  }

  private async schedule(): Promise<void> {
    const steps = this.workflow.steps;
    const limit = Math.max(1, this.options.concurrency ?? steps.length);
    for (const step of steps) this.states.set(step.id, 'pending');
    const running = new Map<string, Promise<void>>();
    for (;;) {
      if (!this.stop.signal.aborted) {
        for (const step of steps) {
          if (running.size >= limit) break;
          if (this.states.get(step.id) !== 'pending') continue;
          if (!step.needs.every((need) => this.states.get(need) === 'succeeded')) continue;
          this.states.set(step.id, 'running');
          const task = this.runStep(step).finally(() => running.delete(step.id));
          running.set(step.id, task);
        }
      }
      if (running.size === 0) break;
      await Promise.race(running.values());
    }
    for (const step of steps) {
      if (this.states.get(step.id) === 'pending') {
        this.states.set(step.id, 'skipped');
        this.emit({ stepId: step.id, state: 'skipped' });
      }
    }
  }

  private async runStep(step: StepSpec): Promise<void> {
    const started = Date.now();
    this.emit({ stepId: step.id, state: 'running' });
    const controller = new AbortController();
    let reason: StopReason | undefined;
    const onStop = () => {
      reason ??= { kind: 'job-stopped' };
      controller.abort();
    };
    this.stop.signal.addEventListener('abort', onStop, { once: true });
    const timer =
      step.timeoutMs !== undefined
        ? setTimeout(() => {
            reason ??= { kind: 'timeout', ms: step.timeoutMs! };
            controller.abort();
          }, step.timeoutMs)
        : undefined;
    let outcome: StepOutcome;
    try {
      if (this.stop.signal.aborted) onStop();
      const result = await this.execute(step, controller.signal);
      outcome = reason ? this.stoppedOutcome(step, reason) : { state: 'succeeded', ...result };
    } catch (error) {
      outcome = reason
        ? this.stoppedOutcome(step, reason)
        : { state: 'failed', error: stepError(step, error) };
    } finally {
      if (timer) clearTimeout(timer);
      this.stop.signal.removeEventListener('abort', onStop);
    }
    const durationMs = Date.now() - started;
    this.states.set(step.id, outcome.state);
    if (outcome.state === 'succeeded') {
      this.stepResults.set(step.id, {
        ...(outcome.rows !== undefined ? { rows: outcome.rows } : {}),
        ...(outcome.file ? { file: outcome.file } : {}),
      });
      this.emit({
        stepId: step.id,
        state: 'succeeded',
        durationMs,
        ...(outcome.rows !== undefined ? { rows: outcome.rows } : {}),
      });
      if (this.isTableOutput(step) && !this.stop.signal.aborted) void this.exportResult(step.id);
    } else if (outcome.state === 'failed') {
      this.fail(outcome.error);
      this.emit({
        stepId: step.id,
        state: 'failed',
        durationMs,
        message: outcome.error.message.slice(0, 8000),
        error: { ...outcome.error, message: outcome.error.message.slice(0, 8000) },
      });
    } else {
      this.emit({ stepId: step.id, state: 'canceled', durationMs });
    }
  }

  private stoppedOutcome(step: StepSpec, reason: StopReason): StepOutcome {
    if (reason.kind === 'timeout') {
      return {
        state: 'failed',
        error: {
          code: 'STEWARD_STEP_TIMEOUT',
          message: `step "${step.id}" timed out after ${formatExactDuration(reason.ms)}`,
        },
      };
    }
    return { state: 'canceled' };
  }

  private async execute(step: StepSpec, signal: AbortSignal): Promise<{ rows?: number; file?: string }> {
    switch (step.kind) {
      case 'read': {
        const { spec } = step;
        const { sql, values } = readStatement(step.id, spec.format, spec.options);
        const written = substitute(spec.path, this.options.params);
        const source = this.resolvePath(spec.path);
        await checkInputFile(step.id, written, source);
        try {
          const rows = await this.withConnection(signal, (connection) =>
            connection.count(sql, { ...values, path: source }),
          );
          return { rows };
        } catch (error) {
          if (signal.aborted) throw error;
          // The statement is Steward's, not the user's: say what could not be read, without it.
          throw new StewardError(
            'STEWARD_STEP_FAILED',
            `step "${step.id}" could not read ${JSON.stringify(written)} as ${spec.format}: ${withoutStatement(error)}`,
          );
        }
      }
      case 'sql': {
        const { spec } = step;
        const { values, types } = bindParams(spec.params, this.workflow.params, this.options.params);
        // The query was checked to be exactly one SELECT, so it can follow `AS` unchanged; the newline
        // ends any trailing line comment.
        const sql = `CREATE TABLE ${quoteIdentifier(step.id)} AS\n${spec.sql}\n`;
        const rows = await this.withConnection(signal, (connection) => connection.count(sql, values, types));
        return { rows };
      }
      case 'write': {
        const { spec } = step;
        const target = this.resolvePath(spec.path);
        await mkdir(path.dirname(target), { recursive: true });
        const rows = await this.withConnection(signal, (connection) =>
          connection.count(copyStatement(spec.table, target, spec.format, spec.options)),
        );
        return { rows, file: target };
      }
      case 'shell':
      case 'python':
      case 'command':
        await this.runProcessStep(step, signal);
        return {};
    }
  }

  private resolvePath(template: string): string {
    return path.resolve(this.options.workDir, substitute(template, this.options.params));
  }

  /**
   * A connection of the job's database for one step or export; an abort interrupts its query. Connections
   * are kept for the job's next statements rather than closed: opening one (and pointing it at the job's
   * database and directory) is a few turns of the thread pool, paid per step and per export before. All of
   * them are this job's, so nothing crosses between jobs; one whose statement failed or was interrupted is
   * closed, not reused.
   */
  private async withConnection<T>(
    signal: AbortSignal,
    work: (connection: JobConnection) => Promise<T>,
  ): Promise<T> {
    const connection = this.idleConnections.pop() ?? (await (await this.db()).connect());
    const onAbort = () => connection.interrupt();
    signal.addEventListener('abort', onAbort, { once: true });
    let reusable = false;
    try {
      if (signal.aborted) throw new StepStopped('stopped');
      const result = await work(connection);
      reusable = !signal.aborted;
      return result;
    } finally {
      signal.removeEventListener('abort', onAbort);
      if (reusable && !this.closing) this.idleConnections.push(connection);
      else connection.close();
    }
  }

  /** Closes the connections kept for reuse; the job's database may then be closed. */
  private closeIdleConnections(): void {
    this.closing = true;
    for (const connection of this.idleConnections.splice(0)) connection.close();
  }

  /** Exports a table to `.steward/tables/<id>.<format>` once per job, however many steps ask for it. */
  private exportTable(table: string, format: 'csv' | 'parquet'): Promise<string> {
    const key = `${table}.${format}`;
    let pending = this.exports.get(key);
    if (!pending) {
      pending = this.subdir('tables').then(async (tables) => {
        const target = path.join(tables, key);
        await this.withConnection(this.stop.signal, (connection) =>
          connection.count(copyStatement(table, target, format)),
        );
        return target;
      });
      this.exports.set(key, pending);
    }
    return pending;
  }

  /** Runs a `shell`, `python` or `command` step: its input tables exported, its program in its own group. */
  private async runProcessStep(step: ProcessStep, signal: AbortSignal): Promise<void> {
    const { spec } = step;
    const inputDir = path.join(await this.subdir('in'), step.id);
    const outputDir = path.join(await this.subdir('out'), step.id);
    await rm(outputDir, { recursive: true, force: true });
    await mkdir(outputDir, { recursive: true, mode: 0o700 });
    await mkdir(inputDir, { recursive: true, mode: 0o700 });
    for (const table of spec.inputs) {
      const exported = await this.exportTable(table, spec.inputFormat);
      await linkOrCopy(exported, path.join(inputDir, `${table}.${spec.inputFormat}`));
    }
    if (signal.aborted) throw new StepStopped('stopped');

    const argv = await this.argv(step);
    const stepEnv = stepEnvironment(this.workflow.params, this.options, spec.env, {
      STEWARD_JOB_DIR: this.options.workDir,
      STEWARD_INPUT_DIR: inputDir,
      STEWARD_OUTPUT_DIR: outputDir,
      STEWARD_STEP_ID: step.id,
      STEWARD_PARAMS_FILE: await this.paramsFile(),
    });
    const dask =
      step.kind === 'python' && step.spec.dask
        ? await startStepCluster(step.id, step.spec.dask, this.stewardDir, stepEnv, signal, this.options)
        : undefined;
    try {
      await this.runStepProcess(step, argv, dask?.env ?? stepEnv, dask?.signal ?? signal, dask?.sink);
    } catch (error) {
      // A lost scheduler stopped the step's program: the loss is the step's failure, not the stop.
      throw dask?.lostError() ?? error;
    } finally {
      await dask?.stop();
    }
  }

  /** The step's program in its own process group, its output in the step's bounded logs. */
  private async runStepProcess(
    step: ProcessStep,
    argv: string[],
    env: Record<string, string>,
    signal: AbortSignal,
    extraStderr: ProcessSpec['extraStderr'],
  ): Promise<void> {
    const logDir = await this.subdir('logs');
    const stdoutPath = path.join(logDir, `${step.id}.stdout.log`);
    const stderrPath = path.join(logDir, `${step.id}.stderr.log`);
    this.logs.push(
      { stepId: step.id, stream: 'stdout', path: stdoutPath },
      { stepId: step.id, stream: 'stderr', path: stderrPath },
    );
    const logsClosed = this.options.onStepLogs?.({ stepId: step.id, stdoutPath, stderrPath });
    const outcome = await runProcess({
      argv,
      cwd: this.options.workDir,
      env,
      stdoutPath,
      stderrPath,
      signal,
      killGraceMs: this.options.killGraceMs ?? 3000,
      ...(this.options.spawnWrapper ? { spawnWrapper: this.options.spawnWrapper } : {}),
      ...(this.options.logLimitBytes !== undefined ? { logLimitBytes: this.options.logLimitBytes } : {}),
      ...(extraStderr ? { extraStderr } : {}),
    }).finally(() => logsClosed?.());
    if (outcome.kind === 'stopped') throw new StepStopped('stopped');
    await checkExit(step, outcome, stderrPath);
  }

  /** A command step's arguments, or the interpreter and the script written to `.steward/scripts`. */
  private async argv(step: ProcessStep): Promise<string[]> {
    if (step.kind === 'command') {
      return step.spec.command.map((argument) => substitute(argument, this.options.params));
    }
    const extension = step.kind === 'python' ? 'py' : 'sh';
    const scriptFile = path.join(await this.subdir('scripts'), `${step.id}.${extension}`);
    await writeFile(scriptFile, step.spec.script, { mode: 0o600 });
    const interpreter =
      step.kind === 'python'
        ? step.spec.dask
          ? (this.options.daskPython ?? DEFAULT_DASK_PYTHON)
          : (this.options.python ?? 'python3')
        : (this.options.shell ?? (await defaultShell()));
    return [interpreter, scriptFile];
  }

  /** Whether a step's table is published as a result (Parquet + CSV). */
  private isTableOutput(step: StepSpec): boolean {
    return (step.kind === 'read' || step.kind === 'sql') && this.workflow.outputs.includes(step.id);
  }

  /**
   * Exports an output table to `.steward/results/<id>.parquet` and `.csv`, once. Started as soon as its step
   * succeeds, so that it runs while the job's other steps do instead of after the last one; nothing leaves
   * the job directory before the whole run has succeeded (the uploads start after it). Both formats go on one
   * connection; a table a script step already had exported is linked, not exported again.
   */
  private exportResult(id: string): Promise<{ parquetPath: string; csvPath: string }> {
    let pending = this.resultExports.get(id);
    if (!pending) {
      pending = this.subdir('results').then(async (resultsDir) => {
        const parquetPath = path.join(resultsDir, `${id}.parquet`);
        const csvPath = path.join(resultsDir, `${id}.csv`);
        await this.withConnection(this.stop.signal, async (connection) => {
          for (const [format, target] of [
            ['parquet', parquetPath],
            ['csv', csvPath],
          ] as const) {
            const already = this.exports.get(`${id}.${format}`);
            if (already) await linkOrCopy(await already, target);
            else await connection.count(copyStatement(id, target, format));
          }
        });
        return { parquetPath, csvPath };
      });
      // A failure is the job's when it publishes; a job that fails or stops first never asks.
      pending.catch(() => {});
      this.resultExports.set(id, pending);
    }
    return pending;
  }

  /** Publishes outputs: tables as Parquet + CSV, write steps' files, script steps' output files. */
  private async publish(): Promise<RunOutput[]> {
    const { tableIds, files } = await checkedOutputs(
      this.workflow,
      this.stewardDir,
      (id) => this.stepResults.get(id)?.file,
    );
    const tables = await Promise.all(
      tableIds.map(async (id): Promise<RunOutput> => {
        const { parquetPath, csvPath } = await this.exportResult(id);
        return {
          name: id,
          kind: 'table',
          rows: this.stepResults.get(id)?.rows ?? 0,
          parquetPath,
          csvPath,
        };
      }),
    );
    if (this.stop.signal.aborted) throw new Error('job stopped while publishing outputs');
    return [...tables, ...files];
  }
}
