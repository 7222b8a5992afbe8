// Many users on one agent (issue 18, goal 4), as root, through a real `steward up` with the default agent
// config: users take turns, one no-op job at a time.
//   (a) one user alone, then N distinct users (default 200), then the users whose executor is still
//       resident come back: their submit→done p50 next to the lone user's (goal ≤ 1.5×), and how many idle
//       executors the default idle budget keeps;
//   (b) users whose executor was evicted, and brand-new users, arriving --gap ms apart: cold start at the agent
//       (offer → first step running, goal p50 ≤ 50 ms) and whether a ready spare served them;
//   (c) the agent's process tree: peak resident memory, and the idle executors' and spares' measured memory
//       (the agent's own figure) against the idle budget;
//   (d) open descriptors and active handles/timers of the agent process (SIGUSR2 → `agent.resources`) before
//       and after the churn.
// Usage: sudo node bench/many-users.mjs [users=200] [--new=<brand-new users, 20>] [--gap=<ms, 1000>]
//        [--churn=<passes over every user after (b), 1>]
//        [--short] (30 users, 8 new, and a 1 GiB idle budget so that executors are evicted: what
//        `npm run bench` runs; the full run uses the default config)
// (d) is measured from the end of the first pass (the idle budget full) to the end of the churn passes, so
// both snapshots hold about as many executors; each pass over every user in turn evicts and starts an
// executor per job once users outnumber what the budget keeps (with a 30 min idle timeout, an hour of
// steady use turns the resident set over about twice).
// OS users are named stmu<tag>…; they are deleted at the end, on SIGINT/SIGTERM too, and leftovers of an
// interrupted run are deleted at the next start.
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { clearInterval, setInterval } from 'node:timers';
import path from 'node:path';
import { machine, percentile, runAndTime, startSteward, tempDir } from './harness.mjs';

if (process.getuid() !== 0) {
  console.error('many-users.mjs creates OS users and per-user executors: run it as root');
  process.exit(2);
}
const short = process.argv.includes('--short');
const option = (name, fallback) =>
  Number(process.argv.find((arg) => arg.startsWith(`--${name}=`))?.slice(name.length + 3) ?? fallback);
const positional = process.argv.slice(2).filter((arg) => !arg.startsWith('--'));
const count = Number(positional[0] ?? (short ? 30 : 200));
const fresh = option('new', short ? 8 : 20);
const gapMs = option('gap', 1000);
const churnPasses = option('churn', 1);
const PREFIX = 'stmu';
const tag = `${process.pid}`.slice(-5);
const workflow = 'name: noop\nsteps:\n  - id: hi\n    shell: "true"\n';
const MiB = 1024 ** 2;

// --- OS users: fast to create, always deleted -----------------------------------------------------------
const created = [];
function deleteUsers(names) {
  for (const name of names) {
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
}
function leftovers() {
  return readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .map((line) => line.split(':')[0])
    .filter((name) => /^stmu\d+u\d+$/.test(name));
}
function addUser(name) {
  // -M: no home, so the agent makes it from /etc/skel on the user's first job, as for a real new user.
  execFileSync('useradd', ['-M', '-U', '-s', '/bin/bash', name]);
  created.push(name);
}
let steward;
let scratch;
/** Each job's id by its submit→done time (to find its `job.first-step` record). */
const jobIds = new Map();
let cleaning;
/** Stops `steward up` and deletes the bench's users, once; every caller waits for the same run. */
function cleanup() {
  cleaning ??= (async () => {
    await steward?.stop().catch(() => {});
    deleteUsers(created.splice(0));
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  })();
  return cleaning;
}
for (const signal of ['SIGINT', 'SIGTERM'])
  process.once(signal, () => {
    console.error(`\n${signal}: deleting the bench's users`);
    void cleanup().finally(() => process.exit(130));
  });

// --- measuring -------------------------------------------------------------------------------------------
function treeRssBytes(root) {
  const parent = new Map();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      parent.set(Number(entry), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      /* exited meanwhile */
    }
  }
  const tree = new Set([root]);
  for (let grew = true; grew;) {
    grew = false;
    for (const [pid, ppid] of parent)
      if (!tree.has(pid) && tree.has(ppid)) {
        tree.add(pid);
        grew = true;
      }
  }
  let total = 0;
  for (const pid of tree) {
    try {
      total += Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) * 1024;
    } catch {
      /* exited meanwhile */
    }
  }
  return total;
}

function logRecords(event) {
  return readFileSync(path.join(steward.dataDir, 'logs', 'steward.log'), 'utf8')
    .split('\n')
    .flatMap((line) => {
      try {
        const record = JSON.parse(line);
        return record.event === event ? [record] : [];
      } catch {
        return []; // not a record, or one still being written
      }
    });
}

/** The agent's own count of descriptors, handles and timers, and its idle memory (SIGUSR2). */
async function resources() {
  const before = logRecords('agent.resources').length;
  process.kill(steward.pid, 'SIGUSR2');
  for (;;) {
    const records = logRecords('agent.resources');
    if (records.length > before) return records.at(-1);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

// --- REST ------------------------------------------------------------------------------------------------
async function call(token, method, route, body) {
  const response = await fetch(steward.url + route, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${route}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : undefined;
}
async function login(user, password) {
  return (await call(undefined, 'POST', '/api/auth/login', { user, password })).token;
}
/** One no-op job as `user`: submit→done (client side, over the job's SSE stream). */
async function runJob(user) {
  const client = {
    url: steward.url,
    token: user.token,
    api: (method, route, body) => call(user.token, method, route, body),
  };
  const { job, done } = await runAndTime(client, { workflow: 'bench/noop' });
  if (job.state !== 'succeeded') throw new Error(`${user.name}: job ${job.id} ${job.state}`);
  jobIds.set(done, job.id ?? job.jobId);
  return done;
}

async function residentUsers(admin) {
  // Heartbeats list each agent's executors; wait for one sent after the last job.
  const since = Date.now();
  for (;;) {
    const { agents } = await call(admin, 'GET', '/api/agents');
    const agent = agents.find((entry) => Date.parse(entry.lastSeen) > since);
    if (agent) return new Set(agent.executors.map((executor) => executor.user));
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

const fmt = (values) => (values.length ? `${percentile(values, 50).toFixed(1)} ms` : '—');
const mib = (bytes) => `${(bytes / MiB).toFixed(0)} MiB`;

try {
  const stale = leftovers();
  if (stale.length) {
    console.log(`deleting ${stale.length} users left by an interrupted run`);
    deleteUsers(stale);
  }
  scratch = tempDir('many');
  const config = path.join(scratch, 'steward.yaml');
  writeFileSync(config, short ? 'agent:\n  capacity: { idleMemory: 1GiB }\n' : 'agent: {}\n');
  steward = await startSteward({ config });
  const admin = await login('admin', 'bench-admin-password');
  await call(admin, 'POST', '/api/spaces', { name: 'bench' });
  await call(admin, 'PUT', '/api/spaces/bench/members', { kind: 'user', name: 'admin', role: 'editor' });
  await call(admin, 'POST', '/api/spaces/bench/workflows', { source: workflow, fileName: 'noop.yaml' });
  let peakTree = 0;
  let peakIdle = 0;
  const sampler = setInterval(() => (peakTree = Math.max(peakTree, treeRssBytes(steward.pid))), 500);
  // OS accounts one by one (useradd locks /etc/passwd), server accounts eight at a time (password hashing).
  const newUsers = async (n, from) => {
    const names = [];
    for (let i = from; i < from + n; i++) {
      names.push(`${PREFIX}${tag}u${i}`);
      addUser(names.at(-1));
    }
    const users = [];
    for (let i = 0; i < names.length; i += 8)
      users.push(
        ...(await Promise.all(
          names.slice(i, i + 8).map(async (name) => {
            await call(admin, 'POST', '/api/users', { name, password: 'bench-user-password' });
            await call(admin, 'PUT', '/api/spaces/bench/members', { kind: 'user', name, role: 'viewer' });
            return { name, token: await login(name, 'bench-user-password') };
          }),
        )),
      );
    return users;
  };

  // (a) one user alone, warm: the reference.
  const [lone] = await newUsers(1, count + fresh);
  await runJob(lone);
  const aloneMs = [];
  for (let i = 0; i < 30; i++) aloneMs.push(await runJob(lone));
  const users = await newUsers(count, 0);
  const firstPass = [];
  for (const user of users) firstPass.push(await runJob(user));
  const afterFirst = await resources();
  const atStart = afterFirst;
  peakIdle = Math.max(peakIdle, afterFirst.idle?.residentBytes ?? 0);
  const resident = await residentUsers(admin);
  // Most recently used first: each job grows its executor a little, and the budget, when it runs over,
  // takes the least recently used — so the round ends with the users most at risk, not starts with them.
  const returning = users.filter((user) => resident.has(user.name)).reverse();
  const returningMs = new Map();
  for (const user of returning) returningMs.set(user.name, await runJob(user));
  const afterReturn = await resources();
  peakIdle = Math.max(peakIdle, afterReturn.idle?.residentBytes ?? 0);

  // (b) evicted users and brand-new users, taking turns, --gap ms apart.
  const evicted = users.filter((user) => !resident.has(user.name)).slice(0, fresh);
  const brandNew = await newUsers(fresh, count);
  // Each user's job in (b): the churn below may start their executor cold again, back to back with other
  // users' jobs, and that start is not the one (b) measures.
  const partBJob = new Map();
  for (let i = 0; i < Math.max(evicted.length, brandNew.length); i++)
    for (const user of [evicted[i], brandNew[i]]) {
      if (!user) continue;
      await new Promise((resolve) => setTimeout(resolve, gapMs));
      partBJob.set(user.name, jobIds.get(await runJob(user)));
    }
  // Churn: every user again, in the same order (the least recently used first: each is evicted by then when
  // users outnumber what the budget keeps).
  const churnStart = Date.now();
  for (let pass = 0; pass < churnPasses; pass++) for (const user of users) await runJob(user);
  const churnSeconds = (Date.now() - churnStart) / 1000;
  await new Promise((resolve) => setTimeout(resolve, 300));
  const atEnd = await resources();
  peakIdle = Math.max(peakIdle, atEnd.idle?.residentBytes ?? 0);
  clearInterval(sampler);

  const starts = logRecords('job.first-step');
  const startOf = new Map(starts.map((entry) => [entry.jobId, entry]));
  // A user's first cold start (the first pass), and the cold start of their job in (b).
  const firstColdOf = new Map(
    starts
      .filter((entry) => entry.coldStart)
      .reverse()
      .map((entry) => [entry.user, entry]),
  );
  const coldB = (names) =>
    names.map((name) => startOf.get(partBJob.get(name))).filter((entry) => entry?.coldStart);
  const evictedCold = coldB(evicted.map((user) => user.name));
  const newCold = coldB(brandNew.map((user) => user.name));
  const origins = {};
  for (const entry of [...evictedCold, ...newCold])
    origins[entry.executorOrigin ?? '?'] = (origins[entry.executorOrigin ?? '?'] ?? 0) + 1;
  const evictions = logRecords('executor.exited').filter((entry) => /evicted/.test(entry.cause ?? '')).length;

  const alone = percentile(aloneMs, 50);
  const back = [...returningMs.values()];
  const backCold = back.filter((ms) => startOf.get(jobIds.get(ms))?.coldStart).length;
  const side = Math.min(10, Math.floor(users.length / 2));
  const firstUsers = users.slice(0, side).map((user) => user.name);
  const lastUsers = users.slice(-side).map((user) => user.name);
  const passOf = (names) => names.map((name) => firstPass[users.findIndex((user) => user.name === name)]);
  const backOf = (names) => names.map((name) => returningMs.get(name)).filter((value) => value !== undefined);
  const coldAt = (names) =>
    names.map((name) => firstColdOf.get(name)?.startLatencyMs).filter((value) => value !== undefined);
  const budget = atEnd.idle?.budgetBytes ?? 0;

  console.log(
    `machine: ${machine()}; load average ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
  );
  console.log(
    `one agent, ${short ? 'default config but a 1 GiB idle budget (--short)' : 'default config'}; ${count} users, then ${returning.length} returning, then ${evictedCold.length} evicted + ${newCold.length} brand-new users ${gapMs} ms apart`,
  );
  console.log('');
  console.log(`(a) one user alone, no-op submit→done p50:        ${fmt(aloneMs)}`);
  console.log(
    `    returning users (executor resident) p50:      ${fmt(back)}  = ${(percentile(back, 50) / alone).toFixed(2)}× alone   goal ≤ 1.5×; ${backCold} of ${back.length} found their executor stopped by then`,
  );
  console.log(
    `    idle executors the default budget kept:       ${resident.size} (agent: ${afterFirst.idle?.idle ?? '?'} idle + ${afterFirst.idle?.spares ?? '?'} spares, ${mib(afterFirst.idle?.residentBytes ?? 0)} measured), ${evictions} evicted over the run`,
  );
  console.log(
    `(b) cold start at the agent, evicted users p50:   ${fmt(evictedCold.map((entry) => entry.startLatencyMs))}   goal ≤ 50 ms`,
  );
  console.log(
    `    cold start at the agent, brand-new users p50: ${fmt(newCold.map((entry) => entry.startLatencyMs))}   goal ≤ 50 ms`,
  );
  console.log(`    executors they got: ${JSON.stringify(origins)} (spare = ready, taken at once)`);
  console.log(
    `(c) idle executors + spares, peak of the agent's measure: ${mib(peakIdle)} of the ${mib(budget)} idle budget   goal ≤ budget`,
  );
  console.log(
    `    peak process tree (server + agent + executors, running ones included): ${mib(peakTree)}; budget + one running executor per slot at its limit would allow more`,
  );
  const held = (report) =>
    `${report.idle?.idle ?? '?'} idle executors + ${report.idle?.spares ?? '?'} spares`;
  console.log(
    `(d) churn: returning, evicted and new users, then ${churnPasses} pass(es) over all ${count} users (${churnSeconds.toFixed(0)} s), ${evictions} evictions in all`,
  );
  console.log(
    `    agent process fds: ${atStart.fds} (${held(atStart)}) → ${atEnd.fds} (${held(atEnd)})   goal: no growth`,
  );
  // Which kinds of descriptor changed (builds before the breakdown report none).
  const kinds = new Set([...Object.keys(atStart.fdKinds ?? {}), ...Object.keys(atEnd.fdKinds ?? {})]);
  const changed = [...kinds]
    .map((kind) => [kind, atStart.fdKinds?.[kind] ?? 0, atEnd.fdKinds?.[kind] ?? 0])
    .filter(([, before, after]) => before !== after)
    .map(([kind, before, after]) => `${kind} ${before} → ${after}`);
  if (changed.length) console.log(`    fds that changed, by kind: ${changed.join(', ')}`);
  if (changed.some((entry) => entry.startsWith('file:') && entry.includes('/logs/')))
    console.log(
      '    (the agent keeps the executor log files of the 64 users who wrote last open: they grow to that, then stay)',
    );
  console.log(
    `    active handles/timers: ${JSON.stringify(atStart.active)} → ${JSON.stringify(atEnd.active)}`,
  );
  console.log('');
  console.log(`first ${side} users vs last ${side} users, side by side (p50):`);
  console.log(
    `  first pass (all cold) submit→done:  ${fmt(passOf(firstUsers))}  |  ${fmt(passOf(lastUsers))}`,
  );
  console.log(
    `  first pass cold start at the agent: ${fmt(coldAt(firstUsers))}  |  ${fmt(coldAt(lastUsers))}`,
  );
  console.log(
    `  returning submit→done:              ${fmt(backOf(firstUsers))} (n=${backOf(firstUsers).length})  |  ${fmt(backOf(lastUsers))} (n=${backOf(lastUsers).length})`,
  );
} finally {
  await cleanup();
}
