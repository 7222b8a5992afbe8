// Cold and warm start of per-user executors, as root, through a real `steward up`:
//   cold = a user's first job on the machine: no executor for them, no home directory yet;
//   warm = the same user's next job, their executor already running.
// Measured by the agent itself, from the offer reaching it to the job's first step running (the
// `job.first-step` record of its log, field startLatencyMs), over N users (default 50). Also prints the
// resident memory of idle executors. Usage: sudo node bench/cold-start.mjs [users]
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { machine, percentile, startSteward, tempDir } from './harness.mjs';

if (process.getuid() !== 0) {
  console.error('cold-start.mjs measures per-user executors: run it as root');
  process.exit(2);
}
const count = Number(process.argv[2] ?? 50);
const tag = `${process.pid}`.slice(-5);
const scratch = tempDir('cold');
const config = path.join(scratch, 'steward.yaml');
// Room for every user's executor: small limits, one DuckDB thread each, two pre-started executors.
writeFileSync(
  config,
  [
    'agent:',
    '  warmExecutors: 2',
    '  slots: 4',
    '  limits: { memory: 256MiB, cpus: 1 }',
    '  duckdb: { threads: 1 }',
    `  capacity: { tokens: ${count}, memory: ${count * 256}MiB }`,
    '',
  ].join('\n'),
);
const workflow = 'name: hello\nsteps:\n  - id: hi\n    shell: "true"\n';
const users = [];
let steward;
try {
  steward = await startSteward({ config });
  const admin = (
    await (
      await fetch(`${steward.url}/api/auth/login`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ user: 'admin', password: 'bench-admin-password' }),
      })
    ).json()
  ).token;
  const call = async (token, method, route, body) => {
    const response = await fetch(steward.url + route, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`${method} ${route}: ${response.status} ${text}`);
    return JSON.parse(text);
  };
  // Every user runs the same workflow: it lives in a shared space where they are viewers.
  await call(admin, 'POST', '/api/spaces', { name: 'bench' });
  await call(admin, 'PUT', '/api/spaces/bench/members', { kind: 'user', name: 'admin', role: 'editor' });
  await call(admin, 'POST', '/api/spaces/bench/workflows', { source: workflow, fileName: 'hello.yaml' });
  for (let i = 0; i < count; i++) {
    const name = `stcold${tag}u${i}`;
    // -M: no home directory, so the agent creates it from /etc/skel as part of the cold start.
    execFileSync('useradd', ['-M', '-U', '-s', '/bin/bash', name]);
    users.push(name);
    await call(admin, 'POST', '/api/users', { name, password: 'bench-user-password' });
    await call(admin, 'PUT', '/api/spaces/bench/members', { kind: 'user', name, role: 'viewer' });
  }
  const runOne = async (token) => {
    const job = await call(token, 'POST', '/api/jobs', { workflow: 'bench/hello' });
    for (;;) {
      const detail = await call(token, 'GET', `/api/jobs/${job.id}`);
      if (['succeeded', 'failed', 'canceled', 'expired'].includes(detail.state)) {
        if (detail.state !== 'succeeded')
          throw new Error(`job ${job.id} ${detail.state}: ${JSON.stringify(detail.error)}`);
        return detail;
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  };
  const pids = [];
  for (const name of users) {
    const token = (
      await (
        await fetch(`${steward.url}/api/auth/login`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ user: name, password: 'bench-user-password' }),
        })
      ).json()
    ).token;
    const cold = await runOne(token);
    await runOne(token); // warm
    pids.push(cold.executor.pid);
    // Let the pool replace the pre-started executor this user took, as it would between arrivals.
    await new Promise((resolve) => setTimeout(resolve, 400));
  }
  await new Promise((resolve) => setTimeout(resolve, 500));
  const log = readFileSync(path.join(steward.dataDir, 'logs', 'steward.log'), 'utf8');
  const starts = log
    .split('\n')
    .flatMap((line) => {
      try {
        return [JSON.parse(line)];
      } catch {
        return []; // not a record, or one still being written
      }
    })
    .filter((record) => record.event === 'job.first-step');
  const cold = starts.filter((entry) => entry.coldStart).map((entry) => entry.startLatencyMs);
  const warm = starts.filter((entry) => !entry.coldStart).map((entry) => entry.startLatencyMs);
  const rss = pids.map((pid) => {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    return Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? NaN) / 1024;
  });
  const fmt = (values) =>
    `p50 ${percentile(values, 50).toFixed(1)} ms, p99 ${percentile(values, 99).toFixed(1)} ms, max ${Math.max(...values).toFixed(1)} ms (n=${values.length})`;
  if (process.env.PHASES)
    for (const entry of starts)
      console.log(entry.coldStart ? 'cold' : 'warm', entry.startLatencyMs, JSON.stringify(entry.phasesMs));
  console.log(`machine: ${machine()}`);
  console.log(`users: ${count}; offer at the agent → first step running, measured by the agent`);
  console.log(`cold start (no executor, no home): ${fmt(cold)}`);
  console.log(`warm start (executor running):     ${fmt(warm)}`);
  console.log(
    `idle executor RSS: p50 ${percentile(rss, 50).toFixed(0)} MiB, max ${Math.max(...rss).toFixed(0)} MiB (n=${rss.length})`,
  );
} finally {
  await steward?.stop();
  for (const name of users) {
    try {
      execFileSync('pkill', ['-KILL', '-u', name], { stdio: 'ignore' });
    } catch {
      /* nothing left */
    }
    try {
      execFileSync('userdel', ['-r', '-f', name], { stdio: 'ignore' });
    } catch {
      /* gone */
    }
  }
  rmSync(scratch, { recursive: true, force: true });
}
