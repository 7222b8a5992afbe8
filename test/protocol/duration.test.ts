/**
 * Two duration texts with different jobs: the exact one quotes a setting so that it parses back to the same
 * value; the CLI's elapsed time is rounded for reading and is not meant to be parsed.
 */
import { describe, expect, it } from 'vitest';
import { formatElapsed } from '../../src/cli/output.js';
import { formatExactDuration, parseDuration } from '../../src/protocol/index.js';

describe('exact durations (messages quoting settings and limits)', () => {
  it.each([
    [120_000, '2m'],
    [30_000, '30s'],
    [90_000, '90s'],
    [1_500, '1500ms'],
    [7 * 86_400_000, '7d'],
    [3_600_000, '1h'],
    [0, '0ms'],
  ])('writes %i ms as %s, which parses back to the same value', (ms, text) => {
    expect(formatExactDuration(ms)).toBe(text);
    expect(parseDuration(formatExactDuration(ms))).toBe(ms);
  });
});

describe('elapsed times (CLI tables)', () => {
  it.each([
    [850, '850ms'],
    [12_345, '12.3s'],
    [245_000, '4m05s'],
    [7_380_000, '2h03m'],
    [273_600_000, '3d04h'],
    [null, '-'],
  ])('shows %s ms as %s', (ms, text) => {
    expect(formatElapsed(ms)).toBe(text);
  });

  it('rounds, so its text is no setting: 4m05s is not a duration parseDuration accepts', () => {
    expect(() => parseDuration(formatElapsed(245_000))).toThrow(/expected a duration/);
  });
});
