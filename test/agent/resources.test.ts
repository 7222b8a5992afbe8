/** The agent's resource report: descriptors counted by kind, so that a growth can be told apart. */
import { closeSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { AgentPool } from '../../src/agent/collaborators.js';
import { fdKind, resourceReport } from '../../src/agent/resources.js';

describe('agent resource report', () => {
  it('names a descriptor by its kind, without its inode', () => {
    expect(fdKind('socket:[123456]')).toBe('socket');
    expect(fdKind('pipe:[99]')).toBe('pipe');
    expect(fdKind('anon_inode:[eventpoll]')).toBe('anon_inode:[eventpoll]');
    expect(fdKind('anon_inode:inotify')).toBe('anon_inode:');
    expect(fdKind('/var/lib/steward/steward.db')).toBe('file:/var/lib/steward');
    // Each user's log file is one kind: a path part with a digit stands for one of many.
    expect(fdKind('/var/log/steward/users/u1042/executor-2026-12-04.log')).toBe(
      'file:/var/log/steward/users/*',
    );
    expect(fdKind('weird')).toBe('other');
  });

  it('counts open files under their directory, and no longer once closed', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'steward-fds-'));
    const kind = fdKind(path.join(dir, 'f'));
    // Only the idle memory is asked of the pool.
    const pool = {
      idleMemory: () => ({ idle: 0, spares: 0, residentBytes: 0, budgetBytes: 1 }),
    } as unknown as AgentPool;
    try {
      const before = resourceReport(pool);
      const fds = [0, 1, 2].map((n) => openSync(path.join(dir, `f${n}`), 'w'));
      const open = resourceReport(pool);
      for (const fd of fds) closeSync(fd);
      const after = resourceReport(pool);
      const held = before.fdKinds[kind] ?? 0;
      expect(open.fdKinds[kind]).toBe(held + 3);
      expect(open.fds).toBe(before.fds! + 3);
      expect(after.fdKinds[kind] ?? 0).toBe(held);
      expect(Object.values(open.fdKinds).reduce((sum, n) => sum + n, 0)).toBe(open.fds);
      expect(open.idle?.budgetBytes).toBe(1);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
