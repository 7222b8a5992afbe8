/**
 * SQLite serves one server: a second server process on the same SQLite file is refused with a message that
 * names the field and points to PostgreSQL; a lock left by a dead server is taken over.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { EmbeddedBus } from '../../src/bus/index.js';
import { compileServerConfig } from '../../src/config/index.js';
import { createServer } from '../../src/server/index.js';

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function start(dataDir: string) {
  return createServer({
    config: compileServerConfig({ dataDir, port: 0 }),
    bus: new EmbeddedBus({}),
    logger: pino({ level: 'silent' }),
    adminPassword: 'admin-password-for-tests',
  });
}

describe('one server per SQLite file', () => {
  it('refuses to start on a SQLite file another live server process holds, naming server.store.path', async () => {
    const dataDir = mkdtempSync(path.join(os.tmpdir(), 'steward-sqlite-guard-'));
    dirs.push(dataDir);
    // Another live process on this host holds the file.
    const other = spawn('sleep', ['30'], { stdio: 'ignore' });
    try {
      writeFileSync(
        path.join(dataDir, 'steward.db.server-lock'),
        JSON.stringify({ pid: other.pid, host: os.hostname(), since: Date.now() }),
      );
      await expect(start(dataDir)).rejects.toThrow(
        /server\.store\.path: .*steward\.db is in use by another Steward server \(pid \d+\); SQLite serves one server — use store\.kind postgres/,
      );
    } finally {
      other.kill('SIGKILL');
    }
  });

  it('takes over the lock of a server that died, and releases its own on close', async () => {
    const dataDir = mkdtempSync(path.join(os.tmpdir(), 'steward-sqlite-guard-'));
    dirs.push(dataDir);
    const dead = spawn('true', [], { stdio: 'ignore' });
    await new Promise((resolve) => dead.once('exit', resolve));
    writeFileSync(
      path.join(dataDir, 'steward.db.server-lock'),
      JSON.stringify({ pid: dead.pid, host: os.hostname(), since: 1 }),
    );
    const server = await start(dataDir);
    await server.close();
    // Released: a fresh start (as after a clean restart) works again.
    const again = await start(dataDir);
    await again.close();
  });
});
