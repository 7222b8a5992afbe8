/**
 * Without the acl package a user's workspace cannot be made private. That used to fail a user's first job
 * (STEWARD_WORKSPACE_UNSAFE) and let the second run, without the private ACL: the first had left the
 * directories behind, and an existing directory is not given an ACL again. Now it is the same answer every
 * time: the half-made directory is removed, every job fails with STEWARD_ACL_TOOLS_MISSING, and once the
 * tools are back the next job gets a private workspace. `steward up` refuses to start without the tools.
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

describe.runIf(isRoot)('workspaces without the ACL tools', () => {
  it('refuses every preparation of a new user workspace alike, leaving nothing behind', async () => {
    const workspaces = path.join(root, 'direct-workspaces');
    await prepareWorkspaceRoot(workspaces, true);
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
    const { stdout } = await execFileAsync('getfacl', ['-p', dirs.workspaceDir]);
    expect(stdout).toContain('default:other::---');
  });

  it("fails a user's first and second job alike while the tools are missing, and runs the next once they are back", async () => {
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
      for (const attempt of ['first', 'second']) {
        const result = await user.run(['run', 'whoami', '--wait', '--json']);
        const job = JSON.parse(result.stdout) as {
          state: string;
          error: { code: string; message: string } | null;
        };
        expect(job.state, `${attempt} job: ${result.stdout}`).toBe('failed');
        expect(job.error?.code, attempt).toBe('STEWARD_ACL_TOOLS_MISSING');
        expect(job.error?.message, attempt).toMatch(/setfacl is not installed/);
      }
      await restoreAclTools();
      const result = await user.run(['run', 'whoami', '--wait', '--json']);
      expect((JSON.parse(result.stdout) as { state: string }).state, result.stdout).toBe('succeeded');
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
