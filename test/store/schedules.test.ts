import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  openStore,
  TickTakenError,
  type NewJob,
  type NewSchedule,
  type Store,
  type TickClaim,
} from '../../src/store/index.js';
import { backends, openBackendStore, seedAliceWorkflow, type BackendHandle } from './backends.js';

const start = Date.UTC(2026, 2, 1, 12, 0, 0);

function schedule(overrides: Partial<NewSchedule> = {}): NewSchedule {
  return {
    id: 'sch_1',
    owner: 'alice',
    name: 'nightly',
    workflow: 'alice/report',
    params: { region: 'north' },
    labels: ['nightly'],
    cron: '0 2 * * *',
    timeZone: 'Europe/Berlin',
    misfire: 'catch-up',
    overlap: 'skip',
    nextDueAt: start + 60_000,
    createdAt: start,
    ...overrides,
  };
}

function job(id: string, tick?: TickClaim): NewJob {
  return {
    id,
    user: 'alice',
    workflow: { space: 'alice', name: 'report', version: 1, digest: 'd1' },
    params: {},
    labels: [],
    timeoutMs: null,
    jobTokenHash: `hash-${id}`,
    createdAt: start,
    steps: [{ id: 'a', kind: 'sql' }],
    ...(tick ? { tick } : {}),
  };
}

function claimOf(
  from: number | null,
  to: number | null,
  queued: { from?: number; to?: number } = {},
): TickClaim {
  return {
    scheduleId: 'sch_1',
    from: { nextDueAt: from, queuedDueAt: queued.from ?? null },
    to: { nextDueAt: to, queuedDueAt: queued.to ?? null },
    time: start + 60_000,
  };
}

describe.each(backends)('schedules in the store on $name', (backend) => {
  let handle: BackendHandle;
  let store: Store;
  const extra: Store[] = [];

  beforeEach(async (context) => {
    ({ handle, store } = await openBackendStore(backend, context.task.name, { clock: () => start }));
    await seedAliceWorkflow(store, { name: 'report', userAt: start, workflowAt: start });
  });

  afterEach(async () => {
    await Promise.all(extra.splice(0).map((other) => other.close()));
    await store.close();
    await handle.dispose();
  });

  it('stores a schedule, finds it by id and by its owner and name, and refuses a second of that name', async () => {
    expect(await store.schedules.createSchedule(schedule())).toBe(true);
    expect(await store.schedules.createSchedule(schedule({ id: 'sch_2' }))).toBe(false);
    expect(await store.schedules.createSchedule(schedule({ id: 'sch_3', owner: 'bob' }))).toBe(true);
    const found = await store.schedules.getSchedule('sch_1');
    expect(found).toMatchObject({
      owner: 'alice',
      name: 'nightly',
      params: { region: 'north' },
      labels: ['nightly'],
      timeZone: 'Europe/Berlin',
      paused: false,
      nextDueAt: start + 60_000,
      queuedDueAt: null,
      lastError: null,
    });
    expect((await store.schedules.findScheduleByName('alice', 'nightly'))?.id).toBe('sch_1');
    expect((await store.schedules.listSchedules('alice')).map((s) => s.id)).toEqual(['sch_1']);
    expect((await store.schedules.listSchedules()).map((s) => s.id)).toEqual(['sch_1', 'sch_3']);
  });

  it('inserts a tick’s job with the claim, and a second claim of the same tick inserts nothing', async () => {
    await store.schedules.createSchedule(schedule());
    const first = await store.insertJobOnce(job('j1', claimOf(start + 60_000, start + 120_000)));
    expect(first.job.schedule).toBe('sch_1');
    await expect(
      store.insertJobOnce(job('j2', claimOf(start + 60_000, start + 120_000))),
    ).rejects.toBeInstanceOf(TickTakenError);
    expect(await store.getJob('j2')).toBeUndefined();
    const after = await store.schedules.getSchedule('sch_1');
    expect(after).toMatchObject({ nextDueAt: start + 120_000, lastJobId: 'j1', lastFiredAt: start + 60_000 });
    expect(await store.schedules.hasLiveJob('sch_1')).toBe(true);
    await store.transitionJob('j1', 'canceled');
    expect(await store.schedules.hasLiveJob('sch_1')).toBe(false);
  });

  it('lets exactly one of several stores racing on one tick insert its job', async () => {
    await store.schedules.createSchedule(schedule());
    // On PostgreSQL each store has its own connection pool: the servers of an HA setup.
    const stores =
      backend.name === 'postgres' ? [store, ...(await openMore(3))] : [store, store, store, store];
    const outcomes = await Promise.allSettled(
      stores.map((racer, index) =>
        racer.insertJobOnce(job(`race-${index}`, claimOf(start + 60_000, start + 120_000))),
      ),
    );
    expect(outcomes.filter((outcome) => outcome.status === 'fulfilled')).toHaveLength(1);
    for (const outcome of outcomes)
      if (outcome.status === 'rejected') expect(outcome.reason).toBeInstanceOf(TickTakenError);
    const jobs = await store.listJobs({ limit: 10 });
    expect(jobs.filter((j) => j.schedule === 'sch_1')).toHaveLength(1);
  });

  it('leaves the tick due when the job insert fails after the claim (one transaction)', async () => {
    await store.schedules.createSchedule(schedule());
    await store.insertJobOnce(job('taken-id'));
    await expect(
      store.insertJobOnce(job('taken-id', claimOf(start + 60_000, start + 120_000))),
    ).rejects.toThrow();
    expect((await store.schedules.getSchedule('sch_1'))?.nextDueAt).toBe(start + 60_000);
    expect((await store.schedules.listDueSchedules(start + 60_000)).map((s) => s.id)).toEqual(['sch_1']);
  });

  it('settles a tick without a job once, and records why it did not fire', async () => {
    await store.schedules.createSchedule(schedule());
    const failing = {
      ...claimOf(start + 60_000, start + 120_000),
      error: { code: 'STEWARD_FORBIDDEN', message: 'no' },
    };
    expect(await store.schedules.settleTick(failing)).toBe(true);
    expect(await store.schedules.settleTick(failing)).toBe(false);
    expect((await store.schedules.getSchedule('sch_1'))?.lastError).toEqual({
      code: 'STEWARD_FORBIDDEN',
      message: 'no',
    });
    // A held tick (overlap queue) is due whatever next_due_at says.
    expect(
      await store.schedules.settleTick(claimOf(start + 120_000, start + 180_000, { to: start + 120_000 })),
    ).toBe(true);
    expect((await store.schedules.listDueSchedules(start)).map((s) => s.queuedDueAt)).toEqual([
      start + 120_000,
    ]);
    // A firing clears the last error.
    await store.insertJobOnce(
      job('j1', claimOf(start + 180_000, start + 240_000, { from: start + 120_000 })),
    );
    expect(await store.schedules.getSchedule('sch_1')).toMatchObject({ lastError: null, queuedDueAt: null });
  });

  it('claims no tick of a paused schedule, lists none due, and resumes at the given time', async () => {
    await store.schedules.createSchedule(schedule());
    await store.schedules.createSchedule(schedule({ id: 'sch_b', name: 'other' }));
    expect(await store.schedules.pauseSchedulesOf('alice', 'owner disabled')).toEqual(['sch_1', 'sch_b']);
    expect(await store.schedules.pauseSchedulesOf('alice', 'again')).toEqual([]);
    expect(await store.schedules.listDueSchedules(start + 3_600_000)).toEqual([]);
    expect(await store.schedules.nextDueAt()).toBeNull();
    await expect(
      store.insertJobOnce(job('j1', claimOf(start + 60_000, start + 120_000))),
    ).rejects.toBeInstanceOf(TickTakenError);
    expect((await store.schedules.getSchedule('sch_1'))?.pausedReason).toBe('owner disabled');
    const resumed = await store.schedules.setSchedulePaused('sch_1', {
      paused: false,
      nextDueAt: start + 999_000,
    });
    expect(resumed).toMatchObject({ paused: false, pausedReason: null, nextDueAt: start + 999_000 });
    expect(await store.schedules.nextDueAt()).toBe(start + 999_000);
    expect(await store.schedules.deleteSchedule('sch_1')).toBe(true);
    expect(await store.schedules.deleteSchedule('sch_1')).toBe(false);
  });

  async function openMore(count: number): Promise<Store[]> {
    for (let i = 0; i < count; i++) extra.push(await openStore(handle.config));
    return extra;
  }
});
