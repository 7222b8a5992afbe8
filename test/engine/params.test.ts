import { afterAll, describe, expect, it } from 'vitest';
import { StewardError } from '../../src/protocol/index.js';
import { closeSqlAnalyzer, parseWorkflow, resolveParams } from '../../src/engine/index.js';

afterAll(async () => {
  await closeSqlAnalyzer();
});

const source = `name: p
params:
  n: {type: integer, default: 5}
  ratio: {type: number}
  flag: {type: boolean, default: false}
  since: {type: date, required: true}
  region: {type: enum, values: [EU, US], default: EU}
  label: {type: string}
steps:
  - id: a
    sql: SELECT 1 AS x
`;

function paramsError(run: () => unknown): StewardError {
  try {
    run();
  } catch (error) {
    if (error instanceof StewardError) return error;
    throw error;
  }
  throw new Error('expected STEWARD_PARAMS_INVALID');
}

describe('resolveParams', () => {
  it('converts CLI strings to typed values and applies defaults', async () => {
    const workflow = await parseWorkflow(source);
    expect(
      resolveParams(workflow, { n: '42', ratio: '0.5', flag: 'yes', since: '2026-02-28', label: 'x' }),
    ).toEqual({
      n: 42,
      ratio: 0.5,
      flag: true,
      since: '2026-02-28',
      region: 'EU',
      label: 'x',
    });
    expect(resolveParams(workflow, { since: '2024-02-29', n: 7, flag: true, region: 'US' })).toEqual({
      n: 7,
      flag: true,
      since: '2024-02-29',
      region: 'US',
    });
  });

  it('refuses a missing required param, unknown names, and values of the wrong type', async () => {
    const workflow = await parseWorkflow(source);
    const missing = paramsError(() => resolveParams(workflow, {}));
    expect(missing.code).toBe('STEWARD_PARAMS_INVALID');
    expect(missing.message).toBe('params.since: required, but no value was given');
    const wrong = paramsError(() =>
      resolveParams(workflow, {
        since: 'yesterday',
        n: '1.5',
        ratio: 'abc',
        flag: 'maybe',
        region: 'MARS',
        extra: '1',
      }),
    );
    const issues = wrong.details?.issues as { path: string; message: string }[];
    expect(issues).toEqual([
      { path: 'params.extra', message: expect.stringContaining('unknown param') as string },
      { path: 'params.n', message: 'expected an integer, got "1.5"' },
      { path: 'params.ratio', message: 'expected a number, got "abc"' },
      { path: 'params.flag', message: 'expected true or false, got "maybe"' },
      { path: 'params.since', message: 'expected a date like 2026-01-31, got "yesterday"' },
      { path: 'params.region', message: 'expected one of "EU", "US", got "MARS"' },
    ]);
  });

  it('refuses dates that do not exist on the calendar', async () => {
    const workflow = await parseWorkflow(source);
    expect(paramsError(() => resolveParams(workflow, { since: '2026-02-30' })).message).toBe(
      'params.since: expected a date like 2026-01-31, got "2026-02-30"',
    );
    expect(paramsError(() => resolveParams(workflow, { since: '2026-1-5' })).message).toContain(
      'expected a date',
    );
  });
});
