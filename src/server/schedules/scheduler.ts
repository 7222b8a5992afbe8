/**
 * The scheduler: every server runs one; they share the work through the store. Each pass lists the
 * schedules with a due (or held) tick, decides each tick (`ticks.ts`) and handles it with a claim that only
 * one server can win (`TickClaim`, see store/schedules.ts): a firing submits the job through the same path
 * as `POST /api/jobs`, with the claim in the job's insert transaction. So every tick fires exactly once
 * across servers, and a server that dies mid-firing leaves the tick due for the next pass of any server.
 *
 * The job runs as the schedule's owner with the owner's rights at firing time: the owner's role from the
 * user record and the space checks of submission. A tick that cannot fire (no access any more, workflow
 * deleted, params no longer valid) is settled with its reason on the schedule and an audit entry.
 */
import type { Logger } from 'pino';
import { coerceError, StewardError } from '../../protocol/index.js';
import { TickTakenError, type Clock, type ScheduleRecord, type Store } from '../../store/index.js';
import type { AuditLog } from '../audit.js';
import type { Principal } from '../auth.js';
import type { JobService } from '../jobs/index.js';
import { compileCron } from './cron.js';
import { needsLiveJobCheck, planTick, type TickPlan } from './ticks.js';

/** What one pass did. */
export interface FireCounts {
  fired: number;
  /** Ticks dropped or held by a policy (misfire skip, overlap skip or queue). */
  settled: number;
  /** Ticks that could not fire (access, workflow, params). */
  failed: number;
  /** Ticks another server handled first. */
  taken: number;
}

export interface SchedulerOptions {
  store: Store;
  jobs: JobService;
  audit: AuditLog;
  logger: Logger;
  clock: Clock;
  /** How late a tick may be found and still count as on time (not a misfire). Default 60 s. */
  misfireGraceMs?: number;
  /** The longest wait between passes (schedules change on other servers). Default 1 s. */
  maxWaitMs?: number;
}

const AUDIT_SOURCE = 'scheduler';

export class Scheduler {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;
  private stopped = true;
  private readonly graceMs: number;
  private readonly maxWaitMs: number;

  constructor(private readonly options: SchedulerOptions) {
    this.graceMs = options.misfireGraceMs ?? 60_000;
    this.maxWaitMs = options.maxWaitMs ?? 1000;
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.schedule(0);
  }

  /** Stops the loop and waits for a pass under way. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running?.catch(() => undefined);
  }

  /** One pass: handles every tick due at `now` (repeating while passes find work, up to a bound). */
  async runOnce(now = this.options.clock()): Promise<FireCounts> {
    const counts: FireCounts = { fired: 0, settled: 0, failed: 0, taken: 0 };
    // A schedule may have several on-time ticks due (after a short stop): each round takes one per schedule.
    for (let round = 0; round < 100; round++) {
      const due = await this.options.store.schedules.listDueSchedules(now);
      let progressed = false;
      for (const schedule of due) {
        const outcome = await this.handle(schedule, now).catch((error: unknown) => {
          this.options.logger.error({ err: error, schedule: schedule.id }, 'handling a schedule tick failed');
          return 'error' as const;
        });
        if (outcome === 'none' || outcome === 'error') continue;
        counts[outcome]++;
        if (outcome !== 'taken') progressed = true;
      }
      if (!progressed) break;
    }
    return counts;
  }

  private schedule(delay: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      const pass = this.runOnce().then(() => this.untilNextDue());
      this.running = pass;
      pass
        .catch((error: unknown) => {
          this.options.logger.error({ err: error }, 'schedule pass failed');
          return this.maxWaitMs;
        })
        .then((wait) => this.schedule(wait))
        .catch(() => undefined);
    }, delay);
    this.timer.unref();
  }

  private async untilNextDue(): Promise<number> {
    const next = await this.options.store.schedules.nextDueAt();
    const wait = next === null ? this.maxWaitMs : next - this.options.clock();
    return Math.max(20, Math.min(this.maxWaitMs, wait));
  }

  private async handle(
    schedule: ScheduleRecord,
    now: number,
  ): Promise<'none' | 'fired' | 'settled' | 'failed' | 'taken'> {
    const { store } = this.options;
    let plan: TickPlan;
    try {
      const cron = compileCron(schedule.cron, schedule.timeZone);
      const hasLiveJob = needsLiveJobCheck(schedule) && (await store.schedules.hasLiveJob(schedule.id));
      plan = planTick({ schedule, cron, now, hasLiveJob, graceMs: this.graceMs });
    } catch (error) {
      // Stored expressions were checked at creation; one the library no longer reads stops here, audited.
      return this.fail(
        schedule,
        schedule.nextDueAt ?? now,
        { nextDueAt: null, queuedDueAt: null },
        now,
        error,
      );
    }
    if (plan.kind === 'none') return 'none';
    const claim = {
      scheduleId: schedule.id,
      from: { nextDueAt: schedule.nextDueAt, queuedDueAt: schedule.queuedDueAt },
      to: plan.to,
      time: now,
    };
    if (plan.kind === 'settle') {
      if (!(await store.schedules.settleTick(claim))) return 'taken';
      await this.options.audit.record({
        actor: schedule.owner,
        action: plan.reason === 'overlap-queue' ? 'schedule.queue' : 'schedule.skip',
        target: schedule.id,
        source: AUDIT_SOURCE,
        detail: { name: schedule.name, reason: plan.reason, dueAt: new Date(plan.dueAt).toISOString() },
      });
      return 'settled';
    }
    try {
      const principal = await this.ownerPrincipal(schedule);
      const job = await this.options.jobs.submit(
        principal,
        {
          workflow: schedule.workflow,
          params: schedule.params,
          labels: schedule.labels,
          schedule: { id: schedule.id, name: schedule.name, dueAt: plan.dueAt, late: plan.late, claim },
        },
        AUDIT_SOURCE,
      );
      this.options.logger.info(
        { event: 'schedule.fired', schedule: schedule.id, dueAt: plan.dueAt, jobId: job.id },
        'schedule fired',
      );
      return 'fired';
    } catch (error) {
      if (error instanceof TickTakenError) return 'taken';
      if (!(error instanceof StewardError) || error.status >= 500) throw error;
      return this.fail(schedule, plan.dueAt, plan.to, now, error);
    }
  }

  /** The owner as a principal with the rights they have now; refused when disabled or deleted. */
  private async ownerPrincipal(schedule: ScheduleRecord): Promise<Principal> {
    const owner = await this.options.store.getUser(schedule.owner);
    if (!owner || owner.disabled || owner.deletedAt !== null)
      throw new StewardError(
        'STEWARD_FORBIDDEN',
        `the schedule's owner ${schedule.owner} is disabled or deleted`,
      );
    // LDAP group memberships are not known outside a request: a firing gets only the user's own and its
    // local groups' rights, never more than a request of theirs would.
    return { user: owner.name, role: owner.role, tokenId: `schedule:${schedule.id}` };
  }

  /** Settles a tick that could not fire, recording why on the schedule and in the audit log. */
  private async fail(
    schedule: ScheduleRecord,
    dueAt: number,
    to: { nextDueAt: number | null; queuedDueAt: number | null },
    now: number,
    error: unknown,
  ): Promise<'failed' | 'taken'> {
    const failure = coerceError(error);
    const reason = { code: failure.code, message: failure.message };
    const settled = await this.options.store.schedules.settleTick({
      scheduleId: schedule.id,
      from: { nextDueAt: schedule.nextDueAt, queuedDueAt: schedule.queuedDueAt },
      to,
      error: reason,
      time: now,
    });
    if (!settled) return 'taken';
    await this.options.audit.record({
      actor: schedule.owner,
      action: 'schedule.fire.failed',
      target: schedule.id,
      source: AUDIT_SOURCE,
      detail: { name: schedule.name, dueAt: new Date(dueAt).toISOString(), ...reason },
    });
    return 'failed';
  }
}
