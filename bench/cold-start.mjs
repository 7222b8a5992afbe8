// Cold and warm start of per-user executors, as root, through a real `steward up`:
//   cold = a user's first job on the machine: no executor for them, no home directory yet;
//   warm = the same user's next job, their executor already running.
// Measured by the agent itself, from the offer reaching it to the job's first step running (the
// `job.first-step` record of its log, field startLatencyMs), over N users (default 50). Also prints the
// resident memory of the idle executors still running (an executor may exit meanwhile: it is skipped).
// Usage: sudo node bench/cold-start.mjs [users] [--compare=<checkout>] [--gap=<ms between users, 400>]
// With --compare, a second `steward up` runs from that checkout (its own dist/) and users alternate between
// the two, so both are measured side by side under the same load.
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { machine, percentile, repoRoot, startSteward, tempDir } from './harness.mjs';

if (process.getuid() !== 0) {
  console.error('cold-start.mjs measures per-user executors: run it as root');
  process.exit(2);
}
const positional = process.argv.slice(2).filter((arg) => !arg.startsWith('--'));
const option = (name) =>
  process.argv.find((arg) => arg.startsWith(`--${name}=`))?.slice(name.length + 3) ?? undefined;
const count = Number(positional[0] ?? 50);
const gapMs = Number(option('gap') ?? 400);
const compare = option('compare');
const tag = `${process.pid}`.slice(-5);
const scratch = tempDir('cold');
const workflow = 'name: hello\nsteps:\n  - id: hi\n    shell: "true"\n';
const targets = [{ name: 'this', root: repoRoot }];
if (compare) targets.push({ name: path.basename(path.resolve(compare)), root: path.resolve(compare) });

/** Resident memory (MiB) of a live process, or undefined when it has exited (or is exiting). */
function rssMiB(pid) {
  try {
    const kib = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return kib === undefined ? undefined : Number(kib) / 1024;
  } catch {
    return undefined; // exited meanwhile
  }
}

async function call(steward, token, method, route, body) {
  const response = await fetch(steward.url + route, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${route}: ${response.status} ${text}`);
  return JSON.parse(text);
}

async function login(steward, user, password) {
  const response = await fetch(`${steward.url}/api/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ user, password }),
  });
  return (await response.json()).token;
}

async function runOne(steward, token) {
  const job = await call(steward, token, 'POST', '/api/jobs', { workflow: 'bench/hello' });
  for (;;) {
    const detail = await call(steward, token, 'GET', `/api/jobs/${job.id}`);
    if (['succeeded', 'failed', 'canceled', 'expired'].includes(detail.state)) {
      if (detail.state !== 'succeeded')
        throw new Error(`job ${job.id} ${detail.state}: ${JSON.stringify(detail.error)}`);
      return detail;
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

async function start(target, index) {
  const config = path.join(scratch, `steward-${index}.yaml`);
  // Room for every user's executor: small limits, one DuckDB thread each, two pre-started executors.
  writeFileSync(
    config,
    [
      'agent:',
      `  id: bench-cold-${tag}-${index}`,
      '  warmExecutors: 2',
      '  slots: 4',
      '  limits: { memory: 256MiB, cpus: 1 }',
      '  duckdb: { threads: 1 }',
      `  capacity: { tokens: ${count}, memory: ${count * 256}MiB }`,
      '',
    ].join('\n'),
  );
  const steward = await startSteward({ config, root: target.root });
  const admin = await login(steward, 'admin', 'bench-admin-password');
  // Every user runs the same workflow: it lives in a shared space where they are viewers.
  await call(steward, admin, 'POST', '/api/spaces', { name: 'bench' });
  await call(steward, admin, 'PUT', '/api/spaces/bench/members', {
    kind: 'user',
    name: 'admin',
    role: 'editor',
  });
  await call(steward, admin, 'POST', '/api/spaces/bench/workflows', {
    source: workflow,
    fileName: 'hello.yaml',
  });
  return { ...target, steward, admin, pids: [] };
}

function firstSteps(steward) {
  return readFileSync(path.join(steward.dataDir, 'logs', 'steward.log'), 'utf8')
    .split('\n')
    .flatMap((line) => {
      try {
        return [JSON.parse(line)];
      } catch {
        return []; // not a record, or one still being written
      }
    })
    .filter((record) => record.event === 'job.first-step');
}

function report(run) {
  const starts = firstSteps(run.steward);
  const cold = starts.filter((entry) => entry.coldStart);
  const warm = starts.filter((entry) => !entry.coldStart).map((entry) => entry.startLatencyMs);
  const rss = run.pids.map(rssMiB).filter((value) => value !== undefined);
  const fmt = (values) =>
    `p50 ${percentile(values, 50).toFixed(1)} ms, p99 ${percentile(values, 99).toFixed(1)} ms, max ${Math.max(...values).toFixed(1)} ms (n=${values.length})`;
  if (process.env.PHASES)
    for (const entry of starts)
      console.log(entry.coldStart ? 'cold' : 'warm', entry.startLatencyMs, JSON.stringify(entry.phasesMs));
  const phases = {};
  for (const entry of cold)
    for (const [key, value] of Object.entries(entry.phasesMs ?? {})) (phases[key] ??= []).push(value);
  const split = Object.entries(phases)
    .map(([key, values]) => `${key} ${percentile(values, 50).toFixed(1)}`)
    .join(', ');
  const coldMs = cold.map((entry) => entry.startLatencyMs);
  console.log(`-- ${run.name} (${run.root})`);
  console.log(`cold start (no executor, no home): ${fmt(coldMs)}   goal p50 ≤ 50 ms, p99 ≤ 100 ms`);
  console.log(`  cold split, p50 of each phase (ms): ${split}`);
  console.log(`warm start (executor running):     ${fmt(warm)}   goal p50 ≤ 10 ms`);
  console.log(
    `idle executor RSS: p50 ${percentile(rss, 50).toFixed(0)} MiB, max ${Math.max(...rss).toFixed(0)} MiB (n=${rss.length} still running of ${run.pids.length})   goal ≤ 100 MiB`,
  );
  return { cold: percentile(coldMs, 50), warm: percentile(warm, 50), rss: percentile(rss, 50) };
}

const users = [];
const runs = [];
try {
  for (const [index, target] of targets.entries()) runs.push(await start(target, index));
  for (let i = 0; i < count; i++) {
    for (const [index, run] of runs.entries()) {
      const name = `stcold${tag}u${i}x${index}`;
      // -M: no home directory, so the agent creates it from /etc/skel as part of the cold start.
      execFileSync('useradd', ['-M', '-U', '-s', '/bin/bash', name]);
      users.push(name);
      await call(run.steward, run.admin, 'POST', '/api/users', { name, password: 'bench-user-password' });
      await call(run.steward, run.admin, 'PUT', '/api/spaces/bench/members', {
        kind: 'user',
        name,
        role: 'viewer',
      });
      const token = await login(run.steward, name, 'bench-user-password');
      const cold = await runOne(run.steward, token);
      await runOne(run.steward, token); // warm
      run.pids.push(cold.executor.pid);
    }
    // Let the pool replace the pre-started executor each user took, as it would between arrivals.
    await new Promise((resolve) => setTimeout(resolve, gapMs));
  }
  await new Promise((resolve) => setTimeout(resolve, 500));
  console.log(
    `machine: ${machine()}; load average ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
  );
  console.log(
    `users: ${count} per checkout, ${gapMs} ms between users; offer at the agent → first step running`,
  );
  const figures = runs.map(report);
  if (figures.length === 2) {
    const [a, b] = figures;
    console.log(
      `ratio this/${runs[1].name}: cold p50 ${(a.cold / b.cold).toFixed(2)}×, warm p50 ${(a.warm / b.warm).toFixed(2)}×, idle RSS ${(a.rss / b.rss).toFixed(2)}×`,
    );
  }
} finally {
  for (const run of runs) await run.steward.stop().catch(() => {});
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
