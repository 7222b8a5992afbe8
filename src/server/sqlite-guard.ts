/**
 * SQLite serves one server. Two servers on one SQLite file would each apply events fine (SQLite locks the
 * file), but neither would hear the other's changes (no NOTIFY) and every write would contend for one lock;
 * HA needs PostgreSQL. So a server claims the file with `<file>.server-lock` (created with O_EXCL, holding
 * its pid and host) and refuses to start while another live server holds it. A lock left by a process that
 * died (same host, pid gone) is taken over.
 */
import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import os from 'node:os';
import { StewardError } from '../protocol/index.js';

interface LockContent {
  pid: number;
  host: string;
  since: number;
}

export interface SqliteClaim {
  release(): void;
}

export function claimSqliteFile(file: string): SqliteClaim {
  const lockFile = `${file}.server-lock`;
  const mine: LockContent = { pid: process.pid, host: os.hostname(), since: Date.now() };
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fd = openSync(lockFile, 'wx', 0o600);
      try {
        writeSync(fd, JSON.stringify(mine));
      } finally {
        closeSync(fd);
      }
      return { release: () => releaseIfMine(lockFile, mine) };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const holder = readLock(lockFile);
    if (holder && holder.host !== mine.host) {
      throw new StewardError(
        'STEWARD_CONFIG_INVALID',
        `server.store.path: ${file} is claimed by a Steward server on host ${holder.host} (pid ${holder.pid}); SQLite serves one server — use store.kind postgres for several (admin guide, "Several servers"), or delete ${lockFile} if no server runs there`,
      );
    }
    // The same process (tests run servers in-process one after another) or a dead one: take it over.
    if (holder && holder.pid !== process.pid && isAlive(holder.pid)) {
      throw new StewardError(
        'STEWARD_CONFIG_INVALID',
        `server.store.path: ${file} is in use by another Steward server (pid ${holder.pid}); SQLite serves one server — use store.kind postgres for several (admin guide, "Several servers")`,
      );
    }
    try {
      unlinkSync(lockFile);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
  }
  throw new StewardError('STEWARD_CONFIG_INVALID', `server.store.path: could not claim ${lockFile}`);
}

function readLock(lockFile: string): LockContent | undefined {
  try {
    const parsed = JSON.parse(readFileSync(lockFile, 'utf8')) as Partial<LockContent>;
    if (typeof parsed.pid === 'number' && typeof parsed.host === 'string')
      return { pid: parsed.pid, host: parsed.host, since: Number(parsed.since ?? 0) };
  } catch {
    // Unreadable or half-written (its writer died mid-write): treated as stale.
  }
  return undefined;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it exists but belongs to someone else.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function releaseIfMine(lockFile: string, mine: LockContent): void {
  const holder = readLock(lockFile);
  if (holder?.pid !== mine.pid || holder.host !== mine.host) return;
  try {
    unlinkSync(lockFile);
  } catch {
    // Already gone.
  }
}
