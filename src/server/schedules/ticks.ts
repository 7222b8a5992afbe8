/**
 * What to do with a schedule's due tick: a pure decision, so the policies are tested without servers.
 *
 * - A tick found at most `graceMs` after its time is on time: it fires, and the next tick is the one after
 *   it (which may be due too: the next pass takes it), so a short stop of every server loses no tick.
 * - A tick found later is a misfire (the servers were down): `catch-up` fires it once and `skip` does not;
 *   either way the ticks missed since are dropped and the next tick is the first after now.
 * - While a job the schedule fired has not ended, overlap `skip` drops the tick, `queue` holds it (one at
 *   most: `queued_due_at`) until that job ends, and `allow` fires anyway.
 */
import type { ScheduleRecord } from '../../store/index.js';
import type { CronTimes } from './cron.js';

export type TickReason = 'misfire' | 'overlap-skip' | 'overlap-queue';

export type TickPlan =
  | { kind: 'none' }
  /** Fire the tick of `dueAt`, moving the schedule's ticks to `to`. */
  | { kind: 'fire'; dueAt: number; late: boolean; to: TickTargets }
  /** Fire nothing; move the ticks to `to` for `reason`. */
  | { kind: 'settle'; dueAt: number; reason: TickReason; to: TickTargets };

export interface TickTargets {
  nextDueAt: number | null;
  queuedDueAt: number | null;
}

export interface TickInputs {
  schedule: Pick<ScheduleRecord, 'nextDueAt' | 'queuedDueAt' | 'misfire' | 'overlap'>;
  cron: CronTimes;
  now: number;
  /** Whether a job this schedule fired has not ended (asked only when a policy needs it). */
  hasLiveJob: boolean;
  graceMs: number;
}

export function planTick({ schedule, cron, now, hasLiveJob, graceMs }: TickInputs): TickPlan {
  const { nextDueAt, queuedDueAt } = schedule;
  if (queuedDueAt !== null && !hasLiveJob)
    return { kind: 'fire', dueAt: queuedDueAt, late: false, to: { nextDueAt, queuedDueAt: null } };
  if (nextDueAt === null || nextDueAt > now) return { kind: 'none' };
  const late = now - nextDueAt > graceMs;
  const to: TickTargets = { nextDueAt: cron.nextAfter(late ? now : nextDueAt), queuedDueAt };
  if (late && schedule.misfire === 'skip') return { kind: 'settle', dueAt: nextDueAt, reason: 'misfire', to };
  if (hasLiveJob && schedule.overlap === 'skip')
    return { kind: 'settle', dueAt: nextDueAt, reason: 'overlap-skip', to };
  if (hasLiveJob && schedule.overlap === 'queue')
    return {
      kind: 'settle',
      dueAt: nextDueAt,
      reason: 'overlap-queue',
      to: { ...to, queuedDueAt: queuedDueAt ?? nextDueAt },
    };
  return { kind: 'fire', dueAt: nextDueAt, late, to };
}

/** Whether deciding needs to know if the schedule has a live job. */
export function needsLiveJobCheck(schedule: Pick<ScheduleRecord, 'queuedDueAt' | 'overlap'>): boolean {
  return schedule.queuedDueAt !== null || schedule.overlap !== 'allow';
}
