import { describe, expect, it } from 'vitest';
import { compileServerConfig } from '../../src/config/index.js';

describe('step log and preview limits config', () => {
  it('defaults to a 32 MiB step log cap, 8 KiB preview cells and 1 MiB preview responses', () => {
    const config = compileServerConfig({});
    expect(config.stepLogLimitBytes).toBe(32 * 1024 * 1024);
    expect(config.preview).toEqual({ cellBytes: 8192, responseBytes: 1024 * 1024 });
  });

  it('takes other caps, keeping the defaults of the ones not given', () => {
    const config = compileServerConfig({ stepLogLimitBytes: 1_000_000, preview: { cellBytes: 100 } });
    expect(config.stepLogLimitBytes).toBe(1_000_000);
    expect(config.preview).toEqual({ cellBytes: 100, responseBytes: 1024 * 1024 });
  });

  it.each([
    [{ stepLogLimitBytes: 1000 }, /stepLogLimitBytes/],
    [{ stepLogLimitBytes: 1.5 }, /stepLogLimitBytes/],
    [{ preview: { cellBytes: 8 } }, /preview\.cellBytes/],
    [{ preview: { responseBytes: 10 } }, /preview\.responseBytes/],
    [{ preview: { rows: 5 } }, /preview/],
  ])('refuses %j with STEWARD_CONFIG_INVALID naming the setting', (input, message) => {
    expect(() => compileServerConfig(input)).toThrow(message);
    try {
      compileServerConfig(input);
    } catch (error) {
      expect((error as { code?: string }).code).toBe('STEWARD_CONFIG_INVALID');
    }
  });
});
