import os from 'node:os';
import { afterEach, describe, expect, it } from 'vitest';
import { compileAgentConfig } from '../../src/config/index.js';

const defaults = { dataDir: '/var/lib/steward' };
const saved = process.env.STEWARD_AGENT_ID;

afterEach(() => {
  if (saved === undefined) delete process.env.STEWARD_AGENT_ID;
  else process.env.STEWARD_AGENT_ID = saved;
});

describe('agent enforcement config', () => {
  it('defaults to a 5 s deadline grace, a 1 s executor ping with 5 misses, and 1024 pids per executor', () => {
    delete process.env.STEWARD_AGENT_ID;
    const config = compileAgentConfig({}, defaults);
    expect(config.deadlineGraceMs).toBe(5_000);
    expect(config.executorHeartbeat).toEqual({ intervalMs: 1_000, misses: 5 });
    expect(config.limits.pids).toBe(1024);
    expect(config.id).toBe(os.hostname());
    expect(config.lockDir).toBe(
      process.getuid?.() === 0 ? '/run/steward' : `${os.tmpdir()}/steward-${process.getuid?.()}`,
    );
  });

  it('takes the grace, the ping, the pids limit and the lock directory from the config', () => {
    const config = compileAgentConfig(
      {
        deadlineGrace: '2s',
        executorHeartbeat: { interval: '250ms', misses: 8 },
        limits: { pids: 200 },
        lockDir: '/run/other',
      },
      defaults,
    );
    expect(config.deadlineGraceMs).toBe(2_000);
    expect(config.executorHeartbeat).toEqual({ intervalMs: 250, misses: 8 });
    expect(config.limits.pids).toBe(200);
    expect(config.lockDir).toBe('/run/other');
  });

  it('refuses a pids limit below what an executor needs for itself, and a single allowed miss', () => {
    expect(() => compileAgentConfig({ limits: { pids: 10 } }, defaults)).toThrow(/limits\.pids/);
    expect(() => compileAgentConfig({ executorHeartbeat: { misses: 1 } }, defaults)).toThrow(
      /executorHeartbeat\.misses/,
    );
  });

  it('takes the id from STEWARD_AGENT_ID when the config names none, and refuses a malformed one', () => {
    process.env.STEWARD_AGENT_ID = 'from-env';
    expect(compileAgentConfig({}, defaults).id).toBe('from-env');
    expect(compileAgentConfig({ id: 'from-config' }, defaults).id).toBe('from-config');
    process.env.STEWARD_AGENT_ID = 'no spaces/allowed';
    expect(() => compileAgentConfig({}, defaults)).toThrow(/STEWARD_AGENT_ID: expected 1-100 letters/);
  });
});
