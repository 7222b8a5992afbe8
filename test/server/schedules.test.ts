import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ScheduleInfo } from '../../src/protocol/index.js';
import { backends } from '../store/backends.js';
import { startHarness, REPORT_WORKFLOW, type Harness } from './harness.js';

const MINUTE = 60_000;
const T0 = Date.parse('2026-05-01T10:00:00Z');

/** Schedules through the REST API on an in-process server whose clock the test moves; firing by hand. */
describe.each(backends)('schedules on one server on $name', (backend) => {
  let h: Harness;
  let now: number;
  let alice: string;
  let admin: string;

  beforeEach(async (context) => {
    now = T0 - 30_000;
    h = await startHarness({
      backend,
      title: context.task.name,
      clock: () => now,
      scheduler: { enabled: false },
    });
    admin = await h.adminToken();
    alice = await h.userToken('alice');
    await h.call('pushWorkflow', { token: alice, body: { source: REPORT_WORKFLOW } });
  });

  afterEach(async () => {
    await h.dispose();
  });

  async function create(
    body: Partial<ScheduleInfo> & { name: string },
    token = alice,
  ): Promise<ScheduleInfo> {
    return h.call('createSchedule', {
      token,
      body: { workflow: 'report', params: { region: 'north' }, cron: '* * * * *', ...body },
    });
  }

  async function jobsOf(
    scheduleId: string,
  ): Promise<{ id: string; state: string; schedule: string | null }[]> {
    const { jobs } = await h.call('listJobs', { token: admin, query: { limit: 1000 } });
    return jobs.filter((job) => job.schedule === scheduleId);
  }

  async function audit(action: string, target?: string): Promise<Record<string, unknown>[]> {
    const { entries } = await h.call('listAudit', {
      token: admin,
      query: { action, ...(target ? { target } : {}), limit: 1000 },
    });
    return entries.map((entry) => ({ actor: entry.actor, target: entry.target, ...entry.detail }));
  }

  it('creates a schedule with its next run times, shows it by name or id, and audits the creation', async () => {
    const created = await create({ name: 'hourly', cron: '0 * * * *', timeZone: 'Europe/Berlin' });
    expect(created).toMatchObject({
      owner: 'alice',
      workflow: 'alice/report',
      misfire: 'catch-up',
      overlap: 'skip',
      paused: false,
      nextRuns: ['2026-05-01T10:00:00.000Z', '2026-05-01T11:00:00.000Z', '2026-05-01T12:00:00.000Z'],
    });
    expect(created.id).toMatch(/^sch_/);
    const byName = await h.call('showSchedule', {
      token: alice,
      params: { schedule: 'hourly' },
      query: { runs: 5 },
    });
    expect(byName.nextRuns).toHaveLength(5);
    expect((await h.call('showSchedule', { token: alice, params: { schedule: created.id } })).name).toBe(
      'hourly',
    );
    expect((await h.call('listSchedules', { token: alice })).schedules.map((s) => s.name)).toEqual([
      'hourly',
    ]);
    expect(await audit('schedule.create', created.id)).toMatchObject([{ actor: 'alice', name: 'hourly' }]);
  });

  it('refuses a bad cron, an unknown time zone, a taken name, a file param and a workflow you cannot run', async () => {
    const bad = async (body: Record<string, unknown>, token = alice) =>
      h.callError('createSchedule', {
        token,
        body: { name: 'x', workflow: 'report', params: { region: 'n' }, cron: '* * * * *', ...body },
      });
    const cron = (await bad({ cron: 'every day' })).error;
    expect(cron.code).toBe('STEWARD_SCHEDULE_INVALID');
    expect(cron.message).toMatch(/^cron: /);
    expect((await bad({ timeZone: 'Mars/Olympus' })).error.code).toBe('STEWARD_SCHEDULE_INVALID');
    expect((await bad({ params: {} })).error.code).toBe('STEWARD_PARAMS_INVALID');
    await create({ name: 'x' });
    expect((await bad({})).status).toBe(409);
    expect((await bad({})).error.code).toBe('STEWARD_SCHEDULE_EXISTS');
    const bob = await h.userToken('bob');
    expect((await bad({ workflow: 'alice/report' }, bob)).error.code).toBe('STEWARD_SPACE_NOT_MEMBER');
    await h.call('pushWorkflow', {
      token: alice,
      body: {
        source:
          'name: upload\nparams:\n  data:\n    type: file\n    required: true\nsteps:\n  - id: a\n    sql: SELECT 1\n',
      },
    });
    const upload = (await bad({ name: 'y', workflow: 'upload', params: {} })).error;
    expect(upload.code).toBe('STEWARD_SCHEDULE_INVALID');
    expect(upload.message).toContain('file param');
  });

  it('fires each due tick once as the owner, naming the schedule on the job and in its audit entry', async () => {
    const schedule = await create({ name: 'every-minute', overlap: 'allow' });
    expect(await h.server.fireSchedules(now)).toMatchObject({ fired: 0 });
    now = T0 + 1000;
    expect(await h.server.fireSchedules(now)).toMatchObject({ fired: 1 });
    expect(await h.server.fireSchedules(now)).toMatchObject({ fired: 0 });
    const [job] = await jobsOf(schedule.id);
    expect(job).toBeDefined();
    const detail = await h.call('showJob', { token: alice, params: { id: job!.id } });
    expect(detail).toMatchObject({ user: 'alice', schedule: schedule.id, params: { region: 'north' } });
    expect(await audit('job.submit', job!.id)).toMatchObject([
      {
        actor: 'alice',
        schedule: schedule.id,
        scheduleName: 'every-minute',
        dueAt: '2026-05-01T10:00:00.000Z',
      },
    ]);
    const shown = await h.call('showSchedule', { token: alice, params: { schedule: 'every-minute' } });
    expect(shown).toMatchObject({
      lastJobId: job!.id,
      nextRuns: ['2026-05-01T10:01:00.000Z'].concat(shown.nextRuns.slice(1)),
    });
    // Found 40 s late (within the grace): still fired, no tick lost.
    now = T0 + MINUTE + 40_000;
    expect(await h.server.fireSchedules(now)).toMatchObject({ fired: 1 });
    expect(await jobsOf(schedule.id)).toHaveLength(2);
  });

  it('after downtime, catch-up fires the missed tick once and skip fires none', async () => {
    const catchUp = await create({ name: 'catch-up', overlap: 'allow', misfire: 'catch-up' });
    const skip = await create({ name: 'skip', overlap: 'allow', misfire: 'skip' });
    now = T0 + 10 * MINUTE + 5000;
    expect(await h.server.fireSchedules(now)).toMatchObject({ fired: 1, settled: 1 });
    expect(await jobsOf(catchUp.id)).toHaveLength(1);
    expect(await jobsOf(skip.id)).toHaveLength(0);
    expect(await audit('schedule.skip', skip.id)).toMatchObject([
      { reason: 'misfire', dueAt: '2026-05-01T10:00:00.000Z' },
    ]);
    for (const name of ['catch-up', 'skip'])
      expect((await h.call('showSchedule', { token: alice, params: { schedule: name } })).nextRuns[0]).toBe(
        '2026-05-01T10:11:00.000Z',
      );
  });

  it('with a job of the schedule still running: skip drops ticks, queue holds one until it ends, allow fires', async () => {
    const skip = await create({ name: 'skip', overlap: 'skip' });
    const queue = await create({ name: 'queue', overlap: 'queue' });
    const allow = await create({ name: 'allow', overlap: 'allow' });
    now = T0 + 1000;
    expect(await h.server.fireSchedules(now)).toMatchObject({ fired: 3 });
    // No agent takes the jobs: they stay offered, so each schedule has a live job.
    now = T0 + MINUTE + 1000;
    await h.server.fireSchedules(now);
    now = T0 + 2 * MINUTE + 1000;
    await h.server.fireSchedules(now);
    expect(await jobsOf(skip.id)).toHaveLength(1);
    expect(await jobsOf(queue.id)).toHaveLength(1);
    expect(await jobsOf(allow.id)).toHaveLength(3);
    const held = await h.call('showSchedule', { token: alice, params: { schedule: 'queue' } });
    expect(held.queuedRun).toBe('2026-05-01T10:01:00.000Z');
    expect(await audit('schedule.skip', skip.id)).toHaveLength(2);
    // The running job ends: the held tick fires once, at the next pass.
    const [running] = await jobsOf(queue.id);
    await h.call('cancelJob', { token: alice, params: { id: running!.id } });
    await h.server.fireSchedules(now);
    const queued = await jobsOf(queue.id);
    expect(queued).toHaveLength(2);
    expect(await audit('job.submit', queued.find((job) => job.id !== running!.id)!.id)).toMatchObject([
      { dueAt: '2026-05-01T10:01:00.000Z' },
    ]);
    expect(
      (await h.call('showSchedule', { token: alice, params: { schedule: 'queue' } })).queuedRun,
    ).toBeNull();
  });

  it('pauses and resumes: no tick fires while paused, and none missed meanwhile fires on resume', async () => {
    const schedule = await create({ name: 'pausable', overlap: 'allow' });
    const paused = await h.call('pauseSchedule', { token: alice, params: { schedule: 'pausable' } });
    expect(paused).toMatchObject({ paused: true, pausedReason: 'paused by alice', nextRuns: [] });
    now = T0 + 5 * MINUTE + 1000;
    expect(await h.server.fireSchedules(now)).toMatchObject({ fired: 0 });
    const resumed = await h.call('resumeSchedule', { token: alice, params: { schedule: 'pausable' } });
    expect(resumed).toMatchObject({ paused: false, pausedReason: null });
    expect(resumed.nextRuns[0]).toBe('2026-05-01T10:06:00.000Z');
    expect(await h.server.fireSchedules(now)).toMatchObject({ fired: 0 });
    expect(await jobsOf(schedule.id)).toHaveLength(0);
    expect((await audit('schedule.pause', schedule.id)).length).toBe(1);
    expect((await audit('schedule.resume', schedule.id)).length).toBe(1);
    await h.call('deleteSchedule', { token: alice, params: { schedule: 'pausable' } });
    expect(
      (await h.callError('showSchedule', { token: alice, params: { schedule: 'pausable' } })).status,
    ).toBe(404);
    expect((await audit('schedule.delete', schedule.id)).length).toBe(1);
  });

  it("keeps others' schedules hidden from users, not from admins", async () => {
    const schedule = await create({ name: 'mine' });
    const bob = await h.userToken('bob');
    expect(
      (await h.callError('showSchedule', { token: bob, params: { schedule: schedule.id } })).status,
    ).toBe(404);
    expect(
      (await h.callError('pauseSchedule', { token: bob, params: { schedule: schedule.id } })).status,
    ).toBe(404);
    expect((await h.call('listSchedules', { token: bob })).schedules).toEqual([]);
    expect((await h.call('showSchedule', { token: admin, params: { schedule: schedule.id } })).owner).toBe(
      'alice',
    );
    expect((await h.call('listSchedules', { token: admin, query: { all: 'true' } })).schedules).toHaveLength(
      1,
    );
  });

  it('fails to fire, with an audited reason, for an owner who lost access to the space', async () => {
    await h.call('createSpace', { token: admin, body: { name: 'team' } });
    await h.call('setSpaceMember', {
      token: admin,
      params: { space: 'team' },
      body: { kind: 'user', name: 'alice', role: 'editor' },
    });
    await h.call('pushSpaceWorkflow', {
      token: alice,
      params: { space: 'team' },
      body: { source: REPORT_WORKFLOW },
    });
    const schedule = await create({ name: 'team', workflow: 'team/report', overlap: 'allow' });
    await h.call('removeSpaceMember', {
      token: admin,
      params: { space: 'team' },
      query: { kind: 'user', name: 'alice' },
    });
    now = T0 + 1000;
    expect(await h.server.fireSchedules(now)).toMatchObject({ fired: 0, failed: 1 });
    expect(await jobsOf(schedule.id)).toHaveLength(0);
    expect(await audit('schedule.fire.failed', schedule.id)).toMatchObject([
      { actor: 'alice', code: 'STEWARD_SPACE_NOT_MEMBER', dueAt: '2026-05-01T10:00:00.000Z' },
    ]);
    const shown = await h.call('showSchedule', { token: alice, params: { schedule: 'team' } });
    expect(shown.lastError?.code).toBe('STEWARD_SPACE_NOT_MEMBER');
    expect(shown.nextRuns[0]).toBe('2026-05-01T10:01:00.000Z');
  });

  it('pauses the schedules of a user being disabled, audited, and fires none of them', async () => {
    const one = await create({ name: 'one' });
    const two = await create({ name: 'two' });
    const disabled = await h.call('disableUser', { token: admin, params: { name: 'alice' } });
    expect(disabled.disabled).toBe(true);
    const pauses = await audit('schedule.pause');
    expect(pauses.map((entry) => entry.target).sort()).toEqual([one.id, two.id].sort());
    expect(pauses[0]).toMatchObject({
      actor: 'admin',
      owner: 'alice',
      reason: 'owner alice was disabled by admin',
    });
    expect(await audit('user.disable', 'alice')).toMatchObject([{ pausedSchedules: 2 }]);
    now = T0 + 1000;
    expect(await h.server.fireSchedules(now)).toMatchObject({ fired: 0 });
    // Enabling the user does not resume them; resuming is refused while the owner is disabled.
    const refused = await h.callError('resumeSchedule', { token: admin, params: { schedule: one.id } });
    expect(refused.error.code).toBe('STEWARD_CONFLICT');
    await h.call('enableUser', { token: admin, params: { name: 'alice' } });
    expect((await h.call('showSchedule', { token: admin, params: { schedule: one.id } })).paused).toBe(true);
  });

  it('pauses the schedules of a user being deleted, audited', async () => {
    const bob = await h.userToken('bob');
    await h.call('pushWorkflow', { token: bob, body: { source: REPORT_WORKFLOW } });
    const own = await create({ name: 'bobs' }, bob);
    await h.call('deleteUser', { token: admin, params: { name: 'bob' } });
    const shown = await h.call('showSchedule', { token: admin, params: { schedule: own.id } });
    expect(shown).toMatchObject({ paused: true, pausedReason: 'owner bob was deleted by admin' });
    expect(await audit('schedule.pause', own.id)).toMatchObject([{ actor: 'admin', owner: 'bob' }]);
  });
});
