import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { UserLogs } from '../../src/agent/user-logs.js';
import { until } from '../support/wait.js';

describe('per-user executor logs', () => {
  it("appends to a user's file closed to bound the open ones when that user writes again", async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'steward-user-logs-'));
    const logs = new UserLogs(dir);
    try {
      logs.write('user0', 1, 'stderr', 'first');
      // Lines still going out when the file is closed and opened again: the reopened file must wait for them.
      for (let i = 0; i < 2000; i++) logs.write('user0', 1, 'stderr', `filler ${i}`);
      for (let i = 1; i <= 200; i++) logs.write(`user${i}`, i, 'stderr', `line of user${i}`);
      // user0's file was closed meanwhile (far more users than files held open): its next line reopens it.
      logs.write('user0', 1, 'stderr', 'second');
      logs.close();
      const day = new Date().toISOString().slice(0, 10);
      const file = path.join(dir, 'user0', `executor-${day}.log`);
      await until('both lines of user0 written', async () =>
        (await readFile(file, 'utf8').catch(() => '')).includes('second'),
      );
      const text = await readFile(file, 'utf8');
      const lines = text
        .trimEnd()
        .split('\n')
        .map((entry) => entry.replace(/^\S+ pid=1 stderr /, ''));
      expect(lines).toEqual(['first', ...Array.from({ length: 2000 }, (_, i) => `filler ${i}`), 'second']);
      await until('user200 written', async () =>
        (await readFile(path.join(dir, 'user200', `executor-${day}.log`), 'utf8').catch(() => '')).includes(
          'line of user200',
        ),
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
