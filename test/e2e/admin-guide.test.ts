/**
 * The admin guide's walkthrough "From one machine to a server with clusters", run as written: every shell
 * block marked `guide-test: NAME` runs in bash with this test's own settings (names derived from a run tag,
 * temp dirs instead of /etc and /var/lib), and each `guide-test: systemd UNIT` step runs that unit's
 * `ExecStart` line from deploy/ with the same paths substituted (the server as the unit's `User=`). The
 * cluster steps run too: a vhost and broker user per cluster (named from the run tag), `steward cluster add`,
 * `agent-config`, an agent per cluster started from that config in its own "machine" directory, `attach`,
 * `list` and a job routed with `--cluster prod`. Real parts: RabbitMQ, PostgreSQL, OS users, `steward up`,
 * `steward server` and `steward agent`.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chown, copyFile, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Daemon } from '../support/distributed.js';
import { OsUsers, type TestUser } from '../support/os-users.js';
import { deleteVhost, rabbitmqctl } from '../support/rabbitmq.js';
import { freePort, isRoot, repoRoot, run, stewardBin, tempDir } from '../support/steward.js';

/** Where a block runs: the settings and the current directory (another agent machine has its own). */
interface Machine {
  env: Record<string, string>;
  cwd: string;
}

interface GuideBlock {
  marker: string;
  code: string;
}

const tag = randomBytes(3).toString('hex');
let root: string;
let env: Record<string, string>;
const osUsers = new OsUsers();
let demo: TestUser;
const daemons: Daemon[] = [];
let blocks: GuideBlock[];
const CLUSTERS = ['prod', 'dev'];

/** The walkthrough's shell blocks with the marker comment each must carry. */
async function walkthroughBlocks(): Promise<GuideBlock[]> {
  const guide = await readFile(path.join(repoRoot, 'docs', 'admin-guide.md'), 'utf8');
  const start = guide.indexOf('## From one machine to a server with clusters');
  expect(start, 'the walkthrough section').toBeGreaterThan(0);
  const end = guide.indexOf('\n## ', start + 10);
  const section = guide.slice(start, end);
  const found: GuideBlock[] = [];
  const pattern = /(?:<!-- guide-test: ([^>]*?) -->\s*\n)?```sh\n([\s\S]*?)```/g;
  for (const match of section.matchAll(pattern)) {
    found.push({ marker: match[1] ?? '', code: match[2]! });
  }
  return found;
}

function block(marker: string): string {
  const found = blocks.find((item) => item.marker === marker);
  if (!found) throw new Error(`no block marked "guide-test: ${marker}" in the walkthrough`);
  return found.code;
}

/** Runs one block as the guide says: bash, stopping at the first failing command. */
function runBlock(
  marker: string,
  machine: Machine = { env, cwd: repoRoot },
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      'bash',
      ['-euo', 'pipefail', '-c', block(marker)],
      { cwd: machine.cwd, env: machine.env, timeout: 180_000, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) =>
        resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr }),
    );
  });
}

/** `steward ARGS` with the walkthrough's settings, logged in as `user` first (the admin's password file). */
async function stewardCli(args: string[], user: string): Promise<string> {
  const login =
    user === 'admin'
      ? 'steward login --server "$STEWARD_URL" --user admin --password-stdin < "$STEWARD_ETC/admin-password"'
      : 'steward login --server "$STEWARD_URL" --user "$DEMO_USER" --password-stdin <<< "$DEMO_USER-first-password"';
  const result = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(
      'bash',
      ['-euo', 'pipefail', '-c', `${login} >/dev/null && steward "$@"`, 'steward', ...args],
      { cwd: repoRoot, env, timeout: 120_000 },
      (error, stdout, stderr) => resolve({ code: error ? 1 : 0, stdout, stderr }),
    );
  });
  expect(result.code, `steward ${args.join(' ')}:\n${result.stdout}\n${result.stderr}`).toBe(0);
  return result.stdout;
}

async function expectBlockRuns(marker: string, machine?: Machine): Promise<string> {
  const result = await runBlock(marker, machine);
  expect(result.code, `block ${marker}:\n${result.stdout}\n${result.stderr}`).toBe(0);
  return result.stdout;
}

/** The install paths of deploy/ replaced by this test's. */
function localPath(word: string, settings = env): string {
  return word
    .replace('/usr/bin/node', process.execPath)
    .replace('/opt/steward/bin/steward.js', stewardBin)
    .replace(/^\/opt\/steward$/, repoRoot)
    .replace('/etc/steward', settings.STEWARD_ETC!)
    .replace('/var/lib/steward-server', settings.SERVER_DATA!)
    .replace('/var/lib/steward-agent', settings.AGENT_DATA!);
}

/** A unit's ExecStart, User= and WorkingDirectory=, with this test's paths. */
async function execStartOf(
  unit: string,
  settings = env,
): Promise<{ argv: string[]; user: string; cwd: string }> {
  const text = await readFile(path.join(repoRoot, 'deploy', unit), 'utf8');
  const line = /^ExecStart=(.*)$/m.exec(text)?.[1];
  expect(line, `${unit} has an ExecStart`).toBeDefined();
  const user = /^User=(.*)$/m.exec(text)?.[1] ?? 'root';
  const cwd = localPath(/^WorkingDirectory=(.*)$/m.exec(text)?.[1] ?? repoRoot, settings);
  return { argv: line!.split(/\s+/).map((word) => localPath(word, settings)), user, cwd };
}

/** Starts a unit's ExecStart (with its EnvironmentFile) and waits for its `daemon.up` record. */
async function startUnit(unit: string, dataDir: string, settings = env): Promise<Daemon> {
  const { argv, user, cwd } = await execStartOf(unit, settings);
  const environment = await readFile(path.join(settings.STEWARD_ETC!, 'steward.env'), 'utf8').catch(() => '');
  const extra = Object.fromEntries(
    environment
      .split('\n')
      .filter((line) => line.includes('='))
      .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]),
  );
  // The server's unit runs it as its own user (User=steward there, this run's system user here).
  const runAs = user === 'root' ? [] : ['/usr/sbin/runuser', '-u', env.STEWARD_SYSTEM_USER!, '--'];
  const [program, ...args] = [...runAs, ...argv];
  const { spawn } = await import('node:child_process');
  const child = spawn(program!, args, {
    cwd,
    env: { ...settings, ...extra, STEWARD_AGENT_ID: settings.AGENT_ID! },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.on('error', () => {}); // a failed spawn shows as the exit waitUntilUp reports
  const daemon = new Daemon(child);
  daemons.push(daemon);
  await daemon.waitUntilUp(dataDir, Date.now() - 1_000, 60_000);
  return daemon;
}

beforeAll(async () => {
  root = await tempDir('guide');
  const bin = path.join(root, 'bin');
  await mkdir(bin);
  // `steward` on PATH, as an installed release has it.
  await writeFile(path.join(bin, 'steward'), `#!/bin/sh\nexec "${process.execPath}" "${stewardBin}" "$@"\n`, {
    mode: 0o755,
  });
  blocks = await walkthroughBlocks();
  if (isRoot) demo = await osUsers.user('gd');
  const port = await freePort();
  env = {
    PATH: `${bin}:${process.env.PATH ?? '/usr/bin:/bin'}`,
    HOME: path.join(root, 'home'),
    XDG_CONFIG_HOME: path.join(root, 'home', '.config'),
    LANG: 'C.UTF-8',
    STEWARD_ETC: path.join(root, 'etc'),
    STEWARD_PORT: String(port),
    STEWARD_URL: `http://127.0.0.1:${port}`,
    STEWARD_DATA: path.join(root, 'standalone'),
    SERVER_DATA: path.join(root, 'server'),
    AGENT_DATA: path.join(root, 'agent'),
    AGENT_ID: `guide-${tag}`,
    STEWARD_SYSTEM_USER: `stguide${tag}`,
    DEMO_USER: demo?.name ?? 'nobody',
    MQ_URL: 'amqp://127.0.0.1:5672',
    MQ_HOST: '127.0.0.1:5672',
    MQ_VHOST: `steward-test-guide-${tag}`,
    MQ_SERVER_USER: `steward-guide-server-${tag}`,
    MQ_AGENT_USER: `steward-guide-agent-${tag}`,
    PG_ADMIN_URL: process.env.STEWARD_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres',
    PG_HOST: '127.0.0.1',
    PG_ROLE: `steward_guide_${tag}`,
    PG_DB: `steward_guide_${tag}`,
  };
  await mkdir(env.HOME!, { recursive: true });
}, 120_000);

afterAll(async () => {
  for (const daemon of daemons) await daemon.stop();
  if (env) {
    for (const vhost of [env.MQ_VHOST!, ...CLUSTERS.map((name) => `${env.MQ_VHOST}-${name}`)])
      await deleteVhost(vhost);
    const clusterUsers = CLUSTERS.map((name) => `${env.MQ_AGENT_USER}-${name}`);
    for (const user of [env.MQ_SERVER_USER!, env.MQ_AGENT_USER!, ...clusterUsers])
      await rabbitmqctl('delete_user', user).catch(() => '');
    await run('psql', [env.PG_ADMIN_URL!, '-c', `DROP DATABASE IF EXISTS ${env.PG_DB} WITH (FORCE)`]);
    await run('psql', [env.PG_ADMIN_URL!, '-c', `DROP ROLE IF EXISTS ${env.PG_ROLE}`]);
    await run('userdel', [env.STEWARD_SYSTEM_USER!]);
    await run('groupdel', [env.STEWARD_SYSTEM_USER!]);
  }
  await osUsers.cleanup();
  if (root) await rm(root, { recursive: true, force: true });
});

describe.runIf(isRoot)('the admin guide walkthrough', () => {
  it('marks every shell block of the walkthrough as run or run as a unit', () => {
    expect(blocks.length).toBeGreaterThan(5);
    for (const item of blocks) expect(item.marker, item.code).not.toBe('');
    expect(blocks.filter((item) => item.marker.startsWith('pending')).map((item) => item.code)).toEqual([]);
    for (const item of blocks.filter((entry) => entry.marker.startsWith('systemd'))) {
      const unit = item.marker.split(' ')[1]!;
      expect(item.code).toContain(`cp deploy/${unit} /etc/systemd/system/`);
      expect(item.code).toMatch(
        new RegExp(`systemctl daemon-reload && systemctl enable --now ${unit.replace('.service', '')}`),
      );
    }
  });

  it('grows one machine into a server with its store in PostgreSQL and an agent over RabbitMQ', async () => {
    // 1. One machine.
    const standaloneDoctor = await expectBlockRuns('standalone');
    expect(standaloneDoctor).toMatch(/all passed/);
    const up = await startUnit('steward.service', env.STEWARD_DATA!);
    const first = await expectBlockRuns('first-job');
    expect(first).toMatch(/succeeded/);
    await up.stop();

    // 2. Broker and database, 3. the server.
    await expectBlockRuns('rabbitmq');
    await expectBlockRuns('postgres');
    await mkdir(env.SERVER_DATA!, { mode: 0o700 });
    const serverDoctor = await runBlock('server');
    expect(serverDoctor.code, `${serverDoctor.stdout}\n${serverDoctor.stderr}`).toBe(0);
    expect(serverDoctor.stdout).toMatch(/PASS\s+broker\.default/);
    // StateDirectory= gives the unit's user its data dir.
    const uid = Number((await run('id', ['-u', env.STEWARD_SYSTEM_USER!])).stdout.trim());
    const gid = Number((await run('id', ['-g', env.STEWARD_SYSTEM_USER!])).stdout.trim());
    await chown(env.SERVER_DATA!, uid, gid);
    await startUnit('steward-server.service', env.SERVER_DATA!);

    // 4. An agent on the server's bus, checked by doctor, then the same first job through RabbitMQ.
    const agentDoctor = await expectBlockRuns('agent');
    expect(agentDoctor).toMatch(/PASS\s+agent\.server/);
    expect(agentDoctor).toMatch(/PASS\s+agent\.user/);
    await mkdir(env.AGENT_DATA!, { recursive: true });
    await startUnit('steward-agent.service', env.AGENT_DATA!);
    const second = await expectBlockRuns('first-job');
    expect(second).toMatch(/succeeded/);

    // 5. Two clusters, each with an agent on its own "machine" (own etc, data dir and id) from the printed
    // agent config, attached; a job routed with --cluster prod runs on prod's agent.
    await expectBlockRuns('clusters');
    const clusterAgents = new Map<string, string>();
    for (const name of CLUSTERS) {
      const machineDir = path.join(root, `machine-${name}`);
      await mkdir(machineDir, { recursive: true });
      // "copy agent-CLUSTER.yaml from the server to the current directory"
      await copyFile(
        path.join(env.STEWARD_ETC!, `agent-${name}.yaml`),
        path.join(machineDir, `agent-${name}.yaml`),
      );
      const settings = {
        ...env,
        CLUSTER: name,
        STEWARD_ETC: path.join(machineDir, 'etc'),
        AGENT_DATA: path.join(machineDir, 'data'),
        AGENT_ID: `guide-${name}-${tag}`,
      };
      clusterAgents.set(name, settings.AGENT_ID);
      const doctor = await expectBlockRuns('cluster-agent', { env: settings, cwd: machineDir });
      expect(doctor).toMatch(/PASS\s+agent\.server/);
      await mkdir(settings.AGENT_DATA, { recursive: true });
      await startUnit('steward-agent.service', settings.AGENT_DATA, settings);
    }
    const attached = await expectBlockRuns('attach');
    expect(attached).toMatch(/succeeded/);
    const listed = JSON.parse(await stewardCli(['cluster', 'list', '--json'], 'admin')) as {
      clusters: { name: string; state: string }[];
    };
    for (const name of CLUSTERS)
      expect(listed.clusters.find((cluster) => cluster.name === name)?.state, JSON.stringify(listed)).toBe(
        'attached',
      );
    const jobs = JSON.parse(await stewardCli(['jobs', '--workflow', 'whoami', '--json'], env.DEMO_USER!)) as {
      jobs: { cluster: string; agentId: string | null; state: string; createdAt: string }[];
    };
    const latest = [...jobs.jobs].sort((a, b) => b.createdAt.localeCompare(a.createdAt))[0];
    expect(latest, JSON.stringify(jobs)).toMatchObject({
      cluster: 'prod',
      agentId: clusterAgents.get('prod'),
      state: 'succeeded',
    });
  }, 600_000);
});
