/**
 * Notifications on job end: which rules a job's end matches, the webhook message and its signature, and the
 * retry delays. Pure functions and schemas, shared by the store (which matches rules in the transaction
 * that ends the job), the server (which sends) and the documentation of what receivers get.
 */
import { z } from 'zod';
import type { JobStateName } from './state-names.js';

/** When a rule fires: on a failure, on a success, or on every end (canceled included). */
export const NotifyWhen = z.enum(['failure', 'success', 'always']);
export type NotifyWhen = z.infer<typeof NotifyWhen>;

/**
 * How a job ended, for matching rules. `failed`, `lost` (its agent vanished, outcome unknown) and `expired`
 * (nothing ran it) are failures: the work did not get done and nobody chose that. `canceled` is neither: a
 * person (or a user being disabled) stopped it on purpose, so only `always` rules fire for it.
 */
export type JobOutcome = 'success' | 'failure' | 'canceled';

export function outcomeOf(state: JobStateName): JobOutcome | undefined {
  switch (state) {
    case 'succeeded':
      return 'success';
    case 'failed':
    case 'lost':
    case 'expired':
      return 'failure';
    case 'canceled':
      return 'canceled';
    default:
      return undefined;
  }
}

/** What rule matching needs of a rule. `schedule` null: the user's default rule. */
export interface RuleScope {
  when: NotifyWhen;
  schedule: string | null;
}

/** What rule matching needs of a job's end. `schedule`: the schedule that started the job, else null. */
export interface JobEnd {
  state: JobStateName;
  schedule: string | null;
}

export function whenMatches(when: NotifyWhen, outcome: JobOutcome): boolean {
  return (
    when === 'always' ||
    (when === 'failure' && outcome === 'failure') ||
    (when === 'success' && outcome === 'success')
  );
}

/**
 * The rules of one user that fire for one of that user's jobs ending. A job started by a schedule uses the
 * rules scoped to that schedule when the user has any; only when there are none do the user's default
 * rules (no schedule) apply — a schedule's rules replace the default, they do not add to it. A job not
 * started by a schedule uses the default rules only. Of the rules in force, those whose `when` covers the
 * outcome fire.
 */
export function rulesFor<R extends RuleScope>(rules: readonly R[], end: JobEnd): R[] {
  const outcome = outcomeOf(end.state);
  if (outcome === undefined) return [];
  const scoped = end.schedule === null ? [] : rules.filter((rule) => rule.schedule === end.schedule);
  const inForce = scoped.length > 0 ? scoped : rules.filter((rule) => rule.schedule === null);
  return inForce.filter((rule) => whenMatches(rule.when, outcome));
}

/**
 * The wait before attempt `attempt + 1` after `attempt` failed (1-based): `initialMs · 2^(attempt − 1)`,
 * capped at `maxMs`, of which the upper half is random ("equal jitter"), so receivers that came back are
 * not hit by every sender at once while the wait still grows.
 */
export function retryDelayMs(
  attempt: number,
  options: { initialMs: number; maxMs: number },
  random: () => number = Math.random,
): number {
  const exponent = Math.min(Math.max(attempt - 1, 0), 30);
  const ceiling = Math.min(options.maxMs, options.initialMs * 2 ** exponent);
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

/** The failing step of an ended job: the first step in workflow order that failed, with its error. */
export const FailingStep = z.object({ id: z.string(), error: z.string().nullable() });

/** The JSON body of a webhook (and the facts an email states). Version 1; fields are only ever added. */
export const NotificationMessage = z.object({
  v: z.literal(1),
  /** `job.ended`, or `notification.test` for `steward notify test` (then `job` is null). */
  type: z.enum(['job.ended', 'notification.test']),
  /** The delivery's id: the same on every retry (also in the `Steward-Delivery` header). */
  deliveryId: z.string(),
  rule: z.object({ id: z.string(), when: NotifyWhen, schedule: z.string().nullable() }),
  job: z
    .object({
      id: z.string(),
      state: z.string(),
      outcome: z.enum(['success', 'failure', 'canceled']),
      user: z.string(),
      workflow: z.object({ space: z.string(), name: z.string(), version: z.number().int() }),
      attempt: z.number().int(),
      schedule: z.string().nullable(),
      createdAt: z.string(),
      startedAt: z.string().nullable(),
      finishedAt: z.string().nullable(),
      error: z.object({ code: z.string(), message: z.string() }).nullable(),
      failingStep: FailingStep.nullable(),
      /** The job's page in the portal. */
      url: z.string(),
    })
    .nullable(),
});
export type NotificationMessage = z.infer<typeof NotificationMessage>;
