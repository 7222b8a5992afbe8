/** Building check results: one helper per status, and a runner that turns a throwing check into a FAIL. */
import { StewardError, type CheckResult, type ErrorCode } from '../protocol/index.js';

export interface CheckHead {
  id: string;
  title: string;
  /** A failure stops `steward up` / `steward agent` at start. Default false. */
  fatal?: boolean;
}

export function pass(head: CheckHead, detail: string): CheckResult {
  return { id: head.id, title: head.title, status: 'pass', detail, fatal: head.fatal ?? false };
}

export function warn(head: CheckHead, code: ErrorCode, detail: string, fix: string): CheckResult {
  return { id: head.id, title: head.title, status: 'warn', code, detail, fix, fatal: head.fatal ?? false };
}

export function fail(head: CheckHead, code: ErrorCode, detail: string, fix: string): CheckResult {
  return { id: head.id, title: head.title, status: 'fail', code, detail, fix, fatal: head.fatal ?? false };
}

/**
 * Runs one check; an unexpected throw becomes a FAIL naming the error (a StewardError keeps its code), so
 * one broken check never hides the others.
 */
export async function runCheck(
  head: CheckHead,
  check: () => Promise<CheckResult>,
  fix = 'see the detail',
): Promise<CheckResult> {
  try {
    return await check();
  } catch (error) {
    const code = error instanceof StewardError ? error.code : 'STEWARD_INTERNAL';
    return fail(head, code, oneLine(error), fix);
  }
}

export function oneLine(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.replace(/\s*\n\s*/g, ' ');
}
