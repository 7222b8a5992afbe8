import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { compileServerConfig } from '../../src/config/index.js';
import { StewardError } from '../../src/protocol/index.js';

const DAY = 86_400_000;

function refusal(input: Record<string, unknown>): string {
  try {
    compileServerConfig(input);
  } catch (error) {
    expect(error).toBeInstanceOf(StewardError);
    expect((error as StewardError).code).toBe('STEWARD_CONFIG_INVALID');
    return (error as StewardError).message;
  }
  throw new Error(`accepted ${JSON.stringify(input)}`);
}

describe('metrics config', () => {
  it('is off without the section or with enabled: false', () => {
    expect(compileServerConfig({}).metrics).toBeUndefined();
    expect(compileServerConfig({ metrics: { enabled: false } }).metrics).toBeUndefined();
  });

  it('takes a token, a token file or a listener of its own', () => {
    expect(compileServerConfig({ metrics: { token: 'x'.repeat(16) } }).metrics).toEqual({
      token: 'x'.repeat(16),
      listen: undefined,
    });
    const dir = mkdtempSync(path.join(os.tmpdir(), 'steward-metrics-config-'));
    try {
      const file = path.join(dir, 'token');
      writeFileSync(file, `${'y'.repeat(20)}\n`, { mode: 0o600 });
      expect(compileServerConfig({ metrics: { tokenFile: file } }).metrics?.token).toBe('y'.repeat(20));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    expect(compileServerConfig({ metrics: { listen: { host: '127.0.0.1', port: 9464 } } }).metrics).toEqual({
      token: undefined,
      listen: { host: '127.0.0.1', port: 9464 },
    });
  });

  it('refuses an endpoint open on the API port, short tokens, both token kinds and unknown keys', () => {
    expect(refusal({ metrics: {} })).toMatch(/set token or tokenFile.*or listen/);
    expect(refusal({ metrics: { token: 'short' } })).toMatch(/metrics\.token: expected at least 16/);
    expect(refusal({ metrics: { token: 'x'.repeat(16), tokenFile: '/nonexistent' } })).toMatch(/not both/);
    expect(refusal({ metrics: { token: 'x'.repeat(16), path: '/m' } })).toMatch(/metrics.*path/);
    expect(refusal({ metrics: { listen: { host: 'localhost', port: 1 } } })).toMatch(
      /expected an IP address/,
    );
  });
});

describe('retention config', () => {
  it('keeps everything without the section', () => {
    expect(compileServerConfig({}).retention).toBeUndefined();
  });

  it('compiles horizons, lets results follow records, and merges space overrides with the defaults', () => {
    const retention = compileServerConfig({
      retention: {
        results: '7d',
        records: '90d',
        spaces: { team: { results: '1d' }, lab: { records: '3d' } },
      },
    }).retention!;
    expect(retention.resultsMs).toBe(7 * DAY);
    expect(retention.recordsMs).toBe(90 * DAY);
    expect(retention.spaces.get('team')).toEqual({ resultsMs: DAY, recordsMs: 90 * DAY });
    // A space that keeps records 3 days cannot keep files 7.
    expect(retention.spaces.get('lab')).toEqual({ resultsMs: 3 * DAY, recordsMs: 3 * DAY });
    expect(retention.sweepIntervalMs).toBe(3_600_000);
    expect(retention.batchSize).toBe(200);
    expect(compileServerConfig({ retention: { records: '30d' } }).retention).toMatchObject({
      resultsMs: 30 * DAY,
      recordsMs: 30 * DAY,
    });
    expect(compileServerConfig({ retention: { results: '30d' } }).retention).toMatchObject({
      resultsMs: 30 * DAY,
      recordsMs: null,
    });
    expect(
      compileServerConfig({
        retention: { results: '1d', spaces: { keep: { results: 'forever' } } },
      }).retention?.spaces.get('keep'),
    ).toEqual({ resultsMs: null, recordsMs: null });
  });

  it('refuses records shorter than results, unknown keys and a too frequent sweep', () => {
    expect(refusal({ retention: { results: '30d', records: '7d' } })).toMatch(
      /records \(7d\) must be at least results \(30d\)/,
    );
    expect(
      refusal({ retention: { results: '1d', spaces: { a: { results: 'forever', records: '2d' } } } }),
    ).toMatch(/spaces\.a: records/);
    expect(refusal({ retention: { results: '1d', logs: '2d' } })).toMatch(/retention.*logs/);
    expect(refusal({ retention: { results: '1d', sweepInterval: '10s' } })).toMatch(/at least 1m/);
  });
});
