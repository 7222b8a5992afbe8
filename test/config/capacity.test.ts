/** The compiled default per-user cap fits the default slots, and leaves a slot to other users. */
import os from 'node:os';
import { describe, expect, it } from 'vitest';
import { compileAgentConfig } from '../../src/config/index.js';

const dataDir = os.tmpdir();

describe('default per-user job cap', () => {
  it('stays below the default slot count (the number of cores) so one user cannot fill the machine', () => {
    const compiled = compileAgentConfig({}, { dataDir });
    expect(compiled.slots).toBe(os.availableParallelism());
    expect(compiled.capacity.maxJobsPerUser).toBeLessThanOrEqual(compiled.slots);
    if (compiled.slots > 1) expect(compiled.capacity.maxJobsPerUser).toBeLessThan(compiled.slots);
    expect(compiled.capacity.maxJobsPerUser).toBeGreaterThanOrEqual(1);
  });

  it('derives from slots when unset: one slot left to others, at least 1, at most maxJobsPerExecutor', () => {
    const cap = (config: Record<string, unknown>): number =>
      compileAgentConfig(config, { dataDir }).capacity.maxJobsPerUser;
    expect(cap({ slots: 1 })).toBe(1);
    expect(cap({ slots: 2 })).toBe(1);
    expect(cap({ slots: 3 })).toBe(2);
    expect(cap({ slots: 16 })).toBe(4);
    expect(cap({ slots: 16, maxJobsPerExecutor: 8 })).toBe(8);
  });

  it('keeps an explicit maxJobsPerUser as it is', () => {
    const compiled = compileAgentConfig({ slots: 2, capacity: { maxJobsPerUser: 2 } }, { dataDir });
    expect(compiled.capacity.maxJobsPerUser).toBe(2);
  });
});
