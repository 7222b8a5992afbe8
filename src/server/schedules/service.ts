/**
 * Schedules as their owners and admins manage them: create (checked now as a firing would be), list, show
 * with the next run times, pause, resume, delete. Every change is audited. A schedule is addressed by its id
 * or by the name of one of the caller's own schedules; others' schedules are visible to admins only.
 */
import { randomBytes } from 'node:crypto';
import { resolveParams } from '../../engine/index.js';
import { StewardError, type ScheduleInfo } from '../../protocol/index.js';
import type { Clock, ScheduleRecord, Store } from '../../store/index.js';
import type { AuditLog } from '../audit.js';
import type { Principal } from '../auth.js';
import { iso } from '../views.js';
import type { SpaceService } from '../spaces.js';
import type { WorkflowRepository } from '../workflows.js';
import { compileCron } from './cron.js';

export interface ScheduleServiceDeps {
  store: Store;
  workflows: WorkflowRepository;
  spaces: SpaceService;
  audit: AuditLog;
  clock: Clock;
}

export interface NewScheduleInput {
  name: string;
  workflow: string;
  params: ScheduleRecord['params'];
  labels: string[];
  cron: string;
  timeZone: string;
  misfire: ScheduleRecord['misfire'];
  overlap: ScheduleRecord['overlap'];
}

export class ScheduleService {
  constructor(private readonly deps: ScheduleServiceDeps) {}

  async create(principal: Principal, input: NewScheduleInput, source: string): Promise<ScheduleRecord> {
    const { store, workflows, clock } = this.deps;
    const now = clock();
    const cron = compileCron(input.cron, input.timeZone);
    const nextDueAt = cron.nextAfter(now);
    if (nextDueAt === null)
      throw new StewardError(
        'STEWARD_SCHEDULE_INVALID',
        `cron: ${JSON.stringify(input.cron)} has no future run`,
      );
    // Checked as a firing would check it: the caller may run the workflow and the params fit it.
    const record = await workflows.resolve(principal, input.workflow);
    const workflow = await workflows.parsedFor(record);
    const fileParam = workflow.params.find((param) => param.type === 'file');
    if (fileParam)
      throw new StewardError(
        'STEWARD_SCHEDULE_INVALID',
        `workflow ${record.space}/${record.name} takes a file param (${fileParam.name}): an upload is used by one job only, so it cannot be scheduled`,
      );
    resolveParams(workflow, input.params);
    const address = this.deps.spaces.address(principal, input.workflow);
    const ref = `${address.space}/${address.name}${address.version === undefined ? '' : `@${address.version}`}`;
    const id = `sch_${randomBytes(8).toString('hex')}`;
    const created = await store.schedules.createSchedule({
      id,
      owner: principal.user,
      name: input.name,
      workflow: ref,
      params: input.params,
      labels: input.labels,
      cron: input.cron,
      timeZone: input.timeZone,
      misfire: input.misfire,
      overlap: input.overlap,
      nextDueAt,
      createdAt: now,
    });
    if (!created)
      throw new StewardError(
        'STEWARD_SCHEDULE_EXISTS',
        `you already have a schedule named ${input.name} (see \`steward schedule list\`)`,
      );
    const schedule = await this.require(principal, id, source);
    await this.audit(principal, 'schedule.create', schedule, source, {
      workflow: ref,
      cron: input.cron,
      timeZone: input.timeZone,
      misfire: input.misfire,
      overlap: input.overlap,
    });
    return schedule;
  }

  /** The caller's schedules; with `all`, an admin's view of everyone's. */
  list(principal: Principal, all: boolean): Promise<ScheduleRecord[]> {
    if (all && principal.role === 'admin') return this.deps.store.schedules.listSchedules();
    return this.deps.store.schedules.listSchedules(principal.user);
  }

  /** By the name of one of the caller's schedules, or by id (the owner's or, for admins, anyone's). */
  async require(principal: Principal, ref: string, source: string): Promise<ScheduleRecord> {
    const { schedules } = this.deps.store;
    const schedule =
      (await schedules.findScheduleByName(principal.user, ref)) ?? (await schedules.getSchedule(ref));
    if (schedule && (schedule.owner === principal.user || principal.role === 'admin')) return schedule;
    if (schedule)
      await this.deps.audit.record({
        actor: principal.user,
        action: 'forbidden',
        target: schedule.id,
        source,
        detail: { owner: schedule.owner },
      });
    throw new StewardError('STEWARD_NOT_FOUND', `no schedule ${ref} (see \`steward schedule list\`)`);
  }

  async pause(principal: Principal, ref: string, source: string): Promise<ScheduleRecord> {
    const schedule = await this.require(principal, ref, source);
    if (schedule.paused) return schedule;
    const reason = `paused by ${principal.user}`;
    const paused = await this.deps.store.schedules.setSchedulePaused(schedule.id, { paused: true, reason });
    await this.audit(principal, 'schedule.pause', schedule, source, { reason });
    return paused ?? schedule;
  }

  /** Resumes from the first tick after now: ticks missed while paused are not fired. */
  async resume(principal: Principal, ref: string, source: string): Promise<ScheduleRecord> {
    const schedule = await this.require(principal, ref, source);
    if (!schedule.paused) return schedule;
    const owner = await this.deps.store.getUser(schedule.owner);
    if (!owner || owner.disabled)
      throw new StewardError(
        'STEWARD_CONFLICT',
        `the owner of schedule ${schedule.name}, ${schedule.owner}, is disabled: enable the user first`,
      );
    const nextDueAt = compileCron(schedule.cron, schedule.timeZone).nextAfter(this.deps.clock());
    const resumed = await this.deps.store.schedules.setSchedulePaused(schedule.id, {
      paused: false,
      nextDueAt,
    });
    await this.audit(principal, 'schedule.resume', schedule, source, {
      nextRun: nextDueAt === null ? null : iso(nextDueAt),
    });
    return resumed ?? schedule;
  }

  async delete(principal: Principal, ref: string, source: string): Promise<void> {
    const schedule = await this.require(principal, ref, source);
    if (!(await this.deps.store.schedules.deleteSchedule(schedule.id)))
      throw new StewardError('STEWARD_NOT_FOUND', `no schedule ${ref}`);
    await this.audit(principal, 'schedule.delete', schedule, source, { workflow: schedule.workflow });
  }

  /**
   * Pauses every active schedule of a user being disabled (or deleted), each with an audit entry by
   * `actor`: a disabled account's schedules must not run on its behalf, and stay paused when the user is
   * enabled again.
   */
  async pauseOwnerSchedules(
    actor: Principal,
    owner: string,
    source: string,
    why: 'disabled' | 'deleted' = 'disabled',
  ): Promise<string[]> {
    const reason = `owner ${owner} was ${why} by ${actor.user}`;
    const ids = await this.deps.store.schedules.pauseSchedulesOf(owner, reason);
    for (const id of ids)
      await this.deps.audit.record({
        actor: actor.user,
        action: 'schedule.pause',
        target: id,
        source,
        detail: { owner, reason },
      });
    return ids;
  }

  private async audit(
    principal: Principal,
    action: string,
    schedule: ScheduleRecord,
    source: string,
    detail: Record<string, unknown>,
  ): Promise<void> {
    await this.deps.audit.record({
      actor: principal.user,
      action,
      target: schedule.id,
      source,
      detail: { name: schedule.name, owner: schedule.owner, ...detail },
    });
  }
}

/** The API's view of a schedule, with its next `runs` run times. */
export function scheduleView(schedule: ScheduleRecord, runs = 3): ScheduleInfo {
  return {
    id: schedule.id,
    name: schedule.name,
    owner: schedule.owner,
    workflow: schedule.workflow,
    params: schedule.params,
    labels: schedule.labels,
    cron: schedule.cron,
    timeZone: schedule.timeZone,
    misfire: schedule.misfire,
    overlap: schedule.overlap,
    paused: schedule.paused,
    pausedReason: schedule.pausedReason,
    nextRuns: nextRuns(schedule, runs).map((time) => iso(time)),
    queuedRun: iso(schedule.queuedDueAt),
    lastFiredAt: iso(schedule.lastFiredAt),
    lastJobId: schedule.lastJobId,
    lastError: schedule.lastError as ScheduleInfo['lastError'],
    createdAt: iso(schedule.createdAt),
    updatedAt: iso(schedule.updatedAt),
  };
}

function nextRuns(schedule: ScheduleRecord, count: number): number[] {
  if (schedule.paused || schedule.nextDueAt === null) return [];
  try {
    const later = compileCron(schedule.cron, schedule.timeZone).nextRuns(count - 1, schedule.nextDueAt);
    return [schedule.nextDueAt, ...later];
  } catch {
    return [schedule.nextDueAt];
  }
}
