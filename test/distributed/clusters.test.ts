/**
 * Clusters end to end, as an admin would do it with the CLI: `steward up` runs a local job; clusters `prod`
 * and `dev` (a RabbitMQ vhost each, a broker user of this test, two agents each started from `cluster
 * agent-config` output) are checked and attached, and jobs go only to their cluster's agents. Detaching prod
 * while a job runs there lets it finish and refuses new prod submits; after prod's agents stop and its vhost
 * is deleted the job's results still download. A restart keeps dev attached. Attach is refused, naming the
 * failed check, for a wrong password, a vhost without permissions, no permission on the default exchange,
 * no live agent, and an agent holding another server's key.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { chmod, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { CheckReport, ClusterInfo, Job } from '../../src/protocol/index.js';
import { Daemon } from '../support/distributed.js';
import { OsUsers } from '../support/os-users.js';
import { rabbitmqctl } from '../support/rabbitmq.js';
import { CliUser, StewardInstance, isRoot, tempDir } from '../support/steward.js';
import { until } from '../support/wait.js';

const tag = randomBytes(3).toString('hex');
const brokerUser = `steward-clusters-${tag}`;
const brokerPassword = randomBytes(12).toString('hex');
/** The documented permission regex: Steward's names and the default exchange its messages go through. */
const STEWARD_NAMES = '^(steward\\..*|amq\\.default)$';

const WORKFLOW = `name: where
params:
  secs:
    type: integer
    default: 0
steps:
  - id: work
    shell: |
      sleep "$secs"
      echo "ran as $(id -un)" > "$STEWARD_OUTPUT_DIR/where.txt"
outputs: [work]
`;

let scratch: string;
let steward: StewardInstance;
let admin: CliUser;
let alice: CliUser;
const osUsers = new OsUsers();
const vhosts: string[] = [];
const agents = new Map<string, Daemon>();
let passwordFile: string;

async function vhost(label: string, permissions: [string, string, string] | undefined): Promise<string> {
  const name = `steward-test-clusters-${label}-${tag}`;
  await rabbitmqctl('add_vhost', name);
  vhosts.push(name);
  if (permissions) await rabbitmqctl('set_permissions', '-p', name, brokerUser, ...permissions);
  return name;
}

async function cli(user: CliUser, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return user.run(args, { timeoutMs: 120_000 });
}

async function ok(user: CliUser, args: string[]): Promise<string> {
  const result = await cli(user, args);
  expect(result.code, `steward ${args.join(' ')}\n${result.stdout}\n${result.stderr}`).toBe(0);
  return result.stdout;
}

async function addCluster(name: string, vhostName: string, file = passwordFile): Promise<void> {
  await ok(admin, [
    'cluster',
    'add',
    name,
    '--broker',
    `amqp://${brokerUser}@127.0.0.1:5672`,
    '--vhost',
    vhostName,
    '--password-file',
    file,
  ]);
}

/** Starts an agent from the cluster's `agent-config` output, with `change` applied to its agent section. */
async function startAgent(
  cluster: string,
  name: string,
  change: (agent: Record<string, unknown>) => void = () => {},
): Promise<Daemon> {
  const printed = await ok(admin, ['cluster', 'agent-config', cluster]);
  const config = parse(printed) as { agent: Record<string, unknown> };
  expect(config.agent.serverPublicKey).toMatch(/BEGIN PUBLIC KEY/);
  expect(config.agent.serverUrl).toBe(steward.url);
  const id = `${name}-${tag}`;
  const dir = path.join(scratch, `agent-${name}`);
  Object.assign(config.agent, {
    id,
    workspaceRoot: path.join(dir, 'workspaces'),
    heartbeatInterval: '1s',
    slots: 2,
  });
  change(config.agent);
  const file = path.join(scratch, `agent-${name}.yaml`);
  await writeFile(file, stringify(config));
  const since = Date.now();
  const daemon = Daemon.start(['agent', '--config', file, '--data-dir', dir]);
  daemon.id = id;
  agents.set(name, daemon);
  await daemon.waitUntilUp(dir, since, 60_000);
  return daemon;
}

async function submit(args: string[]): Promise<Job> {
  return Job.parse(JSON.parse(await ok(alice, ['run', ...args, '--json'])));
}

async function settled(id: string): Promise<Job> {
  return until(
    `job ${id} to end`,
    async () => {
      const job = Job.parse(JSON.parse(await ok(alice, ['job', id, '--json'])));
      return ['succeeded', 'failed', 'canceled', 'expired', 'lost'].includes(job.state) && job;
    },
    120_000,
    250,
  );
}

async function clusterList(): Promise<ClusterInfo[]> {
  const { clusters } = JSON.parse(await ok(admin, ['cluster', 'list', '--json'])) as { clusters: unknown };
  return ClusterInfo.array().parse(clusters);
}

/** `cluster attach` refused: exit 1, the code on stderr, and the failed checks' ids in the printed table. */
async function attachRefused(name: string): Promise<string[]> {
  const result = await cli(admin, ['cluster', 'attach', name, '--json']);
  expect(result.code, `${result.stdout}\n${result.stderr}`).toBe(1);
  expect(result.stderr).toContain('STEWARD_CLUSTER_CHECK_FAILED');
  const report = CheckReport.parse(JSON.parse(result.stdout));
  const failed = report.checks.filter((check) => check.status === 'fail');
  for (const check of failed) {
    expect(check.code).toMatch(/^STEWARD_/);
    expect(check.fix).toBeTruthy();
    expect(result.stderr).toContain(check.id);
  }
  return failed.map((check) => check.id);
}

beforeAll(async () => {
  scratch = await tempDir('clusters');
  await rabbitmqctl('add_user', brokerUser, brokerPassword);
  passwordFile = path.join(scratch, 'broker-password');
  await writeFile(passwordFile, `${brokerPassword}\n`, { mode: 0o600 });
  steward = await StewardInstance.start({ dataDir: path.join(scratch, 'server') });
  admin = await CliUser.create('admin', steward.url);
  await admin.login(steward.adminPassword);
  let aliceName = 'alice';
  if (isRoot) aliceName = (await osUsers.user('cl')).name;
  const added = await admin.run(['user', 'add', aliceName, '--password-stdin'], {
    input: `${aliceName}-password`,
  });
  expect(added.code, added.stderr).toBe(0);
  alice = await CliUser.create(aliceName, steward.url);
  await alice.login(`${aliceName}-password`);
  const file = path.join(scratch, 'where.yaml');
  await writeFile(file, WORKFLOW);
  await ok(alice, ['workflow', 'push', file]);
  const devFile = path.join(scratch, 'where-dev.yaml');
  await writeFile(devFile, WORKFLOW.replace('name: where', 'name: where-dev\ncluster: dev'));
  await ok(alice, ['workflow', 'push', devFile]);
}, 120_000);

afterAll(async () => {
  for (const agent of agents.values()) await agent.stop();
  await steward?.destroy();
  for (const user of [admin, alice]) await user?.cleanup();
  await osUsers.cleanup();
  for (const name of vhosts) await rabbitmqctl('delete_vhost', name).catch(() => undefined);
  await rabbitmqctl('delete_user', brokerUser).catch(() => undefined);
  if (scratch) await rm(scratch, { recursive: true, force: true });
}, 120_000);

describe('clusters: attach, route, detach and keep the results', () => {
  it('runs a job on the built-in local cluster of steward up', async () => {
    const job = await settled((await submit(['where'])).id);
    expect(job.state).toBe('succeeded');
    expect(job.cluster).toBe('local');
    expect(job.agentId).toBe(steward.agentId);
  }, 120_000);

  it('attaches prod and dev, each with two agents from agent-config, and routes jobs only to their agents', async () => {
    const prod = await vhost('prod', [STEWARD_NAMES, STEWARD_NAMES, STEWARD_NAMES]);
    const dev = await vhost('dev', [STEWARD_NAMES, STEWARD_NAMES, STEWARD_NAMES]);
    await addCluster('prod', prod);
    await addCluster('dev', dev);
    await Promise.all([
      startAgent('prod', 'prod-a'),
      startAgent('prod', 'prod-b'),
      startAgent('dev', 'dev-a'),
      startAgent('dev', 'dev-b'),
    ]);
    for (const name of ['prod', 'dev']) {
      const check = await cli(admin, ['cluster', 'check', name]);
      expect(check.code, check.stdout + check.stderr).toBe(0);
      expect(check.stdout).toMatch(/PASS\s+cluster\.broker\.permissions/);
      expect(check.stdout).toMatch(/PASS\s+cluster\.agents\.key/);
      const attached = await ok(admin, ['cluster', 'attach', name]);
      expect(attached).toContain(`attached cluster ${name}`);
    }
    const listed = await clusterList();
    expect(listed.map((item) => [item.name, item.state])).toEqual([
      ['local', 'attached'],
      ['dev', 'attached'],
      ['prod', 'attached'],
    ]);

    const prodIds = [agents.get('prod-a')!.id, agents.get('prod-b')!.id];
    const devIds = [agents.get('dev-a')!.id, agents.get('dev-b')!.id];
    const prodJobs = await Promise.all(
      Array.from({ length: 4 }, () => submit(['where', '--cluster', 'prod'])),
    );
    const devJobs = await Promise.all(Array.from({ length: 2 }, () => submit(['where', '--cluster', 'dev'])));
    // The workflow's own `cluster: dev` routes it without --cluster.
    devJobs.push(await submit(['where-dev']));
    for (const job of prodJobs) {
      const ended = await settled(job.id);
      expect(ended.state).toBe('succeeded');
      expect(ended.cluster).toBe('prod');
      expect(prodIds).toContain(ended.agentId);
    }
    for (const job of devJobs) {
      const ended = await settled(job.id);
      expect(ended.state).toBe('succeeded');
      expect(ended.cluster).toBe('dev');
      expect(devIds).toContain(ended.agentId);
    }
  }, 300_000);

  it('refuses a submit to an unknown cluster or with a label no live agent has, naming it', async () => {
    const unknown = await cli(alice, ['run', 'where', '--cluster', 'nowhere']);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('STEWARD_CLUSTER_UNKNOWN');
    const label = await cli(alice, ['run', 'where', '--cluster', 'dev', '--label', 'gpu']);
    expect(label.code).toBe(1);
    expect(label.stderr).toContain('STEWARD_LABEL_UNAVAILABLE');
    expect(label.stderr).toContain('gpu');
  }, 60_000);

  it('lets a running prod job finish after detach, refuses new prod jobs, and keeps its results after prod is gone', async () => {
    const slow = await submit(['where', '--cluster', 'prod', '-p', 'secs=6']);
    await until(
      'the slow prod job to run',
      async () => Job.parse(JSON.parse(await ok(alice, ['job', slow.id, '--json']))).state === 'running',
      60_000,
      100,
    );
    const detached = await ok(admin, ['cluster', 'detach', 'prod']);
    expect(detached).toContain('detaching');
    const refused = await cli(alice, ['run', 'where', '--cluster', 'prod']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('STEWARD_CLUSTER_DETACHED');

    await ok(admin, ['cluster', 'detach', 'prod', '--wait', '--timeout', '120']);
    const ended = await settled(slow.id);
    expect(ended.state).toBe('succeeded');
    expect((await clusterList()).find((item) => item.name === 'prod')?.state).toBe('detached');

    // Prod goes away entirely: its agents stop and its vhost is deleted.
    await Promise.all(['prod-a', 'prod-b'].map((name) => agents.get(name)!.stop()));
    const prodVhost = vhosts.find((name) => name.includes('-prod-'))!;
    await rabbitmqctl('delete_vhost', prodVhost);
    const out = path.join(scratch, 'prod-results');
    await ok(alice, ['results', slow.id, '--out', out]);
    expect(await readFile(path.join(out, 'where.txt'), 'utf8')).toMatch(/^ran as /);
    await ok(admin, ['cluster', 'remove', 'prod']);
  }, 300_000);

  it('keeps dev attached across a server restart, and dev jobs still run', async () => {
    await steward.stop();
    await steward.up();
    expect((await clusterList()).find((item) => item.name === 'dev')?.state).toBe('attached');
    const job = await settled((await submit(['where', '--cluster', 'dev'])).id);
    expect(job.state).toBe('succeeded');
    expect([agents.get('dev-a')!.id, agents.get('dev-b')!.id]).toContain(job.agentId);
  }, 180_000);

  it('refuses attach naming the failed check: wrong password, no permissions, no default exchange, no agent, foreign key', async () => {
    const wrongPassword = path.join(scratch, 'wrong-password');
    await writeFile(wrongPassword, 'not-the-password\n', { mode: 0o600 });
    await chmod(wrongPassword, 0o600);
    await addCluster(
      'wrong-password',
      vhosts.find((name) => name.includes('-dev-'))!,
      wrongPassword,
    );
    expect(await attachRefused('wrong-password')).toEqual(['cluster.broker.credentials']);

    await addCluster('no-permissions', await vhost('noperm', undefined));
    expect(await attachRefused('no-permissions')).toEqual(['cluster.broker.permissions']);

    // The regex older guides gave: Steward's own names only, not the default exchange.
    const own = '^steward\\..*';
    await addCluster('no-default-exchange', await vhost('nodefault', [own, own, own]));
    const result = await cli(admin, ['cluster', 'check', 'no-default-exchange', '--json']);
    const report = CheckReport.parse(JSON.parse(result.stdout));
    expect(report.checks.find((check) => check.id === 'cluster.broker.permissions')?.detail).toContain(
      'amq.default',
    );
    expect(await attachRefused('no-default-exchange')).toEqual(['cluster.broker.permissions']);

    await addCluster('no-agent', await vhost('noagent', [STEWARD_NAMES, STEWARD_NAMES, STEWARD_NAMES]));
    expect(await attachRefused('no-agent')).toEqual(['cluster.agents.live']);

    await addCluster('foreign-key', await vhost('foreign', [STEWARD_NAMES, STEWARD_NAMES, STEWARD_NAMES]));
    const other = generateKeyPairSync('ed25519').publicKey.export({ type: 'spki', format: 'pem' }).toString();
    await startAgent('foreign-key', 'foreign', (agent) => (agent.serverPublicKey = other));
    expect(await attachRefused('foreign-key')).toEqual(['cluster.agents.key']);

    const states = await clusterList();
    for (const name of ['wrong-password', 'no-permissions', 'no-default-exchange', 'no-agent', 'foreign-key'])
      expect(states.find((item) => item.name === name)?.state).toBe('detached');
  }, 300_000);
});
