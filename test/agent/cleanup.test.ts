/**
 * `steward cleanup` through the real CLI, as root, on a workspace root laid out by the agent's own code with
 * real OS users — including links planted to lure it outside a user's directory — and the daily logs.
 */
import { execFile } from 'node:child_process';
import {
  lstat,
  mkdir,
  readFile,
  readdir,
  readlink,
  rm,
  symlink,
  lutimes,
  writeFile,
  chown,
} from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DailyLogFile, prepareUserDirs, prepareWorkspaceRoot } from '../../src/agent/index.js';
import { OsUsers, type TestUser } from '../support/os-users.js';
import { isRoot, stewardBin, tempDir } from '../support/steward.js';
import { until } from '../support/wait.js';

const execFileAsync = promisify(execFile);
const DAY = 86_400_000;

async function age(target: string, days: number): Promise<void> {
  const when = new Date(Date.now() - days * DAY);
  await lutimes(target, when, when);
}

async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await execFileAsync(process.execPath, [stewardBin, ...args]);
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe.runIf(isRoot)('steward cleanup', () => {
  const users = new OsUsers();
  let dataDir: string;
  let root: string;
  let alice: TestUser;
  let bob: TestUser;
  const paths: Record<string, string> = {};

  beforeAll(async () => {
    dataDir = await tempDir('cleanup');
    root = path.join(dataDir, 'workspaces');
    alice = await users.user('cla', { createHome: false });
    bob = await users.user('clb', { createHome: false });
    await prepareWorkspaceRoot(root, true);
    const account = (user: TestUser) => ({
      name: user.name,
      uid: user.uid,
      gid: user.gid,
      home: '/nonexistent',
      shell: '/bin/sh',
    });
    const a = await prepareUserDirs(root, account(alice), true);
    const b = await prepareUserDirs(root, account(bob), true);
    const make = async (name: string, target: string, owner: TestUser, days: number, dir = true) => {
      if (dir) {
        await mkdir(target, { recursive: true });
        await writeFile(path.join(target, 'data.txt'), name);
        await chown(path.join(target, 'data.txt'), owner.uid, owner.gid);
      } else await writeFile(target, name);
      await chown(target, owner.uid, owner.gid);
      await age(target, days);
      paths[name] = target;
    };
    await mkdir(path.join(a.workspaceDir, 'jobs'));
    await chown(path.join(a.workspaceDir, 'jobs'), alice.uid, alice.gid);
    await make('oldJob', path.join(a.workspaceDir, 'jobs', 'job-old-1'), alice, 10);
    await make('newJob', path.join(a.workspaceDir, 'jobs', 'job-new-1'), alice, 1);
    await make('keptJob', path.join(a.workspaceDir, 'jobs', 'job-kept-1'), alice, 10);
    await writeFile(path.join(paths.keptJob!, '.steward-keep'), '');
    await age(paths.keptJob!, 10);
    await make('oldTemp', path.join(a.tempDir, 'spill.tmp'), alice, 9, false);
    // Bob's whole temp dir swapped for a link to Alice's: must be skipped, not followed.
    await rm(b.tempDir, { recursive: true });
    await symlink(a.tempDir, b.tempDir);
    await mkdir(path.join(dataDir, 'bob-real-tmp'));
    paths.bobOld = path.join(dataDir, 'bob-real-tmp', 'precious');
    await make('bobOld', paths.bobOld, bob, 30);
    // A link in Alice's job dirs pointing at Bob's old files.
    const lure = path.join(a.workspaceDir, 'jobs', 'lure');
    await symlink(path.join(dataDir, 'bob-real-tmp'), lure);
    paths.lure = lure;
    await age(lure, 10);
  }, 30_000);

  afterAll(async () => {
    await users.cleanup();
    await rm(dataDir, { recursive: true, force: true });
  });

  it('lists what it would delete with --dry-run and deletes nothing', async () => {
    const result = await cli(['cleanup', '--data-dir', dataDir, '--older-than', '7d', '--dry-run']);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toContain(paths.oldJob);
    expect(result.stdout).toContain(paths.oldTemp);
    expect(result.stdout).toContain(paths.lure);
    expect(result.stdout).not.toContain(paths.newJob);
    expect(result.stdout).not.toContain(paths.keptJob);
    expect(result.stdout).toMatch(/3 entries older than 7d .*dry run: nothing removed/);
    await expect(lstat(paths.oldJob!)).resolves.toBeTruthy();
    await expect(lstat(paths.oldTemp!)).resolves.toBeTruthy();
  });

  it('deletes old job dirs and temp files, keeps new and marked ones, and never follows a planted link', async () => {
    const result = await cli(['cleanup', '--data-dir', dataDir, '--older-than', '7d']);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toContain('removed 3, failed 0');
    await expect(lstat(paths.oldJob!)).rejects.toThrow();
    await expect(lstat(paths.oldTemp!)).rejects.toThrow();
    await expect(lstat(paths.lure!)).rejects.toThrow(); // the link itself, not what it pointed to
    await expect(lstat(paths.newJob!)).resolves.toBeTruthy();
    await expect(lstat(paths.keptJob!)).resolves.toBeTruthy();
    expect(await readFile(path.join(paths.bobOld!, 'data.txt'), 'utf8')).toBe('bobOld');
    expect(await readlink(path.join(root, bob.name, 'tmp'))).toBe(path.join(root, alice.name, 'tmp'));
  });

  it('refuses a malformed --older-than with a clear message', async () => {
    const result = await cli(['cleanup', '--data-dir', dataDir, '--older-than', 'soon']);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/STEWARD_BAD_REQUEST: --older-than/);
  });
});

describe('daily agent log', () => {
  it('writes to a dated file behind a steward.log link and deletes files past the retention', async () => {
    const dir = await tempDir('dailylog');
    const log = new DailyLogFile(dir, 'steward', 90);
    log.write('{"msg":"one"}\n');
    const today = new Date().toISOString().slice(0, 10);
    const link = await until('the steward.log link', () =>
      readlink(path.join(dir, 'steward.log')).catch(() => undefined),
    );
    expect(link).toBe(`steward-${today}.log`);
    const old = new Date(Date.now() - 100 * DAY).toISOString().slice(0, 10);
    const recent = new Date(Date.now() - 10 * DAY).toISOString().slice(0, 10);
    await writeFile(path.join(dir, `steward-${old}.log`), 'old\n');
    await writeFile(path.join(dir, `steward-${recent}.log`), 'recent\n');
    await writeFile(path.join(dir, 'other-2000-01-01.log'), 'not ours\n');
    expect(await log.prune()).toBe(1);
    expect((await readdir(dir)).sort()).toEqual(
      [`steward-${recent}.log`, `steward-${today}.log`, 'steward.log', 'other-2000-01-01.log'].sort(),
    );
    log.end();
    expect(await readFile(path.join(dir, 'steward.log'), 'utf8')).toContain('"one"');
    await rm(dir, { recursive: true });
  });
});
