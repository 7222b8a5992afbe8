import { lstat, mkdir, readlink, rm, stat, symlink, chown } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  defaultBannedUsers,
  ensureOwnedDir,
  prepareUserDirs,
  prepareWorkspaceRoot,
  resolveAccount,
  type IdentityPolicy,
  type OsAccount,
} from '../../src/agent/index.js';
import { StewardError } from '../../src/protocol/index.js';
import { OsUsers, type TestUser } from '../support/os-users.js';
import { isRoot, run, tempDir } from '../support/steward.js';

const policy: IdentityPolicy = {
  userMap: { Alice: 'root', svc: 'nobody' },
  minUid: 1000,
  bannedUsers: defaultBannedUsers,
};

async function refusal(user: string): Promise<StewardError> {
  try {
    await resolveAccount(user, policy, 'exec-test');
  } catch (error) {
    if (error instanceof StewardError) return error;
    throw error;
  }
  throw new Error(`${user} was not refused`);
}

describe('identity policy', () => {
  it.each([
    ['0day', 'STEWARD_USER_NAME_INVALID'],
    ['#-1', 'STEWARD_USER_NAME_INVALID'],
    ['../etc', 'STEWARD_USER_NAME_INVALID'],
    ['a;touch x', 'STEWARD_USER_NAME_INVALID'],
    ['with space', 'STEWARD_USER_NAME_INVALID'],
    ['x'.repeat(40), 'STEWARD_USER_NAME_INVALID'],
    ['root', 'STEWARD_USER_REFUSED'],
    ['Alice', 'STEWARD_USER_REFUSED'],
    ['svc', 'STEWARD_USER_REFUSED'],
    ['nosuchuser_zz9', 'STEWARD_USER_UNKNOWN'],
  ])('refuses server user %j with %s', async (user, code) => {
    const error = await refusal(user);
    expect(error.code).toBe(code);
    expect(error.message.length).toBeGreaterThan(10);
  });

  it('refuses an account whose uid is below minUid, naming uid, limit and agent', async () => {
    // `games` has a system uid on Debian and is not in the banned list.
    const error = await refusal('games');
    expect(error.code).toBe('STEWARD_USER_REFUSED');
    expect(error.message).toMatch(/uid \d+ < minUid 1000 on agent exec-test/);
  });
});

describe.runIf(isRoot)('workspaces as root', () => {
  const users = new OsUsers();
  let root: string;
  let alice: TestUser;
  let bob: TestUser;
  const account = (user: TestUser): OsAccount => ({
    name: user.name,
    uid: user.uid,
    gid: user.gid,
    home: `/home/${user.name}`,
    shell: '/bin/bash',
  });

  beforeAll(async () => {
    root = path.join(await tempDir('ws'), 'workspaces');
    alice = await users.user('wa');
    bob = await users.user('wb');
    await prepareWorkspaceRoot(root, true);
  });
  afterAll(async () => {
    await users.cleanup();
    await rm(path.dirname(root), { recursive: true, force: true });
  });

  it('creates user-owned 0700 workspace and temp directories under a root-owned root', async () => {
    const dirs = await prepareUserDirs(root, account(alice), true);
    for (const dir of [dirs.root, dirs.workspaceDir, dirs.tempDir]) {
      const info = await stat(dir);
      expect(info.uid).toBe(alice.uid);
      expect(info.mode & 0o7777).toBe(0o700);
    }
    expect((await stat(root)).uid).toBe(0);
  });

  it("refuses a symlink planted at a user's workspace path and changes nothing it points to", async () => {
    const target = await tempDir('target');
    const before = await stat(target);
    await symlink(target, path.join(root, bob.name));
    await expect(prepareUserDirs(root, account(bob), true)).rejects.toMatchObject({
      code: 'STEWARD_WORKSPACE_UNSAFE',
    });
    const after = await stat(target);
    expect(after.uid).toBe(before.uid);
    expect(after.mode).toBe(before.mode);
    expect(await readlink(path.join(root, bob.name))).toBe(target);
    await rm(path.join(root, bob.name));
    await rm(target, { recursive: true });
  });

  it('refuses a pre-existing directory owned by someone else instead of taking it over', async () => {
    const dir = path.join(root, 'foreign');
    await mkdir(dir, { mode: 0o700 });
    await chown(dir, bob.uid, bob.gid);
    await expect(ensureOwnedDir(dir, account(alice), 0o700, true)).rejects.toMatchObject({
      code: 'STEWARD_WORKSPACE_UNSAFE',
    });
    expect((await lstat(dir)).uid).toBe(bob.uid);
  });

  it('refuses a workspace root that other users can write to', async () => {
    const open = path.join(await tempDir('open'), 'ws');
    await mkdir(open, { mode: 0o777 });
    await run('chmod', ['0777', open]);
    await expect(prepareWorkspaceRoot(open, true)).rejects.toMatchObject({
      code: 'STEWARD_WORKSPACE_UNSAFE',
    });
  });
});
