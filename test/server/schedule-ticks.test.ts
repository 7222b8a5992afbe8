import { describe, expect, it } from 'vitest';
import { StewardError } from '../../src/protocol/index.js';
import { compileCron, planTick } from '../../src/server/schedules/index.js';

const iso = (times: number[]): string[] => times.map((time) => new Date(time).toISOString());

describe('cron times in a time zone (croner)', () => {
  it('runs a 02:30 Europe/Berlin schedule at 03:00 CEST on the day the clocks skip 02:00-03:00', () => {
    const cron = compileCron('30 2 * * *', 'Europe/Berlin');
    expect(iso(cron.nextRuns(3, Date.parse('2026-03-28T00:00:00Z')))).toEqual([
      '2026-03-28T01:30:00.000Z', // 02:30 CET
      '2026-03-29T01:00:00.000Z', // 02:30 does not exist: 03:00 CEST, the first time after the gap
      '2026-03-30T00:30:00.000Z', // 02:30 CEST
    ]);
  });

  it('runs an hourly Europe/Berlin schedule once per real hour across the spring change', () => {
    const cron = compileCron('0 * * * *', 'Europe/Berlin');
    expect(iso(cron.nextRuns(4, Date.parse('2026-03-28T23:30:00Z')))).toEqual([
      '2026-03-29T00:00:00.000Z',
      '2026-03-29T01:00:00.000Z',
      '2026-03-29T02:00:00.000Z',
      '2026-03-29T03:00:00.000Z',
    ]);
  });

  it('runs a 02:30 schedule once on the day the autumn change repeats 02:00-03:00', () => {
    const cron = compileCron('30 2 * * *', 'Europe/Berlin');
    expect(iso(cron.nextRuns(3, Date.parse('2026-10-24T00:00:00Z')))).toEqual([
      '2026-10-24T00:30:00.000Z',
      '2026-10-25T00:30:00.000Z',
      '2026-10-26T01:30:00.000Z',
    ]);
  });

  it('reads six fields as seconds first, and gives the first run strictly after a time', () => {
    const cron = compileCron('* * * * * *', 'UTC');
    expect(cron.nextAfter(Date.parse('2026-01-01T00:00:00.000Z'))).toBe(
      Date.parse('2026-01-01T00:00:01.000Z'),
    );
    expect(cron.nextAfter(Date.parse('2026-01-01T00:00:00.400Z'))).toBe(
      Date.parse('2026-01-01T00:00:01.000Z'),
    );
  });

  it('refuses an expression or a time zone it does not understand with STEWARD_SCHEDULE_INVALID', () => {
    for (const [expression, zone, field] of [
      ['every day', 'UTC', 'cron'],
      ['0 2 * * *', 'Mars/Olympus', 'timeZone'],
    ] as const) {
      let caught: unknown;
      try {
        compileCron(expression, zone);
      } catch (error) {
        caught = error;
      }
      expect(caught).toBeInstanceOf(StewardError);
      expect((caught as StewardError).code).toBe('STEWARD_SCHEDULE_INVALID');
      expect((caught as StewardError).message).toMatch(new RegExp(`^${field}: `));
    }
  });
});

describe('what a due tick does (misfire and overlap policies)', () => {
  const minute = compileCron('* * * * *', 'UTC');
  const t0 = Date.parse('2026-05-01T10:00:00Z');
  const base = { nextDueAt: t0, queuedDueAt: null, misfire: 'catch-up', overlap: 'allow' } as const;
  const plan = (
    schedule: Partial<Parameters<typeof planTick>[0]['schedule']>,
    now: number,
    hasLiveJob = false,
  ): ReturnType<typeof planTick> =>
    planTick({ schedule: { ...base, ...schedule }, cron: minute, now, hasLiveJob, graceMs: 60_000 });

  it('does nothing before the tick is due', () => {
    expect(plan({}, t0 - 1)).toEqual({ kind: 'none' });
  });

  it('fires an on-time tick and moves to the tick after it, even when that one is due too', () => {
    expect(plan({}, t0 + 500)).toEqual({
      kind: 'fire',
      dueAt: t0,
      late: false,
      to: { nextDueAt: t0 + 60_000, queuedDueAt: null },
    });
    // Found 50 s late (within the grace): still this tick, then the next one, none lost.
    expect(plan({}, t0 + 50_000)).toMatchObject({ kind: 'fire', dueAt: t0, to: { nextDueAt: t0 + 60_000 } });
  });

  it('after downtime, catch-up fires the missed tick once and skip fires none; both resume after now', () => {
    const now = t0 + 10 * 60_000 + 5_000;
    expect(plan({ misfire: 'catch-up' }, now)).toEqual({
      kind: 'fire',
      dueAt: t0,
      late: true,
      to: { nextDueAt: t0 + 11 * 60_000, queuedDueAt: null },
    });
    expect(plan({ misfire: 'skip' }, now)).toEqual({
      kind: 'settle',
      dueAt: t0,
      reason: 'misfire',
      to: { nextDueAt: t0 + 11 * 60_000, queuedDueAt: null },
    });
  });

  it('while a job of the schedule runs: skip drops the tick, queue holds it, allow fires', () => {
    expect(plan({ overlap: 'skip' }, t0, true)).toMatchObject({ kind: 'settle', reason: 'overlap-skip' });
    expect(plan({ overlap: 'queue' }, t0, true)).toEqual({
      kind: 'settle',
      dueAt: t0,
      reason: 'overlap-queue',
      to: { nextDueAt: t0 + 60_000, queuedDueAt: t0 },
    });
    expect(plan({ overlap: 'allow' }, t0, true)).toMatchObject({ kind: 'fire', dueAt: t0 });
    // One tick is held at most: a later tick while one is held is dropped.
    expect(plan({ overlap: 'queue', queuedDueAt: t0 - 60_000 }, t0, true)).toMatchObject({
      kind: 'settle',
      to: { queuedDueAt: t0 - 60_000 },
    });
  });

  it('fires a held tick once the running job has ended, keeping the next tick as it was', () => {
    expect(plan({ overlap: 'queue', queuedDueAt: t0 - 60_000, nextDueAt: t0 + 60_000 }, t0 + 1000)).toEqual({
      kind: 'fire',
      dueAt: t0 - 60_000,
      late: false,
      to: { nextDueAt: t0 + 60_000, queuedDueAt: null },
    });
    expect(
      plan({ overlap: 'queue', queuedDueAt: t0 - 60_000, nextDueAt: t0 + 60_000 }, t0 + 1000, true),
    ).toEqual({
      kind: 'none',
    });
  });
});
