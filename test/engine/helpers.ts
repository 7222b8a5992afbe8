import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { StewardError, type StepEvent } from '../../src/protocol/index.js';
import {
  parseWorkflow,
  resolveParams,
  runWorkflow,
  type RunOptions,
  type RunResult,
  type ValidationIssue,
} from '../../src/engine/index.js';

/** A fresh job directory and temp directory, named after the test. */
export async function makeJobDirs(
  title: string,
): Promise<{ workDir: string; tempDir: string; cleanup: () => Promise<void> }> {
  const slug = title
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .slice(0, 40);
  const root = await mkdtemp(path.join(os.tmpdir(), `steward-engine-${slug}-`));
  const workDir = path.join(root, 'work');
  const tempDir = path.join(root, 'tmp');
  const { mkdir } = await import('node:fs/promises');
  await mkdir(workDir);
  await mkdir(tempDir);
  return { workDir, tempDir, cleanup: () => rm(root, { recursive: true, force: true }) };
}

export interface RunHandle {
  result: Promise<RunResult>;
  events: StepEvent[];
  controller: AbortController;
  /** Resolves with the first event matching the predicate. */
  waitFor(predicate: (event: StepEvent) => boolean): Promise<StepEvent>;
}

export function startRun(
  workflowSource: string,
  dirs: { workDir: string; tempDir: string },
  raw: Record<string, string | number | boolean> = {},
  extra: Partial<RunOptions> = {},
): RunHandle {
  const events: StepEvent[] = [];
  const waiters: { predicate: (event: StepEvent) => boolean; resolve: (event: StepEvent) => void }[] = [];
  const controller = new AbortController();
  const result = (async () => {
    const workflow = await parseWorkflow(workflowSource);
    return runWorkflow(workflow, {
      params: resolveParams(workflow, raw),
      workDir: dirs.workDir,
      tempDir: dirs.tempDir,
      duckdb: { memoryLimit: '512MB', threads: 2 },
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dirs.workDir, LANG: 'C.UTF-8' },
      signal: controller.signal,
      onEvent: (event) => {
        events.push(event);
        for (const waiter of [...waiters]) {
          if (waiter.predicate(event)) {
            waiters.splice(waiters.indexOf(waiter), 1);
            waiter.resolve(event);
          }
        }
      },
      ...extra,
    });
  })();
  return {
    result,
    events,
    controller,
    waitFor: (predicate) => {
      const seen = events.find(predicate);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve) => waiters.push({ predicate, resolve }));
    },
  };
}

/** Parses a workflow that must be invalid and returns its issues. */
export async function invalidIssues(
  source: string,
  options: { format?: 'yaml' | 'json'; requireReadSources?: boolean } = {},
): Promise<{ message: string; issues: ValidationIssue[] }> {
  try {
    await parseWorkflow(source, options);
  } catch (error) {
    if (error instanceof StewardError && error.code === 'STEWARD_WORKFLOW_INVALID') {
      return { message: error.message, issues: (error.details?.issues ?? []) as ValidationIssue[] };
    }
    throw error;
  }
  throw new Error('expected the workflow to be invalid');
}

/** True while a process exists and is not a zombie awaiting its reaper. */
export async function processAlive(pid: number): Promise<boolean> {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  const { readFile } = await import('node:fs/promises');
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  return state !== '' && state !== 'Z' && state !== 'X';
}
