/**
 * Step failures in the user's terms: a missing input file named as the workflow wrote it, a DuckDB error
 * without the statement Steward generated, and any other throw as the step's STEWARD_* error.
 */
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { StewardError, type ErrorInfo } from '../protocol/index.js';
import type { StepSpec } from './types.js';

/**
 * A missing or unreadable input named in the user's terms (the path as the workflow wrote it, params
 * substituted), before DuckDB reports it with the statement Steward generated. Globs and URLs are left to
 * DuckDB.
 */
export async function checkInputFile(stepId: string, written: string, resolved: string): Promise<void> {
  if (/[*?[]/.test(written) || /^[a-z][a-z0-9+.-]*:\/\//i.test(written)) return;
  try {
    await stat(resolved);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const relative = !path.isAbsolute(written);
    const why =
      code === 'ENOENT' || code === 'ENOTDIR'
        ? relative
          ? "does not exist in the job directory (list it in the workflow's assets, or give an absolute path)"
          : 'does not exist'
        : code === 'EACCES'
          ? "is not readable by the job's OS account"
          : `cannot be read (${code ?? 'unknown error'})`;
    throw new StewardError(
      'STEWARD_STEP_FAILED',
      `step "${stepId}": input file ${JSON.stringify(written)} ${why}`,
    );
  }
}

/** A DuckDB error's message without the `LINE n: …` excerpt of the statement that failed. */
export function withoutStatement(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message
    .replace(/\n+LINE \d+:[\s\S]*$/, '')
    .replace(/\s*\n\s*/g, ' ')
    .trim();
}

export function stepError(step: StepSpec, error: unknown): ErrorInfo {
  if (error instanceof StewardError) return { code: error.code, message: error.message };
  const message = error instanceof Error ? error.message : String(error);
  return { code: 'STEWARD_STEP_FAILED', message: `step "${step.id}" failed: ${message}` };
}
