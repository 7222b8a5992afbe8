/**
 * The result of a precondition check: what `steward doctor`, `steward cluster check` and the start-up checks
 * of `steward up`, `steward agent` and `steward server` report. One shape for all of them, so the CLI prints
 * one PASS/WARN/FAIL table and `--json` gives one document.
 */
import { z } from 'zod';

export const CheckStatus = z.enum(['pass', 'warn', 'fail']);
export type CheckStatus = z.infer<typeof CheckStatus>;

export const CheckResult = z.object({
  /** Stable, dotted identifier: `agent.acl-tools`, `cluster.broker.permissions`. */
  id: z.string(),
  /** What was checked, in a few words. */
  title: z.string(),
  status: CheckStatus,
  /** A STEWARD_* code from the error catalogue, set when the status is not `pass`. */
  code: z.string().optional(),
  /** What was found: a figure, a path, the broker's answer. */
  detail: z.string(),
  /** How to fix it, when the status is not `pass`. */
  fix: z.string().optional(),
  /** A failed fatal check stops `steward up`, `steward agent` or `steward server` from starting. */
  fatal: z.boolean().default(false),
});
export type CheckResult = z.infer<typeof CheckResult>;

export const CheckReport = z.object({
  /** False when any check failed; warnings keep it true. */
  ok: z.boolean(),
  checks: z.array(CheckResult),
});
export type CheckReport = z.infer<typeof CheckReport>;

/** A report over `checks`: ok unless one of them failed. */
export function checkReport(checks: readonly CheckResult[]): CheckReport {
  return { ok: checks.every((check) => check.status !== 'fail'), checks: [...checks] };
}
