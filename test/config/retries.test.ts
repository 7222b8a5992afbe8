import { describe, expect, it } from 'vitest';
import { compileServerConfig } from '../../src/config/index.js';
import { StewardError } from '../../src/protocol/index.js';

describe('retries config', () => {
  it('defaults to no retry once a step started and two retries before', () => {
    expect(compileServerConfig({}).retries).toEqual({ ran: 0, notStarted: 2 });
  });

  it('takes either budget alone, keeping the other default', () => {
    expect(compileServerConfig({ retries: { ran: 1 } }).retries).toEqual({ ran: 1, notStarted: 2 });
    expect(compileServerConfig({ retries: { notStarted: 0 } }).retries).toEqual({ ran: 0, notStarted: 0 });
    expect(Object.isFrozen(compileServerConfig({}).retries)).toBe(true);
  });

  it.each([
    [{ ran: -1 }, /retries\.ran.*expected 0 or more retries/],
    [{ notStarted: 11 }, /retries\.notStarted.*expected at most 10 retries/],
    [{ ran: 1.5 }, /retries\.ran.*whole number/],
    [{ ran: 'twice' }, /retries\.ran.*whole number/],
    [{ always: 3 }, /retries.*always/],
  ])('refuses retries %j with a clear STEWARD_CONFIG_INVALID', (retries, message) => {
    let caught: unknown;
    try {
      compileServerConfig({ retries });
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(StewardError);
    expect((caught as StewardError).code).toBe('STEWARD_CONFIG_INVALID');
    expect((caught as StewardError).message).toMatch(message);
  });
});
