import { describe, expect, it } from 'vitest';
import {
  capacityVerdict,
  executorShortfall,
  type CapacityBudget,
  type CapacityInput,
} from '../../src/agent/capacity.js';

const GiB = 1024 ** 3;
const budget: CapacityBudget = {
  tokens: 4,
  tokensPerExecutor: 1,
  memoryBytes: 4 * GiB,
  executorMemoryBytes: GiB,
  maxJobsPerUser: 2,
};

function input(overrides: Partial<CapacityInput> = {}): CapacityInput {
  return {
    user: 'alice',
    jobs: [],
    budget,
    perUser: true,
    osNameOf: (user) => (user === 'root' ? undefined : user),
    hasExecutorFor: () => false,
    ...overrides,
  };
}

describe('agent capacity', () => {
  it('refuses a user who already runs the per-user cap of jobs, naming the cap', () => {
    const jobs = [
      { user: 'alice', placed: true },
      { user: 'alice', placed: true },
      { user: 'bob', placed: true },
    ];
    expect(capacityVerdict(input({ jobs }))).toEqual({
      kind: 'full',
      reason: 'user alice already runs 2 job(s), the per-user cap',
    });
    expect(capacityVerdict(input({ jobs: jobs.slice(1) }))).not.toMatchObject({ kind: 'full' });
  });

  it('lets a user with an executor here in without counting executors', () => {
    expect(capacityVerdict(input({ hasExecutorFor: (name) => name === 'alice' }))).toEqual({ kind: 'fits' });
  });

  it('lets everything under the user cap in when not isolating per user', () => {
    expect(capacityVerdict(input({ perUser: false }))).toEqual({ kind: 'fits' });
  });

  it('lets a name the identity policy refuses in, so that placing it ends the job with the refusal', () => {
    expect(capacityVerdict(input({ user: 'root' }))).toEqual({ kind: 'fits' });
  });

  it('counts other users accepted a moment ago, whose executors are not in the pool yet, once each', () => {
    const jobs = [
      { user: 'bob', placed: false },
      { user: 'bob', placed: false },
      { user: 'carol', placed: false },
      { user: 'dave', placed: true },
      { user: 'erin', placed: false },
      { user: 'root', placed: false },
      { user: 'alice', placed: false },
    ];
    const verdict = capacityVerdict(input({ jobs, hasExecutorFor: (name) => name === 'erin' }));
    expect(verdict).toEqual({ kind: 'needs-executor', pending: 2 });
  });

  it('fits another executor while both core tokens and memory allow it, and says which ran out', () => {
    expect(executorShortfall(3, budget)).toBeUndefined();
    expect(executorShortfall(4, budget)).toBe(
      `no capacity for another executor (5 of 4 core tokens, ${5 * GiB} of ${4 * GiB} bytes)`,
    );
    expect(executorShortfall(2, { ...budget, memoryBytes: 2.5 * GiB })).toMatch(/^no capacity/);
    expect(executorShortfall(2, { ...budget, tokens: 2 })).toMatch(/3 of 2 core tokens/);
  });
});
