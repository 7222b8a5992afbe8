// Shared bench helpers: a private `steward up` on a free port, an OS user when run as root, REST helpers.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, chmodSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export function tempDir(prefix) {
  const dir = mkdtempSync(path.join(os.tmpdir(), `steward-bench-${prefix}-`));
  chmodSync(dir, 0o755);
  return dir;
}

async function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

export function percentile(values, p) {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/**
 * CPU time (ms, user + system) of the given processes and all their descendants, read from /proc. Children
 * that already exited and were reaped count in their parent's `cutime/cstime`, which are included too.
 */
export function treeCpuMs(rootPids) {
  const parents = new Map();
  const ticks = new Map();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // exited meanwhile
    }
    // Fields after the command name (which may hold spaces and parentheses).
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    parents.set(Number(entry), Number(fields[1]));
    ticks.set(
      Number(entry),
      Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14]),
    );
  }
  const wanted = new Set(rootPids);
  for (let grew = true; grew;) {
    grew = false;
    for (const [pid, parent] of parents) {
      if (!wanted.has(pid) && wanted.has(parent)) {
        wanted.add(pid);
        grew = true;
      }
    }
  }
  let total = 0;
  for (const pid of wanted) total += ticks.get(pid) ?? 0;
  return (total * 1000) / 100; // USER_HZ is 100 on Linux
}

/** CPU time (ms, user + system) of one process alone, not its children; 0 once it has exited. */
export function ownCpuMs(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
  } catch {
    return 0;
  }
}

/** Pids of processes whose command name is `name` (e.g. the broker's `beam.smp`). */
export function pidsNamed(name) {
  const pids = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/comm`, 'utf8').trim() === name) pids.push(Number(entry));
    } catch {
      // exited meanwhile
    }
  }
  return pids;
}

/** OS users created by `startSteward` in this process (each instance gets its own). */
let startedOsUsers = 0;

export function machine() {
  return `${os.cpus()[0]?.model ?? 'cpu'} × ${os.availableParallelism()}, ${(os.totalmem() / 1024 ** 3).toFixed(0)} GiB, Node ${process.version}, ${os.platform()} ${os.release()}`;
}

/**
 * Starts `steward up`; as root also creates an OS user for the jobs. `root` is the checkout whose
 * `bin/steward.js` (and so `dist/`) runs: another checkout's, to compare a build with this one in one run.
 */
export async function startSteward({ config, root = repoRoot, nodeArgs = [] } = {}) {
  const dataDir = tempDir('data');
  const port = await freePort();
  const adminPassword = 'bench-admin-password';
  const args = [
    ...nodeArgs,
    path.join(root, 'bin/steward.js'),
    'up',
    '--port',
    String(port),
    '--data-dir',
    dataDir,
  ];
  if (config) args.push('--config', config);
  const child = spawn(process.execPath, args, {
    env: { ...process.env, STEWARD_ADMIN_PASSWORD: adminPassword },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  // A start that fails after the spawn must not leave the server running.
  const kill = () => child.exitCode === null && child.kill('SIGTERM');
  process.once('exit', kill);
  let output = '';
  child.stdout.on('data', (c) => (output += c));
  child.stderr.on('data', (c) => (output += c));
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) {
      rmSync(dataDir, { recursive: true, force: true });
      throw new Error(`steward up exited:\n${output}`);
    }
    try {
      if ((await fetch(`${url}/api/health`)).ok && output.includes('Steward is up')) break;
    } catch {
      // not listening yet
    }
    if (i > 300) throw new Error(`steward up did not start:\n${output}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const api = async (method, route, token, body) => {
    const response = await fetch(url + route, {
      method,
      headers: {
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...(body ? { 'content-type': 'application/json' } : {}),
      },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`${method} ${route}: ${response.status} ${text}`);
    return text ? JSON.parse(text) : undefined;
  };
  const adminToken = (
    await api('POST', '/api/auth/login', undefined, { user: 'admin', password: adminPassword })
  ).token;
  let user = 'benchuser';
  let osUser;
  if (process.getuid() === 0) {
    osUser = `stbench${process.pid}x${(startedOsUsers += 1)}`.slice(0, 30);
    execFileSync('useradd', ['-m', '-U', '-s', '/bin/bash', osUser]);
    user = osUser;
  }
  await api('POST', '/api/users', adminToken, { name: user, password: 'bench-user-password', role: 'user' });
  const token = (await api('POST', '/api/auth/login', undefined, { user, password: 'bench-user-password' }))
    .token;
  return {
    url,
    dataDir,
    token,
    pid: child.pid,
    api: (method, route, body) => api(method, route, token, body),
    async stop() {
      process.off('exit', kill);
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
      if (osUser) {
        try {
          execFileSync('pkill', ['-KILL', '-u', osUser]);
        } catch {
          /* no processes left */
        }
        try {
          execFileSync('userdel', ['-r', '-f', osUser], { stdio: 'ignore' });
        } catch {
          /* already gone */
        }
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * Resolves once the process tree under `pids` has used no more than `ticks` CPU ticks (10 ms each) over
 * `windowMs`: what a finished job leaves behind (dropping its tables, removing its directories) is done
 * before the next timed round starts.
 */
export async function settled(pids, { windowMs = 200, ticks = 1, timeoutMs = 30_000 } = {}) {
  const giveUp = Date.now() + timeoutMs;
  let before = treeCpuMs(pids);
  while (Date.now() < giveUp) {
    await new Promise((r) => setTimeout(r, windowMs));
    const now = treeCpuMs(pids);
    if (now - before <= ticks * 10) return;
    before = now;
  }
}

/** Submits a job and follows its SSE stream; returns client-side times (ms) to running and to done. */
/** The blocks of a server-sent event stream (the lines between blank lines), as they arrive. */
async function* sseBlocks(reader) {
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read().catch(() => ({ done: true }));
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let split;
    while ((split = buffer.indexOf('\n\n')) >= 0) {
      yield buffer.slice(0, split);
      buffer = buffer.slice(split + 2);
    }
  }
}

export async function runAndTime(steward, body) {
  const t0 = performance.now();
  const job = await steward.api('POST', '/api/jobs', body);
  const response = await fetch(`${steward.url}/api/jobs/${job.id}/events`, {
    headers: { authorization: `Bearer ${steward.token}` },
  });
  const reader = response.body.getReader();
  let running;
  let final;
  for await (const block of sseBlocks(reader)) {
    const event = /^event: (.*)$/m.exec(block)?.[1];
    const data = /^data: (.*)$/m.exec(block)?.[1];
    if (!event || !data) continue;
    const payload = JSON.parse(data);
    if (
      running === undefined &&
      ['running', 'succeeded', 'failed'].includes(payload.state) &&
      (event === 'job' || event === 'snapshot' || event === 'end')
    ) {
      running = performance.now() - t0;
    }
    if (event === 'end') {
      final = payload;
      break;
    }
  }
  await reader.cancel().catch(() => {});
  const done = performance.now() - t0;
  if (!final) throw new Error(`job ${job.id}: event stream ended without an end event`);
  return { job: final, running: running ?? done, done };
}

/**
 * One live stream of the caller's job changes (`GET /api/jobs/stream`), opened once, that any number of
 * submissions wait on: the way a client following many jobs works (the portal does), and what Celery's
 * `delay().get()` has in its rpc backend, one reply consumer per client. `runAndTime` opens a stream per job
 * instead. Terminal states seen before anyone waits are kept (by id) until waited for.
 */
export async function openJobStream(steward) {
  const response = await fetch(`${steward.url}/api/jobs/stream`, {
    headers: { authorization: `Bearer ${steward.token}` },
  });
  if (!response.ok) throw new Error(`GET /api/jobs/stream: ${response.status}`);
  const terminal = new Set(['succeeded', 'failed', 'expired', 'canceled', 'lost']);
  const ended = new Map();
  const waiting = new Map();
  // When the stream first said a job was running (performance.now()), until its end is waited for.
  const runningAt = new Map();
  const reader = response.body.getReader();
  let connected;
  const open = new Promise((resolve) => (connected = resolve));
  void (async () => {
    for await (const block of sseBlocks(reader)) {
      if (block.startsWith(': connected')) connected();
      if (!/^event: job$/m.test(block)) continue;
      const job = JSON.parse(/^data: (.*)$/m.exec(block)[1]);
      if (job.state === 'running' && !runningAt.has(job.id)) runningAt.set(job.id, performance.now());
      if (!terminal.has(job.state)) continue;
      const waiter = waiting.get(job.id);
      if (waiter) {
        waiting.delete(job.id);
        waiter(job);
      } else ended.set(job.id, job);
    }
  })();
  await open;
  return {
    /**
     * Submits a job and resolves when the stream says it ended: `{ job, done, answered, running }`, ms since
     * the submit: its end, the submit's answer, and the stream's `running` (undefined when none came: a job
     * can go from queued to its end in one change).
     */
    async runAndTime(body) {
      const t0 = performance.now();
      const submitted = await steward.api('POST', '/api/jobs', body);
      const answered = performance.now() - t0;
      const job =
        ended.get(submitted.id) ?? (await new Promise((resolve) => waiting.set(submitted.id, resolve)));
      const done = performance.now() - t0;
      ended.delete(submitted.id);
      const seenRunning = runningAt.get(submitted.id);
      runningAt.delete(submitted.id);
      return { job, done, answered, running: seenRunning === undefined ? undefined : seenRunning - t0 };
    },
    close() {
      void reader.cancel().catch(() => {});
    },
  };
}
