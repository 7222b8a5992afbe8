/**
 * The data dir's modes at daemon start (src/cli/data-dir.ts), on real directories: directories are narrowed
 * to the layout, readable store files are refused with the chmod to run, links and shared dirs are left alone.
 */
import { chmod, lstat, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { secureDataDir, sqliteFiles } from '../../src/cli/data-dir.js';

let scratch: string;
let dataDir: string;

beforeEach(async () => {
  scratch = await mkdtemp(path.join(os.tmpdir(), 'steward-datadir-'));
  dataDir = path.join(scratch, 'data');
});
afterEach(async () => {
  await rm(scratch, { recursive: true, force: true });
});

const mode = async (file: string): Promise<number> => (await lstat(file)).mode & 0o7777;

describe('data dir modes at start', () => {
  it('makes the data dir 0711 and its other children 0700 when the workspace root is inside it, leaving that root alone', async () => {
    await mkdir(dataDir, { mode: 0o755 });
    await chmod(dataDir, 0o755);
    for (const child of ['keys', 'logs', 'results', 'workspaces']) {
      await mkdir(path.join(dataDir, child));
      await chmod(path.join(dataDir, child), 0o755);
    }
    secureDataDir({ dataDir, reachableWorkspaceRoot: path.join(dataDir, 'workspaces'), privateFiles: [] });
    expect(await mode(dataDir)).toBe(0o711);
    for (const child of ['keys', 'logs', 'results'])
      expect(await mode(path.join(dataDir, child)), child).toBe(0o700);
    expect(await mode(path.join(dataDir, 'workspaces'))).toBe(0o755);
  });

  it('keeps every directory on the way to a deeper workspace root traversable', async () => {
    await mkdir(path.join(dataDir, 'srv', 'ws'), { recursive: true });
    await chmod(path.join(dataDir, 'srv'), 0o755);
    secureDataDir({ dataDir, reachableWorkspaceRoot: path.join(dataDir, 'srv', 'ws'), privateFiles: [] });
    expect(await mode(dataDir)).toBe(0o711);
    expect(await mode(path.join(dataDir, 'srv'))).toBe(0o711);
  });

  it('makes the data dir 0700 when no workspace root users must reach is inside it', async () => {
    await mkdir(dataDir, { mode: 0o755 });
    await chmod(dataDir, 0o755);
    secureDataDir({ dataDir, reachableWorkspaceRoot: path.join(scratch, 'elsewhere'), privateFiles: [] });
    expect(await mode(dataDir)).toBe(0o700);
    await rm(dataDir, { recursive: true });
    secureDataDir({ dataDir, privateFiles: [] });
    expect(await mode(dataDir)).toBe(0o700);
  });

  it('refuses a readable -wal with STEWARD_STORE_READABLE naming the chmod, and changes no file', async () => {
    await mkdir(dataDir);
    const db = path.join(dataDir, 'steward.db');
    await writeFile(db, '', { mode: 0o600 });
    await writeFile(`${db}-wal`, '', { mode: 0o644 });
    await chmod(`${db}-wal`, 0o644);
    let error: unknown;
    try {
      secureDataDir({ dataDir, privateFiles: sqliteFiles(db) });
    } catch (caught) {
      error = caught;
    }
    expect(error).toMatchObject({ code: 'STEWARD_STORE_READABLE' });
    const message = (error as Error).message;
    expect(message).not.toContain('\n');
    expect(message).toContain(`${db}-wal (0644)`);
    expect(message).toContain(`Run: chmod 600 ${db}-wal`);
    expect(message).not.toContain(`${db} (`);
    expect(await mode(`${db}-wal`)).toBe(0o644);
    await chmod(`${db}-wal`, 0o600);
    expect(() => secureDataDir({ dataDir, privateFiles: sqliteFiles(db) })).not.toThrow();
  });

  it('refuses a shared directory such as /tmp as the data dir and leaves its mode alone', async () => {
    await mkdir(dataDir);
    await chmod(dataDir, 0o1777);
    expect(() => secureDataDir({ dataDir, privateFiles: [] })).toThrow(/shared directory \(mode 1777\)/);
    expect(await mode(dataDir)).toBe(0o1777);
  });

  it('never changes the mode of what a link in the data dir points to', async () => {
    await mkdir(dataDir);
    const outside = path.join(scratch, 'outside');
    await mkdir(outside);
    await chmod(outside, 0o755);
    await symlink(outside, path.join(dataDir, 'link'));
    secureDataDir({ dataDir, privateFiles: [] });
    expect(await mode(outside)).toBe(0o755);
  });
});
