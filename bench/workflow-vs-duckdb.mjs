// Runs the same multi-step workflow over N rows through Steward (submit → done, end to end) and as the same
// SQL in a bare DuckDB script (a fresh Node process, same memory_limit/threads/temp_directory, same outputs),
// alternating, and prints both times and the ratio. Usage: node bench/workflow-vs-duckdb.mjs [rows] [rounds]
import { execFileSync } from 'node:child_process';
import { writeFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { machine, percentile, repoRoot, runAndTime, startSteward, tempDir } from './harness.mjs';

const rows = Number(process.argv[2] ?? 10_000_000);
const rounds = Number(process.argv[3] ?? 3);
const threads = 2;
const memoryLimit = '4GiB';

const steps = [
  ['events', `SELECT * FROM read_parquet($data)`],
  ['daily', `SELECT day, category, count(*) AS n, sum(amount) AS total FROM events GROUP BY day, category`],
  [
    'top_users',
    `SELECT user_id, sum(amount) AS total, count(*) AS n FROM events WHERE amount > $min_amount GROUP BY user_id ORDER BY total DESC LIMIT 1000`,
  ],
  [
    'by_category',
    `SELECT category, sum(n) AS n, round(sum(total), 2) AS total FROM daily GROUP BY category ORDER BY category`,
  ],
];
const outputs = ['daily', 'top_users', 'by_category'];

const dataDir = tempDir('wf');
const dataFile = path.join(dataDir, 'events.parquet');
{
  const t = performance.now();
  const db = await DuckDBInstance.create(':memory:');
  const c = await db.connect();
  await c.run(`COPY (SELECT i AS id, i % 100000 AS user_id, 'cat' || (i % 20) AS category,
                 round(random() * 100, 2) AS amount, DATE '2026-01-01' + CAST(i % 365 AS INTEGER) AS day
               FROM range(${rows}) t(i)) TO '${dataFile}' (FORMAT parquet)`);
  db.closeSync();
  console.log(`generated ${rows.toLocaleString()} rows in ${((performance.now() - t) / 1000).toFixed(1)} s`);
}

const workflow = [
  'name: bench-aggregate',
  'params:',
  '  data: {type: string, required: true}',
  '  min_amount: {type: number, default: 10}',
  'steps:',
  ...steps.flatMap(([id, sql]) => [`  - id: ${id}`, `    sql: "${sql.replace(/"/g, '\\"')}"`]),
  `outputs: [${outputs.join(', ')}]`,
].join('\n');

const bareScript = path.join(dataDir, 'bare.mjs');
writeFileSync(
  bareScript,
  `import { DuckDBInstance } from '${path.join(repoRoot, 'node_modules/@duckdb/node-api/lib/index.js')}';
const dir = process.argv[2];
const db = await DuckDBInstance.create(dir + '/job.duckdb', { threads: '${threads}', memory_limit: '${memoryLimit}', temp_directory: dir + '/tmp' });
const c = await db.connect();
const params = { data: ${JSON.stringify(dataFile)}, min_amount: 10 };
for (const [id, sql] of ${JSON.stringify(steps)}) {
  const used = Object.fromEntries(Object.entries(params).filter(([k]) => sql.includes('$' + k)));
  await c.run('CREATE TABLE "' + id + '" AS ' + sql, used);
}
for (const id of ${JSON.stringify(outputs)}) {
  await c.run('COPY "' + id + '" TO \\'' + dir + '/' + id + '.parquet\\' (FORMAT parquet)');
  await c.run('COPY "' + id + '" TO \\'' + dir + '/' + id + '.csv\\' (FORMAT csv, HEADER)');
}
db.closeSync();
`,
);

const configFile = path.join(dataDir, 'steward.yaml');
writeFileSync(configFile, `agent:\n  duckdb:\n    threads: ${threads}\n    memoryLimit: ${memoryLimit}\n`);
const steward = await startSteward({ config: configFile });
try {
  await steward.api('POST', '/api/workflows', { source: workflow, fileName: 'bench.yaml' });
  const stewardTimes = [];
  const bareTimes = [];
  for (let round = 0; round < rounds; round++) {
    const { job, done } = await runAndTime(steward, {
      workflow: 'bench-aggregate',
      params: { data: dataFile },
    });
    if (job.state !== 'succeeded')
      throw new Error(`job ${job.id} ${job.state}: ${JSON.stringify(job.error)}`);
    stewardTimes.push(done);
    const work = tempDir('bare');
    const t = performance.now();
    execFileSync(process.execPath, [bareScript, work], { stdio: 'inherit' });
    bareTimes.push(performance.now() - t);
    rmSync(work, { recursive: true, force: true });
    console.log(
      `round ${round + 1}: steward ${(stewardTimes.at(-1) / 1000).toFixed(2)} s, bare duckdb ${(bareTimes.at(-1) / 1000).toFixed(2)} s`,
    );
  }
  const s = percentile(stewardTimes, 50);
  const b = percentile(bareTimes, 50);
  console.log(
    `\nworkflow over ${rows.toLocaleString()} rows, ${steps.length} steps, ${outputs.length} outputs (parquet + csv), threads=${threads}, memory_limit=${memoryLimit}`,
  );
  console.log(`machine: ${machine()}`);
  console.log(
    `median of ${rounds}: steward ${(s / 1000).toFixed(2)} s | bare duckdb ${(b / 1000).toFixed(2)} s | ratio ${(s / b).toFixed(3)}× (goal ≤ 1.15×)`,
  );
} finally {
  await steward.stop();
  rmSync(dataDir, { recursive: true, force: true });
}
