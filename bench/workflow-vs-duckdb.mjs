// A 4-step SQL workflow over N rows through Steward (submit → done over REST, `steward up`) next to the honest
// limit: the same statements in a WARM, in-memory DuckDB (one process kept across rounds, warm-duckdb.mjs,
// same @duckdb/node-api, same threads and memory_limit as the executor, a fresh `ATTACH ':memory:'` per
// round as the executor does per job, the same CTAS with the same bound params, independent steps side by
// side as the engine runs them, each output COPYed to Parquet and CSV as soon as its table exists, with the
// same options Steward uses; as root in a cgroup like an executor's). Before each timed run every side's
// processes are idle. Each round runs every side once, in an order that turns by one each round (the side
// run second was slower whatever its build); the first round is a warm-up, checked to produce the same
// outputs on both sides, and not counted.
//
// Usage: node bench/workflow-vs-duckdb.mjs [rows=5000000] [rounds=7] [--short] [--compare=<checkout>]
//   --short               200,000 rows, 3 rounds (what `npm run bench` runs)
//   --compare=<checkout>  also runs another checkout's build (its bin/steward.js and dist/) in the same
//                         rounds, e.g. the commit before a change: before/after side by side
//   STEWARD_BENCH_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" profiles `steward up` (server and agent).
import { Buffer } from 'node:buffer';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg, totalmem } from 'node:os';
import { fork } from 'node:child_process';
import path from 'node:path';
import { DOUBLE, DuckDBInstance, VARCHAR } from '@duckdb/node-api';
import {
  machine,
  percentile,
  repoRoot,
  runAndTime,
  settled,
  startSteward,
  tempDir,
  ownCpuMs,
  treeCpuMs,
} from './harness.mjs';

const flags = process.argv.slice(2).filter((a) => a.startsWith('--'));
const positional = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const short = flags.includes('--short');
const compare = flags.find((f) => f.startsWith('--compare='))?.slice('--compare='.length);
const rows = Number(positional[0] ?? (short ? 200_000 : 5_000_000));
const rounds = Number(positional[1] ?? (short ? 3 : 7));
const threads = 2;
const memoryLimit = '4GiB';
const nodeArgs = (process.env.STEWARD_BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean);

// Amounts are DECIMAL and the top users are ordered by user id among equal totals, so that both sides'
// outputs are exactly comparable: floating-point sums depend on the order a parallel aggregation adds in,
// and the 1000th place would otherwise fall among equal totals differently from run to run.
const steps = [
  ['events', `SELECT * FROM read_parquet($data)`, { data: VARCHAR }],
  [
    'daily',
    `SELECT day, category, count(*) AS n, sum(amount) AS total FROM events GROUP BY day, category`,
    {},
  ],
  [
    'top_users',
    `SELECT user_id, sum(amount) AS total, count(*) AS n FROM events WHERE amount > $min_amount GROUP BY user_id ORDER BY total DESC, user_id LIMIT 1000`,
    { min_amount: DOUBLE },
  ],
  [
    'by_category',
    `SELECT category, sum(n) AS n, round(sum(total), 2) AS total FROM daily GROUP BY category ORDER BY category`,
    {},
  ],
];
const outputs = ['daily', 'top_users', 'by_category'];

const dataDir = tempDir('wf');
const dataFile = path.join(dataDir, 'events.parquet');
const params = { data: dataFile, min_amount: 10 };

const duck = await DuckDBInstance.create(':memory:', {
  threads: String(threads),
  memory_limit: memoryLimit,
  temp_directory: path.join(dataDir, 'duckdb-tmp'),
  autoinstall_known_extensions: 'false',
});
{
  const t = performance.now();
  const c = await duck.connect();
  await c.run(`COPY (SELECT i AS id, i % 100000 AS user_id, 'cat' || (i % 20) AS category,
                 CAST(round(random() * 100, 2) AS DECIMAL(10, 2)) AS amount, DATE '2026-01-01' + CAST(i % 365 AS INTEGER) AS day
               FROM range(${rows}) t(i)) TO '${dataFile}' (FORMAT parquet)`);
  c.closeSync();
  console.log(`generated ${rows.toLocaleString()} rows in ${((performance.now() - t) / 1000).toFixed(1)} s`);
}

/**
 * The limit: a warm DuckDB process doing what the executor's engine does for this workflow and nothing else
 * (warm-duckdb.mjs). As root it runs in a cgroup made by the agent's own code with an executor's default
 * limits (CPU quota of all cores, half the RAM), as the executor does: on a shared machine a cgroup competes
 * for CPU as one entity, and a baseline outside one would get a bigger share than the executor it is
 * compared with.
 */
async function startWarmDuckDB() {
  const child = fork(path.join(repoRoot, 'bench/warm-duckdb.mjs'), [], { stdio: 'inherit' });
  const replies = [];
  const waiting = [];
  child.on('message', (reply) => (waiting.length ? waiting.shift()(reply) : replies.push(reply)));
  const ask = (message) =>
    new Promise((resolve, reject) => {
      const settle = (reply) => (reply.error ? reject(new Error(reply.error)) : resolve(reply));
      child.send(message);
      if (replies.length) settle(replies.shift());
      else waiting.push(settle);
    });
  let cgroup;
  let support;
  let placement = 'no cgroup (not root)';
  if (process.getuid?.() === 0) {
    const cgroups = await import(path.join(repoRoot, 'dist/agent/cgroups.js'));
    support = await cgroups.detectCgroups(`bench-duckdb-${process.pid}`, 'a');
    if (support.version !== 'none') {
      const limits = { memoryBytes: Math.floor(totalmem() / 2), cpus: availableParallelism(), pids: 1024 };
      cgroup = await cgroups.ExecutorCgroup.create(support, `exec-${child.pid}`, limits);
      await cgroup.join(child.pid);
      placement = `a cgroup ${support.version} like an executor's (${limits.cpus} CPUs, ${(limits.memoryBytes / 1024 ** 3).toFixed(0)} GiB)`;
    } else placement = `no cgroup (${support.detail})`;
  }
  await ask({ settings: { threads, memoryLimit, tempDir: path.join(dataDir, 'duckdb-tmp') } });
  return {
    placement,
    pid: child.pid,
    run: (outDir) => ask({ run: { steps: workerSteps, outputs, params, outDir } }),
    async stop() {
      child.send({ exit: true });
      await new Promise((resolve) => child.once('exit', resolve));
      if (cgroup) {
        await cgroup.remove();
        const cgroups = await import(path.join(repoRoot, 'dist/agent/cgroups.js'));
        await cgroups.removeCgroupParents(support);
      }
    },
  };
}
// Each step with the steps it reads: what the engine infers from the SQL, so that the warm side runs them in
// the same order and side by side where the engine does (daily and top_users at once).
const workerSteps = steps.map(([id, sql, types]) => [
  id,
  sql,
  Object.fromEntries(Object.keys(types).map((key) => [key, types[key] === DOUBLE ? 'DOUBLE' : 'VARCHAR'])),
  steps.map(([other]) => other).filter((other) => other !== id && new RegExp(`\\b${other}\\b`).test(sql)),
]);

const workflow = [
  'name: bench-aggregate',
  'params:',
  '  data: {type: string, required: true}',
  '  min_amount: {type: number, default: 10}',
  'steps:',
  ...steps.flatMap(([id, sql]) => [`  - id: ${id}`, `    sql: "${sql.replace(/"/g, '\\"')}"`]),
  `outputs: [${outputs.join(', ')}]`,
].join('\n');

/** Sorted CSV lines and Parquet row count + codecs: the same outputs whichever side made them. */
async function describeOutputs(read) {
  const c = await duck.connect();
  const described = {};
  for (const id of outputs) {
    const { csv, parquet } = await read(id);
    const lines = csv.toString('utf8').trimEnd().split('\n');
    const header = lines.shift();
    const pq = path.join(dataDir, `check-${id}.parquet`);
    writeFileSync(pq, parquet);
    const meta = await c.runAndReadAll(
      `SELECT sum(row_group_num_rows)::BIGINT, string_agg(DISTINCT compression) FROM (SELECT DISTINCT row_group_id, row_group_num_rows, compression FROM parquet_metadata('${pq}'))`,
    );
    described[id] = {
      header,
      lines: lines.sort().join('\n'),
      parquet: meta.getRows()[0].map(String).join(' '),
    };
  }
  c.closeSync();
  return described;
}

/**
 * Sorted CSV lines equal field by field; numbers within 1e-9 relative: a floating-point sum depends on the
 * order a parallel aggregation adds in, which differs from run to run on either side.
 */
function sameLines(a, b) {
  const [la, lb] = [a.split('\n'), b.split('\n')];
  if (la.length !== lb.length) return false;
  return la.every((line, i) => {
    const [fa, fb] = [line.split(','), lb[i].split(',')];
    return (
      fa.length === fb.length &&
      fa.every((x, j) => {
        const [na, nb] = [Number(x), Number(fb[j])];
        if (x === fb[j]) return true;
        return (
          Number.isFinite(na) && Number.isFinite(nb) && Math.abs(na - nb) <= 1e-9 * Math.max(1, Math.abs(na))
        );
      })
    );
  });
}

async function checkSameOutputs(steward, jobId, bareDir) {
  const fromSteward = await describeOutputs(async (id) => {
    const get = async (file) => {
      const response = await fetch(`${steward.url}/api/jobs/${jobId}/results/${file}`, {
        headers: { authorization: `Bearer ${steward.token}` },
      });
      if (!response.ok) throw new Error(`download ${file}: ${response.status}`);
      return Buffer.from(await response.arrayBuffer());
    };
    return { csv: await get(`${id}.csv`), parquet: await get(`${id}.parquet`) };
  });
  const fromBare = await describeOutputs(async (id) => ({
    csv: readFileSync(path.join(bareDir, `${id}.csv`)),
    parquet: readFileSync(path.join(bareDir, `${id}.parquet`)),
  }));
  for (const id of outputs) {
    const [a, b] = [fromSteward[id], fromBare[id]];
    if (a.header !== b.header || !sameLines(a.lines, b.lines) || a.parquet !== b.parquet)
      throw new Error(
        `output ${id} differs: steward ${JSON.stringify(a.parquet)}, warm duckdb ${JSON.stringify(b.parquet)}`,
      );
  }
  console.log(
    `outputs checked: the same rows (CSV, sorted), Parquet row counts and codecs on both sides (${outputs.map((id) => `${id} ${fromBare[id].parquet}`).join('; ')})`,
  );
}

/** One config per side: two `steward up` on one host need agent ids of their own. */
function configFile(index) {
  const file = path.join(dataDir, `steward-${index}.yaml`);
  writeFileSync(
    file,
    `agent:\n  id: bench-${process.pid}-${index}\n  duckdb:\n    threads: ${threads}\n    memoryLimit: ${memoryLimit}\n`,
  );
  return file;
}
const sides = [{ label: 'steward', root: repoRoot }];
if (compare)
  sides.unshift({ label: `steward (${path.basename(path.resolve(compare))})`, root: path.resolve(compare) });
const started = [];
const warm = await startWarmDuckDB();
try {
  for (const [index, side] of sides.entries()) {
    side.steward = await startSteward({ config: configFile(index), root: side.root, nodeArgs });
    started.push(side.steward);
    await side.steward.api('POST', '/api/workflows', { source: workflow, fileName: 'bench.yaml' });
    side.times = [];
    side.splits = [];
    side.cpu = [];
    side.serverCpu = [];
  }
  const bareTimes = [];
  const bareSplits = [];
  const bareCpu = [];
  const allPids = () => [...started.map((s) => s.pid), warm.pid];
  const loads = [];
  // Each round runs every side once, the order turning by one each round: the side that ran right after
  // another was measurably slower (the same build ran 0.72 s first and 0.79 s second, 15 rounds each way), so
  // a fixed order favoured whichever went first.
  const runSide = async (side, round) => {
    await settled(allPids());
    const cpuBefore = treeCpuMs([side.steward.pid]);
    const serverCpuBefore = ownCpuMs(side.steward.pid);
    const submitted = Date.now();
    const { job, done } = await runAndTime(side.steward, {
      workflow: 'bench-aggregate',
      params: { data: dataFile },
    });
    if (job.state !== 'succeeded')
      throw new Error(`job ${job.id} ${job.state}: ${JSON.stringify(job.error)}`);
    if (round > 0) {
      side.times.push(done);
      // Where the time went, from the job's step records: submit → first step, the steps, the rest.
      const detail = await side.steward.api('GET', `/api/jobs/${job.id}`);
      const first = Math.min(...detail.steps.map((step) => Date.parse(step.startedAt))) - submitted;
      const last = Math.max(...detail.steps.map((step) => Date.parse(step.finishedAt))) - submitted;
      side.splits.push({ start: first, steps: last - first, end: done - last });
    }
    // CPU of the server, agent and executor for the job, its cleanup included (it is done once they are
    // idle again): unlike wall-clock time, it does not grow with other work on a shared machine.
    await settled(allPids());
    if (round > 0) {
      side.cpu.push(treeCpuMs([side.steward.pid]) - cpuBefore);
      side.serverCpu.push(ownCpuMs(side.steward.pid) - serverCpuBefore);
    }
    side.lastJob = job.id;
    return `${side.label} ${(done / 1000).toFixed(3)} s`;
  };
  const runWarm = async (round, work) => {
    await settled(allPids());
    const warmCpuBefore = treeCpuMs([warm.pid]);
    const { ms, ctasMs } = await warm.run(work);
    const warmCpu = treeCpuMs([warm.pid]) - warmCpuBefore;
    if (round > 0) {
      bareTimes.push(ms);
      bareSplits.push({ ctas: ctasMs, copy: ms - ctasMs });
      bareCpu.push(warmCpu);
    }
    return `warm duckdb ${(ms / 1000).toFixed(3)} s`;
  };
  for (let round = 0; round <= rounds; round++) {
    const work = tempDir('bare');
    const runners = [
      ...sides.map((side) => ({ label: side.label, run: () => runSide(side, round) })),
      { label: 'warm duckdb', run: () => runWarm(round, work) },
    ];
    const turned = runners.map((_, i) => runners[(i + round) % runners.length]);
    const done = new Map();
    for (const runner of turned) done.set(runner.label, await runner.run());
    // Printed in a fixed order, the order run after it.
    const line = runners.map((runner) => done.get(runner.label));
    const order = `(order: ${turned.map((runner) => runner.label).join(' → ')})`;
    if (round === 0) for (const side of sides) await checkSameOutputs(side.steward, side.lastJob, work);
    rmSync(work, { recursive: true, force: true });
    loads.push(loadavg()[0]);
    console.log(`${round === 0 ? 'warm-up' : `round ${round}`}: ${line.join(', ')} ${order}`);
  }
  const b = percentile(bareTimes, 50);
  console.log(
    `\nworkflow over ${rows.toLocaleString()} rows, ${steps.length} steps, ${outputs.length} outputs (parquet + csv), threads=${threads}, memory_limit=${memoryLimit}`,
  );
  console.log(`warm duckdb: one process for all rounds, in ${warm.placement}`);
  console.log(
    `machine: ${machine()}; load average during the rounds ${Math.min(...loads).toFixed(2)}–${Math.max(...loads).toFixed(2)}`,
  );
  const figures = [`warm duckdb ${(b / 1000).toFixed(3)} s`];
  for (const side of sides)
    figures.push(
      `${side.label} ${(percentile(side.times, 50) / 1000).toFixed(3)} s (${(percentile(side.times, 50) / b).toFixed(3)}×)`,
    );
  console.log(`median of ${rounds}: ${figures.join(' | ')}; goal ≤ 1.15× warm duckdb`);
  const cpu = percentile(bareCpu, 50);
  const cpuFigures = [`warm duckdb ${cpu.toFixed(0)} ms`];
  for (const side of sides) {
    const own = percentile(side.cpu, 50);
    const server = percentile(side.serverCpu, 50);
    cpuFigures.push(
      `${side.label} ${own.toFixed(0)} ms (${(own / cpu).toFixed(3)}×; \`steward up\` ${server.toFixed(0)}, executor ${(own - server).toFixed(0)})`,
    );
  }
  console.log(`CPU per run, median: ${cpuFigures.join(' | ')}`);
  const median = (list, key) =>
    `${percentile(
      list.map((split) => split[key]),
      50,
    ).toFixed(0)}`;
  console.log(
    `medians of the parts (ms): warm duckdb: CTAS ${median(bareSplits, 'ctas')}, COPY ${median(bareSplits, 'copy')}`,
  );
  for (const side of sides)
    console.log(
      `  ${side.label}: submit → first step ${median(side.splits, 'start')}, steps (CTAS) ${median(side.splits, 'steps')}, last step → done (COPY, uploads, end) ${median(side.splits, 'end')}`,
    );
} finally {
  for (const steward of started) await steward.stop();
  await warm.stop();
  duck.closeSync();
  rmSync(dataDir, { recursive: true, force: true });
}
