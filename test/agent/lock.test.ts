/**
 * The agent id lock (one agent per id per host), on the real file system with real processes: a live
 * owner keeps a second agent out, a dead owner's lock (or one whose pid was reused) is taken over, and a lock
 * directory others may write to is refused.
 */
import { spawn } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AgentLock } from '../../src/agent/lock.js';

let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'steward-lock-'));
  await chmod(dir, 0o755);
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function deadPid(): Promise<number> {
  const child = spawn('true');
  await new Promise((resolve) => child.once('exit', resolve));
  return child.pid!;
}

describe('agent id lock', () => {
  it('refuses a second holder of the same id while the first lives, naming agent.id, and frees the id on release', async () => {
    const first = await AgentLock.acquire(dir, 'node-a');
    await expect(AgentLock.acquire(dir, 'node-a')).rejects.toMatchObject({
      code: 'STEWARD_AGENT_ID_IN_USE',
      message: expect.stringContaining('set agent.id') as unknown,
    });
    // Another id is another lock.
    const other = await AgentLock.acquire(dir, 'node-b');
    await first.release();
    const again = await AgentLock.acquire(dir, 'node-a');
    await again.release();
    await other.release();
  });

  it('takes over the lock of an agent that died without releasing it', async () => {
    await writeFile(path.join(dir, 'agent-node-a.lock'), `${await deadPid()} 12345\n`);
    const lock = await AgentLock.acquire(dir, 'node-a');
    expect(await readFile(lock.file, 'utf8')).toMatch(new RegExp(`^${process.pid} `));
    await lock.release();
  });

  it('takes over a lock whose pid now belongs to another process (start time differs)', async () => {
    await writeFile(path.join(dir, 'agent-node-a.lock'), `${process.pid} 1\n`);
    const lock = await AgentLock.acquire(dir, 'node-a');
    await lock.release();
  });

  it('refuses a lock directory that others may write to', async () => {
    await chmod(dir, 0o777);
    await expect(AgentLock.acquire(dir, 'node-a')).rejects.toMatchObject({
      code: 'STEWARD_CONFIG_INVALID',
      message: expect.stringContaining('agent.lockDir') as unknown,
    });
  });
});
