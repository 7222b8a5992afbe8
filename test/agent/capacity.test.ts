import { describe, expect, it } from 'vitest';
import {
  capacityVerdict,
  executorShortfall,
  idleEvictions,
  pinnedForJob,
  spareFootprint,
  type CapacityBudget,
  type CapacityInput,
} from '../../src/agent/capacity.js';

const MiB = 1024 ** 2;
const GiB = 1024 ** 3;
const budget: CapacityBudget = {
  tokens: 4,
  tokensPerExecutor: 1,
  memoryBytes: 4 * GiB,
  executorMemoryBytes: GiB,
  maxJobsPerUser: 2,
  idleMemoryBytes: 1 * GiB,
  minAvailableBytes: 2 * GiB,
};

function input(overrides: Partial<CapacityInput> = {}): CapacityInput {
  return {
    user: 'alice',
    jobs: [],
    budget,
    perUser: true,
    osNameOf: (user) => (user === 'root' ? undefined : user),
    ...overrides,
  };
}

describe('agent capacity', () => {
  it('refuses a user who already runs the per-user cap of jobs, naming the cap', () => {
    const jobs = [{ user: 'alice' }, { user: 'alice' }, { user: 'bob' }];
    expect(capacityVerdict(input({ jobs }))).toEqual({
      kind: 'full',
      reason: 'user alice already runs 2 job(s), the per-user cap',
    });
    expect(capacityVerdict(input({ jobs: jobs.slice(1) }))).not.toMatchObject({ kind: 'full' });
  });

  it('lets a user whose executor runs jobs here in without counting it again', () => {
    expect(capacityVerdict(input({ jobs: [{ user: 'alice' }, { user: 'bob' }] }))).toEqual({ kind: 'fits' });
  });

  it('lets everything under the user cap in when not isolating per user', () => {
    expect(capacityVerdict(input({ perUser: false }))).toEqual({ kind: 'fits' });
  });

  it('lets a name the identity policy refuses in, so that placing it ends the job with the refusal', () => {
    expect(capacityVerdict(input({ user: 'root' }))).toEqual({ kind: 'fits' });
  });

  it('counts one running executor per OS account with a job here, placed or not, and no idle one', () => {
    const jobs = [
      { user: 'bob' },
      { user: 'bob' },
      { user: 'carol' },
      { user: 'dave' },
      { user: 'root' }, // refused by the identity policy: it never gets an executor
    ];
    expect(capacityVerdict(input({ jobs }))).toEqual({ kind: 'needs-executor', running: 3 });
    // Two server users mapped to one OS account share its executor.
    const mapped = input({
      jobs,
      osNameOf: (user) => (user === 'root' ? undefined : user === 'carol' ? 'bob' : user),
    });
    expect(capacityVerdict(mapped)).toEqual({ kind: 'needs-executor', running: 2 });
    expect(capacityVerdict(input({ user: 'carol', jobs: [{ user: 'bob' }], osNameOf: () => 'bob' }))).toEqual(
      {
        kind: 'fits',
      },
    );
  });

  it('fits another executor while both core tokens and memory allow it, and says which ran out', () => {
    expect(executorShortfall(3, budget)).toBeUndefined();
    expect(executorShortfall(4, budget)).toBe(
      `no capacity for another running executor (5 of 4 core tokens, ${5 * GiB} of ${4 * GiB} bytes)`,
    );
    expect(executorShortfall(2, { ...budget, memoryBytes: 2.5 * GiB })).toMatch(/^no capacity/);
    expect(executorShortfall(2, { ...budget, tokens: 2 })).toMatch(/3 of 2 core tokens/);
  });

  describe('idle budget', () => {
    it('pins an executor only from its hand-out until its job is counted, and at most 10 s', () => {
      const now = 100_000;
      // Handed out a second ago, after it went idle: its job is on its way.
      expect(pinnedForJob(now - 1000, now - 5000, now)).toBe(true);
      // Its job came and went since: idle like any other, although it was handed out a moment ago.
      expect(pinnedForJob(now - 1000, now - 500, now)).toBe(false);
      // Handed out and never given its job (the placement failed): the pin runs out.
      expect(pinnedForJob(now - 10_000, now - 20_000, now)).toBe(false);
      // A new executor is idle and handed out in the same millisecond.
      expect(pinnedForJob(now, now, now)).toBe(true);
    });

    const idle = (key: string, rss: number, idleSince: number, pinned = false) => ({
      key,
      residentBytes: rss * MiB,
      idleSince,
      pinned,
    });
    const base = {
      spareBytes: 200 * MiB,
      idleBudgetBytes: 1000 * MiB,
      availableBytes: 10 * GiB,
      minAvailableBytes: 2 * GiB,
    };

    it('keeps every idle executor while they and the spares fit the budget and memory is plentiful', () => {
      const executors = [idle('a', 100, 1), idle('b', 300, 2), idle('c', 400, 3)];
      expect(idleEvictions({ ...base, idle: executors })).toEqual([]);
    });

    it('stops the least recently used first, as many as bring them a tenth below the budget', () => {
      const executors = [idle('c', 300, 30), idle('a', 100, 10), idle('d', 150, 40), idle('b', 200, 20)];
      // 200 (spares) + 750 = 950 ≤ 1000: nothing to stop; 10 MiB more (960) still nothing.
      expect(idleEvictions({ ...base, idle: executors })).toEqual([]);
      expect(idleEvictions({ ...base, idle: [...executors, idle('e', 10, 50)] })).toEqual([]);
      // 60 MiB more: 1010 > 1000; down to 900 takes `a` (LRU, 100 MiB) and `b` (200).
      expect(idleEvictions({ ...base, idle: [...executors, idle('e', 60, 50)] })).toEqual(['a', 'b']);
      // 950 against 500: down to 450 takes a, b and c (600 freed → 350).
      expect(idleEvictions({ ...base, idleBudgetBytes: 500 * MiB, idle: executors })).toEqual([
        'a',
        'b',
        'c',
      ]);
    });

    it('stops idle executors when the machine runs short of memory, even within the budget', () => {
      const executors = [idle('a', 100, 1), idle('b', 100, 2), idle('c', 100, 3)];
      const short = { ...base, idle: executors, availableBytes: 2 * GiB - 150 * MiB };
      expect(idleEvictions(short)).toEqual(['a', 'b']);
      expect(idleEvictions({ ...short, availableBytes: undefined })).toEqual([]);
    });

    it('counts an executor handed out a moment ago but never stops it', () => {
      const executors = [idle('a', 600, 1, true), idle('b', 300, 2)];
      expect(idleEvictions({ ...base, idle: executors })).toEqual(['b']);
      expect(idleEvictions({ ...base, idle: [idle('a', 2000, 1, true)] })).toEqual([]);
    });

    it('counts a spare still starting at what a spare has been seen to use, so it cannot grow past the budget', () => {
      expect(spareFootprint([30 * MiB, 90 * MiB], 85 * MiB)).toBe(175 * MiB);
      // Before any spare was measured ready, each counts what it uses.
      expect(spareFootprint([30 * MiB, 90 * MiB], 0)).toBe(120 * MiB);
      expect(spareFootprint([], 85 * MiB)).toBe(0);
      // 940 MiB idle and a starting spare at 30 MiB fit a 1,000 MiB budget by its measure, not once it
      // has grown to a spare's 85 MiB: the oldest idle executor goes now.
      const executors = [idle('a', 470, 1), idle('b', 470, 2)];
      const measured = [30 * MiB];
      expect(idleEvictions({ ...base, spareBytes: spareFootprint(measured, 0), idle: executors })).toEqual(
        [],
      );
      expect(
        idleEvictions({ ...base, spareBytes: spareFootprint(measured, 85 * MiB), idle: executors }),
      ).toEqual(['a']);
    });

    it('stops every idle executor when the spares alone fill the budget', () => {
      const executors = [idle('a', 10, 1), idle('b', 10, 2)];
      expect(idleEvictions({ ...base, spareBytes: 1200 * MiB, idle: executors })).toEqual(['a', 'b']);
    });
  });
});
