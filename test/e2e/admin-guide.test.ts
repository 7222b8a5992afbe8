/**
 * The admin guide's walkthrough "From one machine to a server with clusters", run as written: every shell
 * block marked `guide-test: NAME` runs in bash with this test's own settings (names derived from a run tag,
 * temp dirs instead of /etc and /var/lib), and each `guide-test: systemd UNIT` step runs that unit's
 * `ExecStart` line from deploy/ with the same paths substituted (the server as the unit's `User=`). Blocks
 * marked `pending` (the cluster commands, not built yet) are only listed. Real parts: RabbitMQ, PostgreSQL,
 * OS users, `steward up`, `steward server` and `steward agent`.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chown, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Daemon } from '../support/distributed.js';
import { OsUsers, type TestUser } from '../support/os-users.js';
import { deleteVhost, rabbitmqctl } from '../support/rabbitmq.js';
import { freePort, isRoot, repoRoot, run, stewardBin, tempDir } from '../support/steward.js';

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
function runBlock(marker: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      'bash',
      ['-euo', 'pipefail', '-c', block(marker)],
      { cwd: repoRoot, env, timeout: 180_000, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) =>
        resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr }),
    );
  });
}

async function expectBlockRuns(marker: string): Promise<string> {
  const result = await runBlock(marker);
  expect(result.code, `block ${marker}:\n${result.stdout}\n${result.stderr}`).toBe(0);
  return result.stdout;
}

/** The install paths of deploy/ replaced by this test's. */
function localPath(word: string): string {
  return word
    .replace('/usr/bin/node', process.execPath)
    .replace('/opt/steward/bin/steward.js', stewardBin)
    .replace(/^\/opt\/steward$/, repoRoot)
    .replace('/etc/steward', env.STEWARD_ETC!)
    .replace('/var/lib/steward-server', env.SERVER_DATA!)
    .replace('/var/lib/steward-agent', env.AGENT_DATA!);
}

/** A unit's ExecStart, User= and WorkingDirectory=, with this test's paths. */
async function execStartOf(unit: string): Promise<{ argv: string[]; user: string; cwd: string }> {
  const text = await readFile(path.join(repoRoot, 'deploy', unit), 'utf8');
  const line = /^ExecStart=(.*)$/m.exec(text)?.[1];
  expect(line, `${unit} has an ExecStart`).toBeDefined();
  const user = /^User=(.*)$/m.exec(text)?.[1] ?? 'root';
  const cwd = localPath(/^WorkingDirectory=(.*)$/m.exec(text)?.[1] ?? repoRoot);
  return { argv: line!.split(/\s+/).map(localPath), user, cwd };
}

/** Starts a unit's ExecStart (with its EnvironmentFile) and waits for its `daemon.up` record. */
async function startUnit(unit: string, dataDir: string): Promise<Daemon> {
  const { argv, user, cwd } = await execStartOf(unit);
  const environment = await readFile(path.join(env.STEWARD_ETC!, 'steward.env'), 'utf8');
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
    env: { ...env, ...extra, STEWARD_AGENT_ID: env.AGENT_ID! },
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
    await deleteVhost(env.MQ_VHOST!);
    for (const user of [env.MQ_SERVER_USER!, env.MQ_AGENT_USER!])
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
  it('marks every shell block of the walkthrough as run, run as a unit, or pending', () => {
    expect(blocks.length).toBeGreaterThan(5);
    for (const item of blocks) expect(item.marker, item.code).not.toBe('');
    const pending = blocks.filter((item) => item.marker.startsWith('pending'));
    // Only the cluster commands wait for their feature; everything else is run below.
    for (const item of pending) expect(item.code).toMatch(/steward cluster /);
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
  }, 400_000);
});
