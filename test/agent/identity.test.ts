import { lstat, mkdir, readlink, rm, stat, symlink, chown } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ensureOwnedDir,
  prepareUserDirs,
  prepareWorkspaceRoot,
  resolveAccount,
  type IdentityPolicy,
  type OsAccount,
} from '../../src/agent/index.js';
import { compileAgentConfig, compileIdentityPolicy } from '../../src/config/index.js';
import { StewardError } from '../../src/protocol/index.js';
import { OsUsers, type TestUser } from '../support/os-users.js';
import { isRoot, run, tempDir } from '../support/steward.js';

const policy: IdentityPolicy = {
  ...compileIdentityPolicy({}),
  userMap: { Alice: 'root', svc: 'nobody', dots: '../etc', semi: 'a;touch x' },
};

async function refusal(user: string, with_: IdentityPolicy = policy): Promise<StewardError> {
  try {
    await resolveAccount(user, with_, 'exec-test');
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
    ['dots', 'STEWARD_USER_NAME_INVALID'],
    ['a;touch x', 'STEWARD_USER_NAME_INVALID'],
    ['semi', 'STEWARD_USER_NAME_INVALID'],
    ['with space', 'STEWARD_USER_NAME_INVALID'],
    ['a/b', 'STEWARD_USER_NAME_INVALID'],
    ['$(id)', 'STEWARD_USER_NAME_INVALID'],
    ['12345', 'STEWARD_USER_NAME_INVALID'],
    ['x'.repeat(40), 'STEWARD_USER_NAME_INVALID'],
    ['root', 'STEWARD_USER_BANNED'],
    ['Alice', 'STEWARD_USER_BANNED'],
    ['svc', 'STEWARD_USER_BANNED'],
    ['daemon', 'STEWARD_USER_BANNED'],
    ['nosuchuser_zz9', 'STEWARD_USER_UNKNOWN'],
  ])('refuses server user %j with %s', async (user, code) => {
    const error = await refusal(user);
    expect(error.code).toBe(code);
    expect(error.message.length).toBeGreaterThan(10);
  });

  it('refuses an account whose uid is below minUid, naming uid, limit and agent', async () => {
    // `games` has a system uid on Debian; with an empty ban list only minUid stands in its way.
    const open = { ...compileIdentityPolicy({ bannedUsers: [] }), userMap: {} };
    const error = await refusal('games', open);
    expect(error.code).toBe('STEWARD_USER_UID_TOO_LOW');
    expect(error.message).toMatch(/OS account 'games' has uid \d+ < minUid 1000 on agent exec-test/);
    const allowed = {
      ...compileIdentityPolicy({ bannedUsers: [], allowedSystemUsers: ['games'] }),
      userMap: {},
    };
    await expect(resolveAccount('games', allowed, 'exec-test')).resolves.toMatchObject({ name: 'games' });
  });

  it('refuses root even with an empty ban list and refuses a pattern that would let "0day" through only by the floor', async () => {
    const open = { ...compileIdentityPolicy({ bannedUsers: [], nameRegex: '[a-z0-9_]+' }), userMap: {} };
    expect((await refusal('root', open)).code).toBe('STEWARD_USER_BANNED');
    expect((await refusal('0day', open)).code).toBe('STEWARD_USER_NAME_INVALID');
  });

  it('applies a configured name pattern on top of the floor', async () => {
    const strict = { ...compileIdentityPolicy({ nameRegex: 'u[0-9]+' }), userMap: {} };
    const error = await refusal('games', strict);
    expect(error.code).toBe('STEWARD_USER_NAME_INVALID');
    expect(error.message).toContain('identity.nameRegex');
  });

  it.each([
    [{ nameRegex: '([a-z' }, /identity.nameRegex: not a valid regular expression/],
    [{ minUid: 0 }, /identity.minUid/],
    [{ allowedSystemUsers: ['root'] }, /root can never run jobs/],
    [{ allowedGroups: [] }, /would refuse everyone/],
    [{ bannedUser: ['x'] }, /identity: Unrecognized key/],
  ])('refuses the identity config %j at start with a message naming the field', (identity, message) => {
    let thrown: unknown;
    try {
      compileAgentConfig({ identity }, { dataDir: '/tmp' });
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(StewardError);
    expect((thrown as StewardError).code).toBe('STEWARD_CONFIG_INVALID');
    expect((thrown as StewardError).message).toMatch(message);
  });
});

describe.runIf(isRoot)('identity policy with real accounts', () => {
  const users = new OsUsers();
  afterAll(() => users.cleanup());

  it('refuses a user outside allowedGroups and accepts one inside, through NSS group lookups', async () => {
    const group = await users.group('allow');
    const inside = await users.user('gin', { groups: [group], createHome: false });
    const outside = await users.user('gout', { createHome: false });
    const restricted = { ...compileIdentityPolicy({ allowedGroups: [group] }), userMap: {} };
    await expect(resolveAccount(inside.name, restricted, 'exec-test')).resolves.toMatchObject({
      uid: inside.uid,
    });
    const error = await refusal(outside.name, restricted);
    expect(error.code).toBe('STEWARD_USER_GROUP_NOT_ALLOWED');
    expect(error.message).toContain(`none of identity.allowedGroups (${group})`);
  });

  it('refuses a system account created below minUid', async () => {
    const system = await users.user('sys', { system: true, createHome: false });
    expect(system.uid).toBeLessThan(1000);
    const error = await refusal(system.name, policy);
    expect(error.code).toBe('STEWARD_USER_UID_TOO_LOW');
    expect(error.message).toContain(`has uid ${system.uid} < minUid 1000`);
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
