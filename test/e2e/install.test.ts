/**
 * The README's install and start commands, run as written: `npm link` puts `steward` on the PATH (the
 * package's own bin is not linked into its node_modules/.bin, so the old PATH advice never worked), and
 * `npx steward up` stopped with SIGTERM leaves no server behind.
 */
import { spawn } from 'node:child_process';
import { cp, mkdir, readFile, readdir, rm, symlink } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { connect } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, repoRoot, tempDir } from '../support/steward.js';
import { until } from '../support/wait.js';

let scratch = '';

beforeAll(async () => {
  scratch = await tempDir('install');
});

afterAll(async () => {
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

/** Whether something accepts connections on 127.0.0.1:port. */
function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** Pids of processes whose command line mentions `needle`. */
async function processesWith(needle: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.split('\0').join(' ').includes(needle)) pids.push(Number(entry));
  }
  return pids;
}

/** `pid (ppid) command`, for a failure message. */
async function describeProcess(pid: number): Promise<string> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  const ppid = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1];
  const ignored = `${/SigIgn:\s*(\S+)/.exec(status)?.[1]} state ${/State:\s*(.+)/.exec(status)?.[1]} caught ${/SigCgt:\s*(\S+)/.exec(status)?.[1]}`;
  const environ = await readFile(`/proc/${pid}/environ`, 'utf8').catch(() => '');
  const npm = environ.split('\0').filter((line) => /^npm_(command|lifecycle_script)=/.test(line));
  return `${pid} (ppid ${ppid}, ignored ${ignored}, ${npm.join(' ')}) ${cmdline.split('\0').join(' ')}`;
}

describe('install and start as the README says', () => {
  it('puts steward on the PATH with `npm link` (node_modules/.bin never had it)', async () => {
    expect(existsSync(path.join(repoRoot, 'node_modules', '.bin', 'steward'))).toBe(false);
    const readme = await readFile(path.join(repoRoot, 'README.md'), 'utf8');
    expect(readme).not.toContain('node_modules/.bin:$PATH');
    expect(readme).toMatch(/^npm link\s+# once: puts `steward` on the PATH/m);
    // A fresh copy of the package (its dependencies and build shared with this checkout), linked into a
    // private global prefix so the machine's own stays untouched. --ignore-scripts: dist/ is built already.
    const copy = path.join(scratch, 'steward');
    const prefix = path.join(scratch, 'global');
    await mkdir(copy);
    await mkdir(prefix);
    for (const file of ['package.json', 'package-lock.json'])
      await cp(path.join(repoRoot, file), path.join(copy, file));
    await cp(path.join(repoRoot, 'bin'), path.join(copy, 'bin'), { recursive: true });
    await symlink(path.join(repoRoot, 'dist'), path.join(copy, 'dist'));
    await symlink(path.join(repoRoot, 'node_modules'), path.join(copy, 'node_modules'));
    const link = await new Promise<{ code: number | null; output: string }>((resolve) => {
      const child = spawn('npm', ['link', '--ignore-scripts', '--offline', '--no-audit', '--no-fund'], {
        cwd: copy,
        env: { ...process.env, NPM_CONFIG_PREFIX: prefix },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let output = '';
      child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
      child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
      child.on('close', (code) => resolve({ code, output }));
    });
    expect(link.code, link.output).toBe(0);
    const version = await new Promise<{ code: number | null; stdout: string }>((resolve) => {
      const child = spawn('steward', ['--version'], {
        env: { ...process.env, PATH: `${path.join(prefix, 'bin')}:${process.env.PATH ?? '/usr/bin:/bin'}` },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
      child.on('close', (code) => resolve({ code, stdout }));
    });
    expect(version.code).toBe(0);
    const pkg = JSON.parse(await readFile(path.join(repoRoot, 'package.json'), 'utf8')) as {
      version: string;
    };
    expect(version.stdout.trim()).toBe(pkg.version);
  }, 120_000);

  it('stops the server when `npx steward up` gets SIGTERM: no steward process left, the port closed', async () => {
    const port = await freePort();
    const dataDir = path.join(scratch, 'npx-data');
    const npx = spawn('npx', ['steward', 'up', '--port', String(port), '--data-dir', dataDir], {
      cwd: repoRoot,
      env: {
        ...process.env,
        STEWARD_ADMIN_PASSWORD: 'admin-password-for-tests',
        STEWARD_AGENT_ID: `npx-${port}`,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
      // Its own process group, so that a leftover can be cleaned up below whatever happens.
      detached: true,
    });
    let output = '';
    npx.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    npx.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    try {
      await until(
        () => `npx steward up to answer:\n${output}`,
        async () => (await fetch(`http://127.0.0.1:${port}/api/health`).catch(() => undefined))?.ok === true,
        120_000,
        200,
      );
      expect(await processesWith(dataDir)).not.toEqual([]);
      // SIGTERM to npx alone, as `kill <pid>` (or a supervisor stopping just its child) sends it.
      npx.kill('SIGTERM');
      let left = '';
      await until(
        () => `the server to stop:\n${output}\nleft: ${left}`,
        async () => {
          const pids = await processesWith(dataDir);
          left = (await Promise.all(pids.map(describeProcess))).join('; ');
          return !(await listening(port)) && pids.length === 0;
        },
        60_000,
        200,
      );
      expect(output).toContain('stopping');
    } finally {
      for (const pid of await processesWith(dataDir)) process.kill(pid, 'SIGKILL');
      try {
        process.kill(-npx.pid!, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
  }, 180_000);
});
