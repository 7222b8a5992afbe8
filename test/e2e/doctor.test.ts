/**
 * `steward doctor` on an agent machine, with each precondition broken in turn on a healthy baseline: the ACL
 * tools hidden from PATH, an unknown user, a world-writable workspace root, no broker, a wrong broker
 * password. Each case must name its failure (check id, code) in `--json` and exit 1. Real parts: the
 * machine's RabbitMQ (a vhost and user of this test), real OS users, the real CLI.
 */
import { execFile } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { chmod, chown, mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { CheckReport } from '../../src/protocol/index.js';
import { OsUsers, type TestUser } from '../support/os-users.js';
import { createVhost, deleteVhost, rabbitmqctl } from '../support/rabbitmq.js';
import { CliUser, freePort, isRoot, tempDir } from '../support/steward.js';

const run = promisify(execFile);

let root: string;
let cli: CliUser;
let vhost: string;
const brokerUser = `steward-doctor-${randomBytes(3).toString('hex')}`;
const brokerPassword = randomBytes(12).toString('hex');
const osUsers = new OsUsers();
let alice: TestUser;
let workspaces: string;
let keyFile: string;
let passwordFile: string;

interface DoctorRun {
  code: number;
  report: CheckReport & { role: string };
  stdout: string;
  stderr: string;
}

async function writeAgentConfig(name: string, agent: Record<string, unknown>): Promise<string> {
  const file = path.join(root, `${name}.yaml`);
  await writeFile(
    file,
    stringify({
      agent: {
        id: `doctor-${name}`,
        workspaceRoot: workspaces,
        serverPublicKeyFile: keyFile,
        bus: {
          kind: 'amqp',
          urls: ['amqp://127.0.0.1:5672'],
          vhost,
          user: brokerUser,
          passwordFile,
        },
        ...agent,
      },
    }),
  );
  return file;
}

async function doctor(args: string[], env: Record<string, string> = {}): Promise<DoctorRun> {
  const result = await cli.run(['doctor', '--json', ...args], { env, cwd: root });
  let report: DoctorRun['report'];
  try {
    const parsed = JSON.parse(result.stdout) as { role?: unknown };
    report = { ...CheckReport.parse(parsed), role: String(parsed.role) };
  } catch {
    throw new Error(`doctor printed no report (exit ${result.code}):\n${result.stdout}\n${result.stderr}`);
  }
  return { ...result, report };
}

function check(outcome: DoctorRun, id: string): CheckReport['checks'][number] {
  const found = outcome.report.checks.find((item) => item.id === id);
  if (!found) throw new Error(`no check ${id} in ${JSON.stringify(outcome.report.checks.map((c) => c.id))}`);
  return found;
}

/** The ids of the checks that failed, for messages. */
function failed(outcome: DoctorRun): string[] {
  return outcome.report.checks.filter((item) => item.status === 'fail').map((item) => item.id);
}

beforeAll(async () => {
  root = await tempDir('doctor');
  cli = await CliUser.create('doctor', 'http://127.0.0.1:1');
  workspaces = path.join(root, 'workspaces');
  await mkdir(workspaces, { mode: 0o755 });
  await chmod(workspaces, 0o755);
  keyFile = path.join(root, 'offer-signing.pub');
  const { publicKey } = generateKeyPairSync('ed25519');
  await writeFile(keyFile, publicKey.export({ type: 'spki', format: 'pem' }));
  passwordFile = path.join(root, 'broker-password');
  await writeFile(passwordFile, `${brokerPassword}\n`, { mode: 0o600 });
  vhost = await createVhost('doctor');
  await rabbitmqctl('add_user', brokerUser, brokerPassword);
  await rabbitmqctl('set_permissions', '-p', vhost, brokerUser, '.*', '.*', '.*');
  if (isRoot) alice = await osUsers.user('doc');
}, 120_000);

afterAll(async () => {
  await rabbitmqctl('delete_user', brokerUser).catch(() => '');
  if (vhost) await deleteVhost(vhost);
  await osUsers.cleanup();
  await cli?.cleanup();
  if (root) await rm(root, { recursive: true, force: true });
});

describe.runIf(isRoot)('steward doctor on an agent machine', () => {
  it('passes every check of a healthy agent machine and exits 0', async () => {
    const config = await writeAgentConfig('healthy', {});
    const outcome = await doctor(['--config', config, '--user', alice.name]);
    expect(outcome.report.role).toBe('agent');
    expect(failed(outcome), outcome.stdout).toEqual([]);
    expect(outcome.code).toBe(0);
    for (const id of [
      'agent.root',
      'agent.acl-tools',
      'agent.workspace-root',
      'agent.workspace-parents',
      'agent.user',
      'agent.python',
      'agent.duckdb',
      'broker.default',
      'agent.public-key',
    ])
      expect(check(outcome, id).status, `${id}: ${check(outcome, id).detail}`).toBe('pass');
    expect(check(outcome, 'agent.user').detail).toContain(`uid ${alice.uid}`);
    // No server URL configured: said as a warning, which keeps the exit status 0.
    expect(check(outcome, 'agent.server')).toMatchObject({
      status: 'warn',
      code: 'STEWARD_SERVER_UNREACHABLE',
    });
  });

  it('checks the server key given inline (as `cluster agent-config` prints it) and says Dask as a warning at most', async () => {
    const inline = generateKeyPairSync('ed25519')
      .publicKey.export({ type: 'spki', format: 'pem' })
      .toString();
    const config = await writeAgentConfig('inline-key', {
      serverPublicKeyFile: undefined,
      serverPublicKey: inline,
    });
    const outcome = await doctor(['--config', config]);
    expect(check(outcome, 'agent.public-key')).toMatchObject({ status: 'pass', fatal: true });
    expect(check(outcome, 'agent.public-key').detail).toBe('agent.serverPublicKey: Ed25519 public key');
    const dask = check(outcome, 'agent.dask');
    expect(['pass', 'warn'], dask.detail).toContain(dask.status);
    expect(dask.fatal).toBe(false);
    expect(dask.detail).toContain('/usr/bin/python3');
    expect(failed(outcome), outcome.stdout).toEqual([]);

    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 })
      .publicKey.export({ type: 'spki', format: 'pem' })
      .toString();
    const wrong = await writeAgentConfig('inline-rsa', {
      serverPublicKeyFile: undefined,
      serverPublicKey: rsa,
    });
    const refused = await doctor(['--config', wrong]);
    expect(check(refused, 'agent.public-key')).toMatchObject({
      status: 'fail',
      code: 'STEWARD_PUBLIC_KEY_MISSING',
    });
    expect(check(refused, 'agent.public-key').detail).toMatch(/rsa key, not Ed25519/);
    expect(refused.code).toBe(1);
  });

  it('names the missing ACL tools when setfacl and getfacl are not on PATH', async () => {
    // A PATH with what the other checks use (getent, python3) but not the acl package's tools.
    const bin = path.join(root, 'bin-without-acl');
    await mkdir(bin, { recursive: true });
    const python = (await run('python3', ['-c', 'import sys; print(sys.executable)'])).stdout.trim();
    const getent = (await run('which', ['getent'])).stdout.trim();
    await symlink(python, path.join(bin, 'python3')).catch(() => {});
    await symlink(getent, path.join(bin, 'getent')).catch(() => {});
    const config = await writeAgentConfig('no-acl', {});
    const outcome = await doctor(['--config', config], { PATH: bin });
    expect(check(outcome, 'agent.acl-tools')).toMatchObject({
      status: 'fail',
      code: 'STEWARD_ACL_TOOLS_MISSING',
      fatal: true,
    });
    expect(check(outcome, 'agent.acl-tools').detail).toContain('setfacl');
    expect(failed(outcome)).toEqual(['agent.acl-tools']);
    expect(outcome.code).toBe(1);
  });

  it('names an unknown user that NSS cannot resolve', async () => {
    const config = await writeAgentConfig('unknown-user', {});
    const missing = `stnouser${osUsers.tag}`;
    const outcome = await doctor(['--config', config, '--user', missing]);
    expect(check(outcome, 'agent.user')).toMatchObject({ status: 'fail', code: 'STEWARD_USER_UNKNOWN' });
    expect(check(outcome, 'agent.user').detail).toContain(missing);
    expect(failed(outcome)).toEqual(['agent.user']);
    expect(outcome.code).toBe(1);
  });

  it('names a world-writable workspace root', async () => {
    const open = path.join(root, 'open-workspaces');
    await mkdir(open, { recursive: true });
    await chmod(open, 0o777);
    const config = await writeAgentConfig('world-writable', { workspaceRoot: open });
    const outcome = await doctor(['--config', config]);
    expect(check(outcome, 'agent.workspace-root')).toMatchObject({
      status: 'fail',
      code: 'STEWARD_WORKSPACE_UNSAFE',
      fatal: true,
    });
    expect(check(outcome, 'agent.workspace-root').detail).toMatch(/writable by group or others \(mode 777\)/);
    expect(failed(outcome)).toEqual(['agent.workspace-root']);
    expect(outcome.code).toBe(1);
  });

  it('names a workspace root whose parent another user could replace, without making it fatal', async () => {
    const theirs = path.join(root, 'users-dir');
    await mkdir(theirs, { recursive: true });
    await chown(theirs, alice.uid, alice.gid);
    const nested = path.join(theirs, 'workspaces');
    await mkdir(nested, { recursive: true });
    await chmod(nested, 0o755);
    const config = await writeAgentConfig('unsafe-parent', { workspaceRoot: nested });
    const outcome = await doctor(['--config', config]);
    expect(check(outcome, 'agent.workspace-parents')).toMatchObject({
      status: 'fail',
      code: 'STEWARD_WORKSPACE_UNSAFE',
      fatal: false,
    });
    expect(check(outcome, 'agent.workspace-parents').detail).toContain(
      `${theirs} is owned by uid ${alice.uid}`,
    );
    expect(check(outcome, 'agent.workspace-root').status).toBe('pass');
    expect(outcome.code).toBe(1);
  });

  it('names an unreachable broker when nothing listens on its port', async () => {
    const closedPort = await freePort();
    const config = await writeAgentConfig('no-broker', {
      bus: { kind: 'amqp', urls: [`amqp://127.0.0.1:${closedPort}`], vhost, user: brokerUser, passwordFile },
    });
    const outcome = await doctor(['--config', config]);
    expect(check(outcome, 'broker.default')).toMatchObject({
      status: 'fail',
      code: 'STEWARD_BROKER_UNREACHABLE',
    });
    expect(check(outcome, 'broker.default').detail).toContain(`127.0.0.1:${closedPort}`);
    expect(failed(outcome)).toEqual(['broker.default']);
    expect(outcome.code).toBe(1);
  });

  it('names a broker that refuses the password, without printing it', async () => {
    const wrong = path.join(root, 'wrong-password');
    await writeFile(wrong, 'not-the-password\n', { mode: 0o600 });
    const config = await writeAgentConfig('wrong-password', {
      bus: { kind: 'amqp', urls: ['amqp://127.0.0.1:5672'], vhost, user: brokerUser, passwordFile: wrong },
    });
    const outcome = await doctor(['--config', config]);
    expect(check(outcome, 'broker.default')).toMatchObject({
      status: 'fail',
      code: 'STEWARD_BROKER_ACCESS_REFUSED',
    });
    expect(check(outcome, 'broker.default').detail).toMatch(/refused the login/);
    expect(outcome.stdout).not.toContain('not-the-password');
    expect(outcome.code).toBe(1);
  });

  it('prints a PASS/WARN/FAIL table with a fix on each failed line without --json', async () => {
    const config = await writeAgentConfig('table', {});
    const missing = `stnouser${osUsers.tag}`;
    const result = await cli.run(['doctor', '--config', config, '--user', missing], { cwd: root });
    expect(result.code).toBe(1);
    const line = result.stdout.split('\n').find((text) => text.includes('agent.user'));
    expect(line).toMatch(/^FAIL\s+agent\.user\s+.*no such user.*create the account/);
    expect(result.stdout).toMatch(/^PASS\s+broker\.default/m);
    expect(result.stdout).toMatch(/1 failed, 1 warned/);
  });
});
