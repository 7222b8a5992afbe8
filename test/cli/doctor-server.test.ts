/**
 * `steward doctor` on a server machine (a `server` section with a RabbitMQ bus): the store and its
 * migrations, the store files' and the signing key's modes, the public URL, LDAP, the brokers (its own and
 * those of the clusters attached in its store), and the Dask check on a `steward up` machine. Real parts: a
 * SQLite store made by the real store code, PostgreSQL (a closed port for the unreachable case), a private
 * slapd, the machine's RabbitMQ.
 */
import { execFile } from 'node:child_process';
import { chmod, mkdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { CheckReport } from '../../src/protocol/index.js';
import { openStore } from '../../src/store/index.js';
import { createVhost, deleteVhost } from '../support/rabbitmq.js';
import { SERVICE_DN, SERVICE_PASSWORD, PEOPLE_DN, Slapd } from '../support/slapd.js';
import { CliUser, freePort, tempDir } from '../support/steward.js';

let root: string;
let cli: CliUser;
let vhost: string;
let slapd: Slapd;

async function serverConfig(name: string, server: Record<string, unknown>): Promise<string> {
  const file = path.join(root, `${name}.yaml`);
  await writeFile(
    file,
    stringify({
      server: {
        dataDir: path.join(root, name),
        bus: { kind: 'amqp', urls: ['amqp://guest:guest@127.0.0.1:5672'], vhost },
        ...server,
      },
    }),
  );
  return file;
}

async function doctor(config: string): Promise<{ code: number; report: CheckReport; role: string }> {
  const result = await cli.run(['doctor', '--json', '--config', config], { cwd: root });
  const parsed = JSON.parse(result.stdout) as { role?: unknown };
  return { code: result.code, report: CheckReport.parse(parsed), role: String(parsed.role) };
}

function check(report: CheckReport, id: string): CheckReport['checks'][number] {
  const found = report.checks.find((item) => item.id === id);
  if (!found) throw new Error(`no check ${id}: ${JSON.stringify(report.checks.map((c) => c.id))}`);
  return found;
}

beforeAll(async () => {
  root = await tempDir('doctor-server');
  cli = await CliUser.create('doctor-server', 'http://127.0.0.1:1');
  vhost = await createVhost('doctor-server');
  slapd = await Slapd.start({ tag: 'dr', homeRoot: path.join(os.tmpdir(), 'steward-ldap-homes') });
}, 120_000);

afterAll(async () => {
  await slapd?.stop();
  if (vhost) await deleteVhost(vhost);
  await cli?.cleanup();
  if (root) await rm(root, { recursive: true, force: true });
});

describe('steward doctor on a server machine', () => {
  it('passes a migrated private SQLite store, a reachable broker and a working LDAP bind', async () => {
    const dataDir = path.join(root, 'healthy');
    await mkdir(dataDir, { mode: 0o700 });
    const store = await openStore({ kind: 'sqlite', path: path.join(dataDir, 'steward.db') });
    await store.close();
    const config = await serverConfig('healthy', {
      ldap: {
        url: slapd.url,
        startTls: true,
        caFile: slapd.caFile,
        bindDn: SERVICE_DN,
        bindPassword: SERVICE_PASSWORD,
        userBase: PEOPLE_DN,
        timeout: '2s',
      },
    });
    const { code, report, role } = await doctor(config);
    expect(role).toBe('server');
    for (const id of [
      'server.store',
      'server.store-files',
      'server.signing-key',
      'server.ldap',
      'broker.default',
    ])
      expect(check(report, id).status, `${id}: ${check(report, id).detail}`).toBe('pass');
    expect(check(report, 'server.store').detail).toMatch(/none pending/);
    // Not set: a warning only, so the machine passes.
    expect(check(report, 'server.public-url')).toMatchObject({
      status: 'warn',
      code: 'STEWARD_PUBLIC_URL_INVALID',
    });
    expect(code).toBe(0);
  });

  it('names store files and a signing key that others can read', async () => {
    const dataDir = path.join(root, 'readable');
    await mkdir(path.join(dataDir, 'keys'), { recursive: true, mode: 0o700 });
    const file = path.join(dataDir, 'steward.db');
    const store = await openStore({ kind: 'sqlite', path: file });
    await store.close();
    await chmod(file, 0o644);
    await writeFile(path.join(dataDir, 'keys', 'offer-signing.pem'), 'not really a key\n', { mode: 0o644 });
    await chmod(path.join(dataDir, 'keys', 'offer-signing.pem'), 0o644);
    const { code, report } = await doctor(await serverConfig('readable', {}));
    expect(check(report, 'server.store-files')).toMatchObject({
      status: 'fail',
      code: 'STEWARD_STORE_READABLE',
    });
    expect(check(report, 'server.store-files').detail).toContain(`${file} (0644)`);
    expect(check(report, 'server.signing-key')).toMatchObject({
      status: 'fail',
      code: 'STEWARD_STORE_READABLE',
    });
    expect(code).toBe(1);
  });

  it('names an unreachable PostgreSQL store and a refused LDAP service account', async () => {
    const port = await freePort();
    const config = await serverConfig('down', {
      store: { kind: 'postgres', url: `postgres://steward@127.0.0.1:${port}/steward` },
      ldap: {
        url: slapd.url,
        startTls: true,
        caFile: slapd.caFile,
        bindDn: SERVICE_DN,
        bindPassword: 'wrong-password',
        userBase: PEOPLE_DN,
        timeout: '2s',
      },
    });
    const { code, report } = await doctor(config);
    expect(check(report, 'server.store')).toMatchObject({ status: 'fail', code: 'STEWARD_UNAVAILABLE' });
    expect(check(report, 'server.store').detail).toContain(`127.0.0.1:${port}`);
    expect(check(report, 'server.ldap')).toMatchObject({
      status: 'fail',
      code: 'STEWARD_DIRECTORY_UNAVAILABLE',
    });
    expect(check(report, 'server.ldap').detail).toMatch(/refused the service account/);
    expect(code).toBe(1);
  });

  it('checks the brokers of the clusters attached in the store and fails naming an unreachable one', async () => {
    const dataDir = path.join(root, 'clusters');
    await mkdir(dataDir, { mode: 0o700 });
    const passwordFile = path.join(root, 'clusters-password');
    await writeFile(passwordFile, 'guest\n', { mode: 0o600 });
    const closed = await freePort();
    const store = await openStore({ kind: 'sqlite', path: path.join(dataDir, 'steward.db') });
    const files = { passwordFile, caFile: null, certFile: null, keyFile: null };
    await store.clusters.create({ name: 'near', brokerUrl: 'amqp://guest@127.0.0.1:5672', vhost, ...files });
    await store.clusters.create({
      name: 'gone',
      brokerUrl: `amqp://guest@127.0.0.1:${closed}`,
      vhost,
      ...files,
    });
    await store.clusters.create({
      name: 'idle',
      brokerUrl: `amqp://guest@127.0.0.1:${closed}`,
      vhost,
      ...files,
    });
    for (const name of ['near', 'gone']) await store.clusters.setState(name, 'attached', ['detached']);
    await store.close();
    const { code, report } = await doctor(await serverConfig('clusters', {}));
    expect(check(report, 'broker.default').status).toBe('pass');
    expect(check(report, 'broker.near').status, check(report, 'broker.near').detail).toBe('pass');
    expect(check(report, 'broker.gone')).toMatchObject({
      status: 'fail',
      code: 'STEWARD_BROKER_UNREACHABLE',
    });
    expect(check(report, 'broker.gone').title).toContain('gone');
    expect(check(report, 'broker.gone').detail).toContain(`127.0.0.1:${closed}`);
    // A detached cluster's broker is not this server's concern.
    expect(report.checks.map((item) => item.id)).not.toContain('broker.idle');
    expect(code).toBe(1);
  });

  it('reports whether Dask is usable for dask: steps as a warning, never a failure', async () => {
    const config = path.join(root, 'up.yaml');
    await writeFile(config, stringify({ server: { dataDir: path.join(root, 'up') }, agent: {} }));
    const { report, role } = await doctor(config);
    expect(role).toBe('up');
    const dask = check(report, 'agent.dask');
    // The same probe, run here: the check says what this machine's python3 really has.
    const importable = await new Promise<boolean>((resolve) =>
      execFile('/usr/bin/python3', ['-c', 'import distributed, pandas'], (error) => resolve(!error)),
    );
    if (importable) {
      expect(dask.status, dask.detail).toBe('pass');
      expect(dask.detail).toMatch(/distributed \S+, pandas \S+/);
    } else {
      expect(dask).toMatchObject({ status: 'warn', code: 'STEWARD_DASK_START_FAILED' });
      expect(dask.fix).toMatch(/python3-distributed/);
    }
    expect(dask.fatal ?? false).toBe(false);
  });

  it('names a store with migrations still to apply as a warning', async () => {
    const dataDir = path.join(root, 'old');
    await mkdir(dataDir, { mode: 0o700 });
    const store = await openStore(
      { kind: 'sqlite', path: path.join(dataDir, 'steward.db') },
      { migrateUntil: '0007_agent_draining' },
    );
    await store.close();
    const { report } = await doctor(await serverConfig('old', {}));
    expect(check(report, 'server.store')).toMatchObject({
      status: 'warn',
      code: 'STEWARD_MIGRATIONS_PENDING',
    });
    expect(check(report, 'server.store').detail).toMatch(/0008_spaces/);
  });
});
