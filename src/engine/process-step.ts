/**
 * What a `shell`, `python` or `command` step's process is given and how its end is read: the environment
 * (the executor's clean base, params, the step's own variables, then the STEWARD_* variables, which nothing
 * can replace) and the failure a non-zero exit becomes.
 */
import { open, stat } from 'node:fs/promises';
import { StewardError, type ParamValue } from '../protocol/index.js';
import { paramToString, substitute } from './params.js';
import type { ProcessOutcome } from './processes.js';
import type { ParamSpec, ProcessStep } from './types.js';

/** The STEWARD_* variables of a step's process. */
export interface StewardStepVariables {
  STEWARD_JOB_DIR: string;
  STEWARD_INPUT_DIR: string;
  STEWARD_OUTPUT_DIR: string;
  STEWARD_STEP_ID: string;
  STEWARD_PARAMS_FILE: string;
}

export function stepEnvironment(
  params: readonly ParamSpec[],
  run: { env: Record<string, string>; params: Record<string, ParamValue> },
  stepEnv: Record<string, string>,
  steward: StewardStepVariables,
): Record<string, string> {
  const env: Record<string, string> = { ...run.env };
  for (const param of params) {
    const value = run.params[param.name];
    if (value !== undefined) env[param.name] = paramToString(value);
  }
  for (const [name, value] of Object.entries(stepEnv)) env[name] = substitute(value, run.params);
  return Object.assign(env, steward);
}

/** Throws the step's failure for a process that could not start or did not exit with 0. */
export async function checkExit(
  step: ProcessStep,
  outcome: Exclude<ProcessOutcome, { kind: 'stopped' }>,
  stderrPath: string,
): Promise<void> {
  if (outcome.kind === 'spawn-error') throw new Error(outcome.message);
  if (outcome.code === 0) return;
  const how =
    outcome.code === null
      ? `was killed by ${outcome.signal ?? 'a signal'}`
      : `exited with code ${outcome.code}`;
  const tail = await tailLines(stderrPath, 10);
  throw new StewardError('STEWARD_STEP_FAILED', `step "${step.id}" ${how}${tail ? `:\n${tail}` : ''}`);
}

async function tailLines(file: string, count: number): Promise<string> {
  const handle = await open(file, 'r').catch(() => undefined);
  if (!handle) return '';
  try {
    const { size } = await handle.stat();
    const length = Math.min(size, 4096);
    const buffer = Buffer.alloc(length);
    await handle.read(buffer, 0, length, size - length);
    return buffer.toString('utf8').trimEnd().split('\n').slice(-count).join('\n');
  } finally {
    await handle.close();
  }
}

let shellPath: Promise<string> | undefined;
/** `/bin/bash`, or `/bin/sh` where there is no bash. */
export function defaultShell(): Promise<string> {
  shellPath ??= stat('/bin/bash').then(
    () => '/bin/bash',
    () => '/bin/sh',
  );
  return shellPath;
}
