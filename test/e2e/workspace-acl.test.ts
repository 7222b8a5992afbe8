/**
 * Users' workspaces are private (an ACL: owner only, and a default ACL so that what is made inside stays so).
 * The agent gives its workspace root the private default ACL at start, and a new user's directories inherit
 * it from the kernel as they are made: no `setfacl` per user, and never a moment without the ACL — even if
 * the acl package is removed once the agent runs. Where the ACL cannot be inherited (a root the process did
 * not prepare, a user root made before), the directories get it from `setfacl`; without the tools that used
 * to fail a user's first job (STEWARD_WORKSPACE_UNSAFE) and let the second run without the private ACL (the
 * first had left the directories behind, and an existing directory is not given an ACL again). Now it is the
 * same answer every time: the half-made directories are removed, STEWARD_ACL_TOOLS_MISSING, and once the
 * tools are back the directories are private. `steward up` refuses to start without the tools.
 *
 * The tools are hidden the way a machine without the package lacks them: the daemon's PATH has every tool
 * of /usr/bin but setfacl and getfacl, which sit in a directory of their own that the test empties.
 */
import { execFile, spawn } from 'node:child_process';
import { mkdir, readdir, rm, stat, symlink, unlink } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { prepareUserDirs, prepareWorkspaceRoot, lookupAccount } from '../../src/agent/index.js';
import { StewardError } from '../../src/protocol/index.js';
import { OsUsers, type TestUser } from '../support/os-users.js';
import {
  CliUser,
  StewardInstance,
  freePort,
  isRoot,
  repoRoot,
  stewardBin,
  tempDir,
} from '../support/steward.js';

const execFileAsync = promisify(execFile);

let root: string;
let toolsDir: string;
let aclDir: string;
let daemonPath: string;
const osUsers = new OsUsers();
let carol: TestUser;

async function hideAclTools(): Promise<void> {
  for (const tool of ['setfacl', 'getfacl']) await unlink(path.join(aclDir, tool)).catch(() => {});
}

async function restoreAclTools(): Promise<void> {
  for (const tool of ['setfacl', 'getfacl'])
    await symlink(`/usr/bin/${tool}`, path.join(aclDir, tool)).catch(() => {});
}

async function exists(file: string): Promise<boolean> {
  return stat(file).then(
    () => true,
    () => false,
  );
}

beforeAll(async () => {
  root = await tempDir('acl');
  toolsDir = path.join(root, 'tools');
  aclDir = path.join(root, 'acl');
  await mkdir(toolsDir);
  await mkdir(aclDir);
  for (const entry of await readdir('/usr/bin')) {
    if (entry === 'setfacl' || entry === 'getfacl') continue;
    await symlink(path.join('/usr/bin', entry), path.join(toolsDir, entry));
  }
  await restoreAclTools();
  daemonPath = [aclDir, toolsDir, '/usr/sbin'].join(':');
  if (isRoot) carol = await osUsers.user('acl');
}, 120_000);

afterAll(async () => {
  await osUsers.cleanup();
  if (root) await rm(root, { recursive: true, force: true });
});

/** The ACL of a path as getfacl prints it (the test's own PATH has the tools). */
async function aclOf(target: string): Promise<string> {
  return (await execFileAsync('/usr/bin/getfacl', ['-p', target])).stdout;
}

function expectPrivate(acl: string): void {
  for (const entry of ['user::rwx', 'group::---', 'other::---'])
    expect(acl.split('\n'), acl).toContain(entry);
  for (const entry of ['default:user::rwx', 'default:group::---', 'default:other::---'])
    expect(acl.split('\n'), acl).toContain(entry);
}

describe.runIf(isRoot)('private workspaces, with and without the ACL tools', () => {
  it('inherits the private ACL in a prepared root, with or without the tools', async () => {
    const workspaces = path.join(root, 'prepared-workspaces');
    await prepareWorkspaceRoot(workspaces, true);
    expect(await aclOf(workspaces)).toContain('default:other::---');
    const account = (await lookupAccount(carol.name))!;
    const saved = process.env.PATH;
    process.env.PATH = [toolsDir, '/usr/sbin'].join(':');
    try {
      const dirs = await prepareUserDirs(workspaces, account, true, {});
      for (const dir of [dirs.workspaceDir, dirs.tempDir]) {
        expectPrivate(await aclOf(dir));
        const info = await stat(dir);
        expect([info.uid, info.mode & 0o777]).toEqual([account.uid, 0o700]);
      }
    } finally {
      process.env.PATH = saved;
    }
  });

  it('refuses every preparation of a workspace that must get its ACL from setfacl alike, leaving nothing behind', async () => {
    // Not prepared by this process: nothing is inherited, so setfacl must run.
    const workspaces = path.join(root, 'direct-workspaces');
    await mkdir(workspaces, { mode: 0o755 });
    const account = (await lookupAccount(carol.name))!;
    const saved = process.env.PATH;
    process.env.PATH = [toolsDir, '/usr/sbin'].join(':');
    try {
      for (const attempt of ['first', 'second']) {
        const error = await prepareUserDirs(workspaces, account, true, {}).then(
          () => undefined,
          (thrown: unknown) => thrown,
        );
        expect(error, `${attempt} attempt`).toBeInstanceOf(StewardError);
        expect((error as StewardError).code, attempt).toBe('STEWARD_ACL_TOOLS_MISSING');
        expect((error as StewardError).message).toMatch(/setfacl is not installed/);
        expect(await exists(path.join(workspaces, carol.name, 'work')), attempt).toBe(false);
        expect(await exists(path.join(workspaces, carol.name, 'tmp')), attempt).toBe(false);
      }
    } finally {
      process.env.PATH = saved;
    }
    const dirs = await prepareUserDirs(workspaces, account, true, {});
    expectPrivate(await aclOf(dirs.workspaceDir));
    expectPrivate(await aclOf(dirs.tempDir));
  });

  it("gives a new user's first job a private workspace after the tools are gone, as the agent prepared its root at start", async () => {
    const steward = await StewardInstance.start({ launcher: ['/usr/bin/env', `PATH=${daemonPath}`] });
    const admin = await CliUser.create('admin', steward.url);
    const user = await CliUser.create(carol.name, steward.url);
    try {
      await admin.login(steward.adminPassword);
      const added = await admin.run(['user', 'add', carol.name, '--password-stdin'], {
        input: 'carol-password',
      });
      expect(added.code, added.stderr).toBe(0);
      await user.login('carol-password');
      const pushed = await user.run(['workflow', 'push', path.join(repoRoot, 'examples/whoami.yaml')]);
      expect(pushed.code, pushed.stderr).toBe(0);
      await hideAclTools();
      const result = await user.run(['run', 'whoami', '--wait', '--json']);
      const job = JSON.parse(result.stdout) as { state: string };
      expect(job.state, result.stdout).toBe('succeeded');
      // The default workspace root: <data dir>/workspaces.
      const userRoot = path.join(steward.dataDir, 'workspaces', carol.name);
      expectPrivate(await aclOf(path.join(userRoot, 'work')));
      expectPrivate(await aclOf(path.join(userRoot, 'tmp')));
    } finally {
      await restoreAclTools();
      await steward.destroy();
      await admin.cleanup();
      await user.cleanup();
    }
  }, 180_000);

  it('makes steward up refuse to start with one line naming the missing tools', async () => {
    const dataDir = await tempDir('acl-up');
    const child = spawn(
      process.execPath,
      [stewardBin, 'up', '--port', String(await freePort()), '--data-dir', dataDir],
      { env: { ...process.env, PATH: [toolsDir, '/usr/sbin'].join(':') }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    await rm(dataDir, { recursive: true, force: true });
    expect(code).toBe(1);
    const lines = stderr.trim().split('\n');
    expect(lines, stderr).toHaveLength(1);
    expect(lines[0]).toMatch(
      /^steward: STEWARD_ACL_TOOLS_MISSING: agent\.acl-tools: setfacl and getfacl not found/,
    );
  }, 60_000);
});
