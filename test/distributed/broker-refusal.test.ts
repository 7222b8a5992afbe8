/**
 * A broker that refuses a daemon's credentials or vhost gets one line and a non-zero exit, not a silent
 * retry loop: at start (`steward server`, `steward agent`) and when the refusal comes on a reconnect (the
 * password changed while the server ran). Real RabbitMQ, a vhost and broker user of this test.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { Daemon } from '../support/distributed.js';
import { closeVhostConnections, createVhost, deleteVhost, rabbitmqctl } from '../support/rabbitmq.js';
import { freePort, tempDir } from '../support/steward.js';

let root: string;
let vhost: string;
let emptyVhost: string;
const brokerUser = `steward-refusal-${randomBytes(3).toString('hex')}`;
const brokerPassword = randomBytes(12).toString('hex');
const daemons: Daemon[] = [];
const extraVhosts: string[] = [];

async function file(name: string, content: string): Promise<string> {
  const target = path.join(root, name);
  await writeFile(target, content, { mode: 0o600 });
  return target;
}

function bus(passwordFile: string, on = vhost): Record<string, unknown> {
  return { kind: 'amqp', urls: ['amqp://127.0.0.1:5672'], vhost: on, user: brokerUser, passwordFile };
}

/** Starts `steward ARGS` and waits for it to exit; returns its status and stderr. */
async function exitOf(daemon: Daemon, timeoutMs = 60_000): Promise<{ code: number | null; stderr: string }> {
  let stderr = '';
  daemon.child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const code = await new Promise<number | null>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`still running after ${timeoutMs} ms:\n${daemon.output}`)),
      timeoutMs,
    );
    daemon.child.once('exit', (status) => {
      clearTimeout(timer);
      resolve(status);
    });
  });
  return { code, stderr };
}

function start(args: string[]): Daemon {
  const daemon = Daemon.start(args, { STEWARD_ADMIN_PASSWORD: 'admin-password-for-tests' });
  daemons.push(daemon);
  return daemon;
}

async function serverArgs(name: string, passwordFile: string, on = vhost): Promise<string[]> {
  const config = await file(`${name}.yaml`, stringify({ server: { bus: bus(passwordFile, on) } }));
  return [
    'server',
    '--config',
    config,
    '--port',
    String(await freePort()),
    '--data-dir',
    path.join(root, name),
  ];
}

beforeAll(async () => {
  root = await tempDir('refusal');
  vhost = await createVhost('refusal');
  emptyVhost = await createVhost('refusal-noperm');
  await rabbitmqctl('add_user', brokerUser, brokerPassword);
  await rabbitmqctl('set_permissions', '-p', vhost, brokerUser, '.*', '.*', '.*');
}, 60_000);

afterAll(async () => {
  for (const daemon of daemons) await daemon.stop('SIGKILL');
  await rabbitmqctl('delete_user', brokerUser).catch(() => '');
  for (const name of [vhost, emptyVhost, ...extraVhosts]) if (name) await deleteVhost(name);
  if (root) await rm(root, { recursive: true, force: true });
});

describe('a broker that refuses access', () => {
  it('stops steward server at start with one line when the password is wrong', async () => {
    const wrong = await file('wrong-password', 'not-the-password\n');
    const { code, stderr } = await exitOf(start(await serverArgs('server-wrong', wrong)));
    expect(code).toBe(1);
    const lines = stderr.trim().split('\n');
    expect(lines, stderr).toHaveLength(1);
    expect(lines[0]).toMatch(
      /^steward: STEWARD_BROKER_ACCESS_REFUSED: the broker at amqp:\/\/127\.0\.0\.1:5672 refused the login/,
    );
    expect(stderr).not.toContain('not-the-password');
  });

  it('stops steward agent at start with one line when the password is wrong', async () => {
    const wrong = await file('agent-wrong-password', 'not-the-password\n');
    const { publicKey } = generateKeyPairSync('ed25519');
    const key = await file('offer-signing.pub', publicKey.export({ type: 'spki', format: 'pem' }).toString());
    const config = await file(
      'agent.yaml',
      stringify({
        agent: {
          id: `refusal-${randomBytes(3).toString('hex')}`,
          bus: bus(wrong),
          serverPublicKeyFile: key,
          workspaceRoot: path.join(root, 'agent', 'workspaces'),
        },
      }),
    );
    const { code, stderr } = await exitOf(
      start(['agent', '--config', config, '--data-dir', path.join(root, 'agent')]),
    );
    expect(code).toBe(1);
    const lines = stderr.trim().split('\n');
    expect(lines, stderr).toHaveLength(1);
    expect(lines[0]).toMatch(/^steward: STEWARD_BROKER_ACCESS_REFUSED: .*refused the login/);
  });

  it('stops steward agent with one line when its permissions refuse the default exchange', async () => {
    // The regex the old admin guide gave: every Steward name, but not amq.default, which publishes go through.
    const narrowVhost = await createVhost('refusal-narrow');
    extraVhosts.push(narrowVhost);
    await rabbitmqctl(
      'set_permissions',
      '-p',
      narrowVhost,
      brokerUser,
      '^steward\\.',
      '^steward\\.',
      '^steward\\.',
    );
    const right = await file('narrow-password', `${brokerPassword}\n`);
    const { publicKey } = generateKeyPairSync('ed25519');
    const key = await file('narrow.pub', publicKey.export({ type: 'spki', format: 'pem' }).toString());
    const config = await file(
      'agent-narrow.yaml',
      stringify({
        agent: {
          id: `refusal-${randomBytes(3).toString('hex')}`,
          bus: bus(right, narrowVhost),
          serverPublicKeyFile: key,
          workspaceRoot: path.join(root, 'agent-narrow', 'workspaces'),
          heartbeatInterval: '1s',
        },
      }),
    );
    const { code, stderr } = await exitOf(
      start(['agent', '--config', config, '--data-dir', path.join(root, 'agent-narrow')]),
    );
    expect(code).toBe(1);
    const lines = stderr.trim().split('\n');
    expect(lines, stderr).toHaveLength(1);
    expect(lines[0]).toMatch(/^steward: STEWARD_BROKER_ACCESS_REFUSED: .*access to exchange 'amq\.default'/);
  });

  it('names the vhost when the user has no permissions there', async () => {
    const right = await file('right-password', `${brokerPassword}\n`);
    const { code, stderr } = await exitOf(start(await serverArgs('server-noperm', right, emptyVhost)));
    expect(code).toBe(1);
    expect(stderr.trim().split('\n'), stderr).toHaveLength(1);
    expect(stderr).toMatch(/STEWARD_BROKER_ACCESS_REFUSED: .*refused access to the vhost/);
  });

  it('stops a running server with one line when a reconnect is refused', async () => {
    const password = await file('changing-password', `${brokerPassword}\n`);
    const dataDir = path.join(root, 'server-running');
    const since = Date.now();
    const daemon = start(await serverArgs('server-running', password));
    await daemon.waitUntilUp(dataDir, since);
    const exited = exitOf(daemon);
    await rabbitmqctl('change_password', brokerUser, randomBytes(12).toString('hex'));
    await closeVhostConnections(vhost);
    const { code, stderr } = await exited;
    expect(code).toBe(1);
    expect(stderr.trim().split('\n'), stderr).toHaveLength(1);
    expect(stderr).toMatch(/^steward: STEWARD_BROKER_ACCESS_REFUSED: .*refused the login/);
  }, 90_000);
});
